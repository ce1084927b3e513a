"""`openai_compliance`: see its README section (being built)."""
