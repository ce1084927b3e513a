"""pullmode_dagster: pull-mode connectors for AI-platform audit and usage events, as Dagster assets.

The pull engine lives in :mod:`pullmode_dagster.engine` and never imports Dagster; the Dagster layer
(:mod:`pullmode_dagster.defs`, :mod:`pullmode_dagster.definitions`) is thin wiring over it.

The puller interface for ``adapter: custom`` (README, "Writing a custom puller") is exported here:
:class:`Puller`, what it yields (:class:`Page`), its cursor part (:class:`Position`), and what it
receives (:class:`CursorState`, :class:`Window`).
"""

__version__ = "0.1.0"

from .engine.adapters.base import Page, Position, Puller, Window
from .engine.cursor import CursorState

__all__ = ["CursorState", "Page", "Position", "Puller", "Window", "__version__"]
