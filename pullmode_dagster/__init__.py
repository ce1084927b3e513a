"""pullmode_dagster: pull-mode connectors for AI-platform audit and usage events, as Dagster assets.

The engine (:mod:`pullmode_dagster.engine`) never imports Dagster; :mod:`pullmode_dagster.defs` is thin wiring.
Exported here: the custom-puller interface (:class:`Puller`, :class:`Page`, :class:`Position`, :class:`CursorState`,
:class:`Window`, :class:`ProbeAnswer`) and the auth strategies a puller's session takes (:func:`bearer`,
:class:`HeaderAuth`, :class:`ClientCredentials`), :class:`SourceConfig` (what a translator is handed),
:func:`build_definitions`, the :class:`PullmodeTranslator` that shapes its source assets, and
:class:`PullmodeSourcesComponent` (the same as a Dagster Component, for ``dg`` projects).
Design: docs/design/README.md#the-package
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .engine.adapters.base import Page, Position, ProbeAnswer, Puller, Window
from .engine.cursor import CursorState
from .engine.declare.models import SourceConfig
from .engine.fetch.auth import ClientCredentials, HeaderAuth, bearer
from .engine.version import __version__

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
    "ClientCredentials",
    "CursorState",
    "HeaderAuth",
    "Page",
    "Position",
    "ProbeAnswer",
    "Puller",
    "PullmodeSourcesComponent",
    "PullmodeTranslator",
    "SourceConfig",
    "Window",
    "__version__",
    "bearer",
    "build_definitions",
]
