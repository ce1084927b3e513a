"""pullmode_dagster: pull-mode connectors for AI-platform audit and usage events, as Dagster assets.

The pull engine lives in :mod:`pullmode_dagster.engine` and never imports Dagster; the Dagster layer
(:mod:`pullmode_dagster.defs`, :mod:`pullmode_dagster.definitions`) is thin wiring over it.
"""

__version__ = "0.1.0"
