"""`copilot_studio`: see its README section (being built)."""
