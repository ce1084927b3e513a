"""The adapter registry: what a source file's ``adapter`` names.

An adapter declares its config model, its puller, the kind shown in Dagster and the Dagster
resources its puller needs, and registers itself at the bottom of its own module. Adding an adapter
touches its module and one import in ``adapters/__init__.py``; nothing else keeps a list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from ..cursor import CursorFormatError, CursorState
from ..declare.models import SourceConfig
from .base import Position, Puller, position_problems


@dataclass(frozen=True)
class Adapter:
    name: str
    config_model: type[SourceConfig]
    puller: type[Puller]
    kind: str
    """The kind tag Dagster shows on the source's asset (``http``, ``s3``, a vendor's name)."""
    resources: frozenset[str] = field(default_factory=frozenset)
    """Dagster resources the puller needs beyond the common ones (``s3_polling``: ``s3``)."""
    reads_files: bool = False
    """Whether its pulls read files (S3 objects, log files), so a count of files means something in
    a pull's metadata (an HTTP feed's would always be 0)."""


ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    if adapter.name in ADAPTERS and ADAPTERS[adapter.name] != adapter:
        raise ValueError(f"adapter {adapter.name!r} is registered twice")
    ADAPTERS[adapter.name] = adapter
    return adapter


def check_position(source: SourceConfig, state: CursorState) -> None:
    """Refuse a cursor set by hand whose position ``source``'s adapter would refuse when the pull
    starts (``Puller.position``), with the same words. A custom puller's own model is checked by its
    pull: its module is user code, imported only where pulls run."""
    model = ADAPTERS[source.adapter].puller.position_model
    if model is Position:
        return
    try:
        model.model_validate(dict(state.position))
    except ValidationError as exc:
        raise CursorFormatError(f"the cursor does not fit {source.adapter}: {position_problems(exc)}") from None
