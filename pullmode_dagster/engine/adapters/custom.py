"""`custom`: see its README section (being built)."""
