"""The trace store interface: small on purpose, so each backend stays easy to get right.

Writes are batches; inserting an existing (source_name, source_event_id) is skipped and counted as a
duplicate, so a re-pull never duplicates a row and dedup needs no state that grows per event.

Every store accepts every :class:`NormalizedEvent` and :class:`Reject` the engine produces (the
engine guarantees UTF-8-encodable text, fixed-width timestamps in years 1000-9999, finite costs
and token counts that fit a signed 64-bit integer), so one odd record never fails a batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..events import NormalizedEvent, Reject
from .schema import EVENT_COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa

READ_BATCH_ROWS = 50_000
"""Rows per Arrow batch when events are read back: a few tens of MB, whatever the window."""


@dataclass(frozen=True)
class WriteResult:
    written: int
    duplicates: int


@dataclass(frozen=True)
class Integrity:
    """``rows``: rows the run wrote; ``duplicate_keys``: their source_event_ids stored more than once
    (only possible in a table created without the unique key); ``invalid_rows``: rows outside the
    normalized shape (timestamp not fixed-width UTC, negative cost or tokens, raw_payload not JSON)."""

    rows: int
    duplicate_keys: int
    invalid_rows: int
    invalid_examples: tuple[str, ...] = ()
    duplicate_examples: tuple[str, ...] = ()


class TraceStore(ABC):
    """Where pulled events land. Implementations: SQLite (embedded default), Postgres."""

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

    def holds(self, source: str) -> bool:
        """Whether any event of ``source`` is stored."""
        return bool(self._rows(f"SELECT 1 FROM pulled_events WHERE source_name = {self.PARAM} LIMIT 1", [source]))

    def source_names(self) -> list[str]:
        """Every source with stored events, sorted."""
        return [r[0] for r in self._rows("SELECT DISTINCT source_name FROM pulled_events ORDER BY 1", [])]

    PARAM: ClassVar[str]
    """The driver's placeholder (``?``, ``%s``)."""
    INVALID_ROW: ClassVar[str]
    """The dialect's predicate for a row outside the normalized shape."""

    READ_COLUMNS: ClassVar[str] = ", ".join(EVENT_COLUMNS)
    """The select list that reads :data:`EVENT_COLUMNS` back the way the SQLite store holds them
    (timestamps as the engine's fixed-width UTC text, cost as a float)."""

    @abstractmethod
    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only query."""

    @abstractmethod
    def _row_batches(self, sql: str, args: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        """Run one read-only query, yielding its rows ``size`` at a time (never all at once)."""

    def _where(
        self,
        source: str,
        *,
        run_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[str, list[Any]]:
        """The rows of one source, optionally one run's or those dated in ``[start, end)``."""
        p = self.PARAM
        where, args = f"source_name = {p}", [source]
        for clause, value in (
            (f"run_id = {p}", run_id),
            (f"event_timestamp >= {p}", None if start is None else self._time(start)),
            (f"event_timestamp < {p}", None if end is None else self._time(end)),
        ):
            if value is not None:
                where, args = f"{where} AND {clause}", [*args, value]
        return where, args

    def event_batches(
        self,
        *,
        source: str,
        start: datetime | None = None,
        end: datetime | None = None,
        batch_rows: int = READ_BATCH_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        """The stored events of ``source`` dated in ``[start, end)`` (either bound optional), oldest
        first, as Arrow record batches typed by :mod:`.schema`. Memory stays flat in the window's size:
        rows are fetched ``batch_rows`` at a time and each batch is converted column by column."""
        from .arrow import record_batch

        where, args = self._where(source, start=start, end=end)
        sql = f"SELECT {self.READ_COLUMNS} FROM pulled_events WHERE {where} ORDER BY pulled_events.event_timestamp, id"
        for rows in self._row_batches(sql, args, batch_rows):
            yield record_batch(rows, source=source)

    def _time(self, value: datetime) -> Any:
        """A bound for ``event_timestamp`` as the store compares it."""
        return value

    def integrity(
        self,
        *,
        source: str,
        run_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Integrity:
        """What the asset checks look at: keys stored more than once and rows that break the
        normalized shape, among the rows one run wrote (``run_id``: a check costs what the run wrote)
        or those dated in ``[start, end)`` (the checks run alone on a partition), else the source's."""
        p = self.PARAM
        mine, args = self._where(source, run_id=run_id, start=start, end=end)
        rows = self._rows(f"SELECT count(*) FROM pulled_events WHERE {mine}", args)[0][0]
        duplicates, twice = 0, ()
        if not self._has_unique_key():  # with the key, the database itself rules duplicates out
            repeated = (
                f"SELECT source_event_id FROM pulled_events WHERE source_name = {p} AND source_event_id IN "
                f"(SELECT source_event_id FROM pulled_events WHERE {mine}) GROUP BY source_event_id HAVING count(*) > 1"
            )
            duplicates = self._rows(f"SELECT count(*) FROM ({repeated}) d", [source, *args])[0][0]
            twice = tuple(r[0] for r in self._rows(f"{repeated} ORDER BY 1 LIMIT 5", [source, *args]))
        bad = f"FROM pulled_events WHERE {mine} AND ({self.INVALID_ROW})"
        invalid = self._rows(f"SELECT count(*) {bad}", args)[0][0]
        examples = tuple(r[0] for r in self._rows(f"SELECT source_event_id {bad} LIMIT 5", args)) if invalid else ()
        return Integrity(
            rows=rows,
            duplicate_keys=duplicates,
            invalid_rows=invalid,
            invalid_examples=examples,
            duplicate_examples=twice,
        )

    @abstractmethod
    def _has_unique_key(self) -> bool:
        """Whether ``pulled_events`` has its unique key on (source_name, source_event_id): a table
        created without it (an old or hand-made schema) is the only way a key can be stored twice."""

    @abstractmethod
    def hour_counts(self, *, source: str, run_id: str) -> dict[str, int]:
        """How many of the rows one run wrote fall in each UTC hour (``2026-03-01T10``): the Dagster
        layer turns them into the partitions that hold data."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
