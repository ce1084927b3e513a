"""The pull engine: plain Python that turns a declared source into normalized, deduplicated events.

Nothing in this package imports Dagster; the Dagster layer wires it into assets and sensors.
"""
