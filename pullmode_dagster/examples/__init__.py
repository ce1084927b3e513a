"""Worked examples of custom pullers (README, "Writing a custom puller")."""
