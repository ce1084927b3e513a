"""pullmode_dagster: pull-mode connectors for AI-platform audit and usage events, as Dagster assets.

The engine (:mod:`pullmode_dagster.engine`) never imports Dagster; :mod:`pullmode_dagster.defs` is thin wiring.
Exported here: the custom-puller interface (:class:`Puller`, :class:`Page`, :class:`Position`, :class:`CursorState`,
:class:`Window`, :class:`ProbeAnswer`), :func:`build_definitions` and the :class:`PullmodeTranslator` that shapes
its source assets. Design: docs/design/README.md#the-package
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .engine.adapters.base import Page, Position, ProbeAnswer, Puller, Window
from .engine.cursor import CursorState

if TYPE_CHECKING:
    from .definitions import build_definitions
    from .defs.translator import PullmodeTranslator


def __getattr__(name: str) -> Any:
    # Dagster is imported only when the Definitions are asked for: a custom puller imports this package too.
    if name == "build_definitions":
        from .definitions import build_definitions

        return build_definitions
    if name == "PullmodeTranslator":
        from .defs.translator import PullmodeTranslator

        return PullmodeTranslator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CursorState",
    "Page",
    "Position",
    "ProbeAnswer",
    "Puller",
    "PullmodeTranslator",
    "Window",
    "__version__",
    "build_definitions",
]
