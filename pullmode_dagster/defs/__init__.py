"""The Dagster layer: thin wiring of the pull engine into assets, sensors, checks and resources."""
