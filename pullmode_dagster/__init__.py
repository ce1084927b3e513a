"""pullmode_dagster: pull-mode connectors for AI-platform audit and usage events, as Dagster assets.

The pull engine lives in :mod:`pullmode_dagster.engine` and never imports Dagster; the Dagster layer
(:mod:`pullmode_dagster.defs`, :mod:`pullmode_dagster.definitions`) is thin wiring over it.

The puller interface for ``adapter: custom`` (README, "Writing a custom puller") is exported here:
:class:`Puller`, what it yields (:class:`Page`), its cursor part (:class:`Position`), and what it
receives (:class:`CursorState`, :class:`Window`).

:func:`build_definitions` returns the code location's ``Definitions``, to merge a project's own
downstream assets into (README, "Downstream assets").
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .engine.adapters.base import Page, Position, Puller, Window
from .engine.cursor import CursorState

if TYPE_CHECKING:
    from .definitions import build_definitions


def __getattr__(name: str) -> Any:
    # Dagster is imported only when the Definitions are asked for: a custom puller imports this package too.
    if name == "build_definitions":
        from .definitions import build_definitions

        return build_definitions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CursorState", "Page", "Position", "Puller", "Window", "__version__", "build_definitions"]
