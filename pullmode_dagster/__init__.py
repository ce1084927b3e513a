"""pullmode_dagster: pull-mode connectors for AI-platform audit and usage events, as Dagster assets.

The engine (:mod:`pullmode_dagster.engine`) never imports Dagster; :mod:`pullmode_dagster.defs` is thin wiring.
Exported here: the custom-puller interface (:class:`Puller`, :class:`Page`, :class:`Position`, :class:`CursorState`,
:class:`Window`, :class:`ProbeAnswer`), :func:`build_definitions`, the :class:`PullmodeTranslator` that shapes
its source assets, and :class:`PullmodeSourcesComponent` (the same as a Dagster Component, for ``dg``
projects). Design: docs/design/README.md#the-package
"""

__version__ = "0.1.0"

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .engine.adapters.base import Page, Position, ProbeAnswer, Puller, Window
from .engine.cursor import CursorState

if TYPE_CHECKING:
    from .definitions import build_definitions
    from .defs.component import PullmodeSourcesComponent
    from .defs.translator import PullmodeTranslator


_LAZY = {
    "build_definitions": ".definitions",
    "PullmodeTranslator": ".defs.translator",
    "PullmodeSourcesComponent": ".defs.component",
}
"""Names whose modules import Dagster: imported when asked for (a custom puller imports this package too)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # Dagster finds the component of the `dagster_dg_cli.registry_modules` entry point by `dir()`.
    return sorted({*globals(), *__all__})


__all__ = [
    "CursorState",
    "Page",
    "Position",
    "ProbeAnswer",
    "Puller",
    "PullmodeSourcesComponent",
    "PullmodeTranslator",
    "Window",
    "__version__",
    "build_definitions",
]
