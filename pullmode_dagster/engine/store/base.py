"""The trace store interface: small on purpose, so each backend stays easy to get right.

Writes are batches; inserting an existing (source_name, source_event_id) is skipped and counted as a
duplicate, so a re-pull never duplicates a row and dedup needs no state that grows per event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..events import MAPPED_FIELDS, NormalizedEvent, Reject

EVENT_COLUMNS = ("source_name", *MAPPED_FIELDS, "raw_payload", "organization_id", "pulled_at", "run_id")
"""Columns of ``pulled_events`` (besides the store's own ``id``), in insert order."""


@dataclass(frozen=True)
class WriteResult:
    written: int
    duplicates: int


class TraceStore(ABC):
    """Where pulled events land. Implementations: SQLite (embedded default), Postgres."""

    url_scheme: str

    @abstractmethod
    def write_events(self, events: Sequence[NormalizedEvent], *, run_id: str | None) -> WriteResult:
        """Insert a batch atomically; existing keys are skipped and counted as duplicates."""

    @abstractmethod
    def write_rejects(self, rejects: Sequence[Reject], *, run_id: str | None) -> int:
        """Keep records that could not be normalized (a re-pulled reject is stored once)."""

    @abstractmethod
    def tail(self, *, source: str | None = None, limit: int = 20, after_id: int = 0) -> list[dict[str, Any]]:
        """The newest rows (``id`` > ``after_id``), oldest first, each with its store ``id``."""

    @abstractmethod
    def count(self, *, source: str | None = None, rejected: bool = False) -> int:
        """How many events (or rejects) the store holds."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
