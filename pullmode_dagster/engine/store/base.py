"""The trace store interface: small on purpose, so each backend stays easy to get right.

Writes are batches; inserting an existing (source_name, source_event_id) is skipped and counted as a
duplicate. Design: docs/design/trace-store.md#the-interface
"""

from __future__ import annotations

import heapq
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..events.model import MAX_YEAR, MIN_YEAR, TIMESTAMP_FORMAT, NormalizedEvent
from ..events.rejects import Reject
from ..events.rules import FIELD_CHECKS, Check, format_timestamp
from .retention import ActorMatch
from .schema import EVENT_COLUMNS, EVENT_SCHEMA, READ_BATCH_ROWS, Kind

if TYPE_CHECKING:
    import pyarrow as pa

DELETE_BATCH_ROWS = 5_000
"""Rows one prune or erase transaction deletes: a pull writing to SQLite meanwhile (one writer at a
time) waits for one such transaction at most, a few tens of milliseconds."""

REJECT_SCAN_ROWS = 500
"""Candidate rejected records ``erase`` reads at a time: what it holds in memory is this many raw
records."""

HOUR_FORMAT = TIMESTAMP_FORMAT[: TIMESTAMP_FORMAT.index("%H") + 2]
"""A UTC hour as :meth:`TraceStore.hour_counts` names it (``2026-03-01T10``): a prefix of the
timestamp's text, and the key of the Dagster hourly partition it falls in."""

_FORMAT_PARTS = re.compile(r"%.|[^%]+")


def spell_format(directives: Mapping[str, str], literal: Callable[[str], str], fmt: str = TIMESTAMP_FORMAT) -> str:
    """``fmt`` (a strftime format) in a database's pattern language: ``directives`` spells each ``%x``,
    ``literal`` each run of other text. So a store derives its patterns from the engine's format; a
    directive it cannot spell raises KeyError when the store module loads, never a wrong pattern."""
    return "".join(directives[part] if part[0] == "%" else literal(part) for part in _FORMAT_PARTS.findall(fmt))


def select_list(expressions: Mapping[Kind, Callable[[str], str]]) -> str:
    """:data:`EVENT_COLUMNS` as a select list; a column of a kind in ``expressions`` is read through
    its expression (so every store returns the same Python values) and keeps its name."""
    return ", ".join(
        f"{expressions[c.kind](c.name)} AS {c.name}" if c.kind in expressions else c.name for c in EVENT_SCHEMA
    )


# The checks that read the same in every dialect. A timestamp's range compares as text (SQLite's
# fixed-width text) and as an instant (Postgres' timestamptz) alike; its shape is the dialect's.
_PORTABLE_CHECKS: dict[Check, str] = {
    "timestamp": "{column} < '{earliest}' OR {column} > '{latest}'",
    "non_negative": "{column} < 0",
    "non_empty": "{column} = ''",
}
_BOUNDS = {
    "earliest": format_timestamp(datetime(MIN_YEAR, 1, 1, tzinfo=UTC)),
    "latest": format_timestamp(datetime(MAX_YEAR, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
}


def invalid_row(dialect: Mapping[Check, str]) -> str:
    """The predicate for a row outside :data:`..events.rules.FIELD_CHECKS` (the normalized shape): each
    field's check in portable SQL and, where the database has more to say, as ``dialect`` spells it
    (``{column}`` stands for the field). A check no one spells fails the store's import."""
    clauses: list[str] = []
    for column, check in FIELD_CHECKS.items():
        spelled = [s for s in (_PORTABLE_CHECKS.get(check), dialect.get(check)) if s]
        if not spelled:
            raise KeyError(f"no SQL for the {check!r} check of {column}")
        clauses += (s.format(column=column, **_BOUNDS) for s in spelled)
    return " OR ".join(clauses)


Where = tuple[str, list[Any]]
"""A WHERE clause and the values of its placeholders."""

_TAIL_NAMES = ("id", *EVENT_COLUMNS)
_TIMESTAMP_AT = _TAIL_NAMES.index("event_timestamp")


@dataclass(frozen=True)
class WriteResult:
    written: int
    duplicates: int


@dataclass(frozen=True)
class Deleted:
    """What :meth:`TraceStore.prune_source` or :meth:`TraceStore.erase_actor` deleted of one source
    (or would delete: a dry run)."""

    events: int
    rejects: int
    at_newest: int = 0
    """Erase: how many of the events are at the source's newest ``event_timestamp`` (see
    docs/retention-and-erasure.md: a source resuming inclusively from there reads them again)."""


@dataclass(frozen=True)
class Newest:
    """What :meth:`TraceStore.newest` read."""

    rows: list[dict[str, Any]]
    """The newest events by ``event_timestamp`` (ties: in the order stored), oldest first, each with
    its store ``id``."""
    last_id: int
    """The greatest id stored when they were read (0: none yet)."""


@dataclass(frozen=True)
class Integrity:
    """``rows``: rows the run wrote; ``duplicate_keys``: their source_event_ids stored more than once
    (only possible in a table created without the unique key); ``invalid_rows``: rows outside the
    normalized shape (:data:`..events.rules.FIELD_CHECKS`: empty id, timestamp not fixed-width UTC in years
    1000-9999, negative cost or tokens, raw_payload not JSON)."""

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

    def write_rejects(self, rejects: Sequence[Reject], *, run_id: str | None) -> int:
        """Keep records that could not be normalized (a re-pulled reject is stored once); returns
        how many were new."""
        return self._insert_rejects(rejects, run_id) if rejects else 0

    @abstractmethod
    def _insert_rejects(self, rejects: Sequence[Reject], run_id: str | None) -> int:
        """:meth:`write_rejects` of a batch that holds at least one reject, all or nothing."""

    def tail(self, *, source: str | None = None, limit: int = 20, after_id: int | None = None) -> list[dict[str, Any]]:
        """Rows in the order they were stored, each with its store ``id``: the last ``limit`` stored,
        or with ``after_id`` the first ``limit`` stored after it (so a reader that resumes after the
        greatest id it got sees every row once, however many landed meanwhile)."""
        p = self.PARAM
        where, args = f"id > {p}", [after_id or 0]
        if source:
            where, args = f"{where} AND source_name = {p}", [*args, source]
        order = "DESC" if after_id is None else "ASC"
        sql = f"SELECT id, {self.READ_COLUMNS} FROM pulled_events WHERE {where} ORDER BY id {order} LIMIT {p}"
        with self._ids_settled():
            rows = self._rows(sql, [*args, limit])
        return [dict(zip(_TAIL_NAMES, row, strict=True)) for row in (reversed(rows) if after_id is None else rows)]

    def newest(self, *, source: str | None = None, limit: int = 20) -> Newest:
        """The ``limit`` newest events by ``event_timestamp`` (of ``source``, else of every source),
        oldest first, and the greatest id stored when they were read: :meth:`tail` after it gives
        what lands next. One range of the (source_name, event_timestamp) index per source, the
        newest end first, so it costs ``limit`` rows a source, not a scan of the table."""
        with self._ids_settled():
            last_id = int(self._rows("SELECT coalesce(max(id), 0) FROM pulled_events", [])[0][0])
        p = self.PARAM
        sql = (
            f"SELECT id, {self.READ_COLUMNS} FROM pulled_events WHERE source_name = {p} AND id <= {p} "
            f"ORDER BY pulled_events.event_timestamp DESC, id DESC LIMIT {p}"
        )
        candidates: list[tuple[Any, ...]] = []
        for name in [source] if source else self.source_names():
            candidates += self._rows(sql, [name, last_id, limit])
        # Timestamps read back as the engine's fixed-width UTC text on every store: they sort as text.
        rows = heapq.nlargest(limit, candidates, key=lambda row: (row[_TIMESTAMP_AT], row[0]))
        return Newest([dict(zip(_TAIL_NAMES, row, strict=True)) for row in reversed(rows)], last_id)

    def _ids_settled(self) -> AbstractContextManager[object]:
        """Where :meth:`tail` and :meth:`newest` read the ids: no id below the greatest they see
        may be committed later (a reader resuming after it would skip that row). Nothing to do
        where ids are taken in commit order, as in SQLite, where one writer at a time holds the
        database."""
        return nullcontext()

    def count(
        self,
        *,
        source: str | None = None,
        rejected: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> int:
        """How many events (or rejects) the store holds; of ``source``, and of its events those dated
        in ``[start, end)`` (a partition's row count: one range of the (source_name, event_timestamp)
        index, so it costs the partition's rows, not the source's)."""
        table = "pulled_events_rejected" if rejected else "pulled_events"
        if (start is not None or end is not None) and (rejected or not source):
            raise ValueError("start and end bound the events of one source")
        where, args = ("", []) if not source else self._where(source, None, start, end)
        where = f" WHERE {where}" if where else ""
        return int(self._rows(f"SELECT count(*) FROM {table}{where}", args)[0][0])

    def holds(self, source: str) -> bool:
        """Whether any event of ``source`` is stored."""
        return bool(self._rows(f"SELECT 1 FROM pulled_events WHERE source_name = {self.PARAM} LIMIT 1", [source]))

    def known_ids(self, source: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (``source_event_id``) ``source`` already has stored: what a probe asks
        to tell news from an event an inclusive filter returns again. One query per 500 ids (a
        probe's page is one query), on the unique key's index."""
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ", ".join([self.PARAM] * len(chunk))
            where = f"source_name = {self.PARAM} AND source_event_id IN ({marks})"
            sql = f"SELECT source_event_id FROM pulled_events WHERE {where}"
            found.update(r[0] for r in self._rows(sql, [source, *chunk]))
        return found

    def source_names(self, *, rejected: bool = False) -> list[str]:
        """Every source with stored events (or rejects), sorted: one index lookup per source (the
        next name after the last), not a scan of every row as ``SELECT DISTINCT`` would be."""
        table = "pulled_events_rejected" if rejected else "pulled_events"
        first = f"SELECT source_name FROM {table} ORDER BY source_name LIMIT 1"
        after = f"SELECT source_name FROM {table} WHERE source_name > names.name ORDER BY source_name LIMIT 1"
        sql = (
            f"WITH RECURSIVE names(name) AS (SELECT ({first}) UNION ALL "
            f"SELECT ({after}) FROM names WHERE names.name IS NOT NULL) "
            "SELECT name FROM names WHERE name IS NOT NULL"
        )
        return [r[0] for r in self._rows(sql, [])]

    PARAM: ClassVar[str]
    """The driver's placeholder (``?``, ``%s``)."""
    INVALID_ROW: ClassVar[str]
    """The dialect's predicate for a row outside the normalized shape: :func:`invalid_row`."""
    HOUR_TEXT: ClassVar[str]
    """The dialect's expression for the UTC hour of ``event_timestamp``, as :data:`HOUR_FORMAT` text."""

    READ_COLUMNS: ClassVar[str] = select_list({})
    """The select list that reads :data:`EVENT_COLUMNS` back the way the SQLite store holds them
    (timestamps as the engine's fixed-width UTC text, cost as a float)."""

    @abstractmethod
    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only query."""

    @abstractmethod
    def _row_batches(self, sql: str, args: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        """Run one read-only query, yielding its rows ``size`` at a time (never all at once)."""

    def _where(self, source: str, run_id: str | None, start: datetime | None, end: datetime | None) -> Where:
        """The rows of one source, optionally one run's or those dated in ``[start, end)`` (None: any)."""
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

        where, args = self._where(source, None, start, end)
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
        mine, args = self._where(source, run_id, start, end)
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

    def hour_counts(self, *, source: str, run_id: str) -> dict[str, int]:
        """How many of the rows one run wrote fall in each UTC hour (``2026-03-01T10``): the Dagster
        layer turns them into the partitions that hold data."""
        where, args = self._where(source, run_id, None, None)
        rows = self._rows(f"SELECT {self.HOUR_TEXT}, count(*) FROM pulled_events WHERE {where} GROUP BY 1", args)
        return {hour: int(n) for hour, n in rows}

    def prune_source(
        self, source: str, before: datetime, *, dry_run: bool = False, batch_rows: int = DELETE_BATCH_ROWS
    ) -> Deleted:
        """Delete the events of ``source`` dated before ``before`` (``event_timestamp``), oldest
        first, and its rejected records pulled before it (a reject has no event time); ``dry_run``:
        count them. One short transaction per ``batch_rows`` rows, so pulls writing meanwhile wait
        for one batch at most; the rows of a batch are found by a read outside it, on the
        (source_name, event_timestamp) index."""
        p = self.PARAM
        return Deleted(
            events=self._delete_where("pulled_events", self._where(source, None, None, before), dry_run, batch_rows),
            rejects=self._delete_where(
                "pulled_events_rejected",
                (f"source_name = {p} AND pulled_at < {p}", [source, self._time(before)]),
                dry_run,
                batch_rows,
                key="id",
            ),
        )

    def erase_actor(
        self,
        actor: str,
        *,
        sources: Collection[str] | None = None,
        match: Callable[[str], ActorMatch] | None = None,
        dry_run: bool = False,
        batch_rows: int = DELETE_BATCH_ROWS,
        scan_rows: int = REJECT_SCAN_ROWS,
    ) -> dict[str, Deleted]:
        """Delete every event whose ``actor`` is ``actor`` (exactly) and every rejected record that
        is the actor's (``match(source)`` says so for each source's: a reject has no actor column;
        default :class:`.retention.ActorMatch` without the source's rule), of ``sources`` (default:
        every source); ``dry_run``: count them. Returns what each source lost, only sources that lost
        something."""
        p = self.PARAM
        match = match or (lambda _: ActorMatch(actor))
        rejects = self._erase_rejects(match, sources, dry_run, scan_rows)
        erased: dict[str, Deleted] = {}
        for source in sorted({*self.source_names(), *rejects} if sources is None else sources):
            mine: Where = (f"source_name = {p} AND actor = {p}", [source, actor])
            # Read before deleting: the actor's events at the source's newest instant, which a source
            # resuming with an inclusive time filter reads again at its next pull.
            newest = f"(SELECT max(event_timestamp) FROM pulled_events WHERE source_name = {p})"
            at_newest = self._rows(
                f"SELECT count(*) FROM pulled_events WHERE {mine[0]} AND event_timestamp >= {newest}",
                [*mine[1], source],
            )[0][0]
            events = self._delete_where("pulled_events", mine, dry_run, batch_rows)
            if events or rejects.get(source):
                erased[source] = Deleted(events, rejects.get(source, 0), int(at_newest) if events else 0)
        return erased

    def _erase_rejects(
        self, match: Callable[[str], ActorMatch], sources: Collection[str] | None, dry_run: bool, scan_rows: int
    ) -> dict[str, int]:
        """The rejected records of ``sources`` (None: all) that are the actor's, deleted (or
        counted), by source. The table is read ``scan_rows`` candidates at a time, in id order, and
        each is confirmed in Python. A LIKE on the raw record picks the candidates (a record that
        cannot be the actor's is never sent), except for a source whose actor may be built from
        several fields: all its records are candidates."""
        p = self.PARAM
        named = sorted(sources) if sources is not None else self.source_names(rejected=True)
        if not named:
            return {}
        matches = {name: match(name) for name in named}
        every = [name for name, m in matches.items() if m.patterns is None]
        spelled = next((m.patterns for m in matches.values() if m.patterns is not None), [])
        wanted = [f"raw_record LIKE {p} ESCAPE '\\'" for _ in spelled]
        if every:
            wanted.append(f"source_name IN ({', '.join(p for _ in every)})")
        scope = f" AND source_name IN ({', '.join(p for _ in named)})" if sources is not None else ""
        sql = (
            "SELECT id, source_name, raw_record FROM pulled_events_rejected "
            f"WHERE id > {p}{scope} AND ({' OR '.join(wanted)}) ORDER BY id LIMIT {p}"
        )
        patterns = ["%" + re.sub(r"([\\%_])", r"\\\1", s) + "%" for s in spelled]
        args = [*(named if sources is not None else []), *patterns, *every]
        found: dict[str, int] = {}
        after = 0
        while True:
            rows = self._rows(sql, [after, *args, scan_rows])
            # A source that appeared since the scan began (a pull meanwhile) is matched as any.
            hits = [(i, source) for i, source, raw in rows if (matches.get(source) or match(source))(raw)]
            if hits and not dry_run:
                self._delete_ids("pulled_events_rejected", [i for i, _ in hits])
            for _, source in hits:
                found[source] = found.get(source, 0) + 1
            if len(rows) < scan_rows:
                return found
            after = rows[-1][0]

    def _delete_where(
        self, table: str, where: Where, dry_run: bool, batch_rows: int, *, key: str = "event_timestamp"
    ) -> int:
        """Delete the rows of ``table`` matching ``where`` (count them: ``dry_run``), in order of
        ``key``, ``batch_rows`` per transaction. Each batch's ids are read first, after the last
        batch's ``key`` (so no batch reads again past what earlier ones deleted), then deleted by id."""
        clause, args = where
        if dry_run:
            return int(self._rows(f"SELECT count(*) FROM {table} WHERE {clause}", args)[0][0])
        p = self.PARAM
        deleted, after = 0, None
        while True:
            bounded = (clause, args) if after is None else (f"{clause} AND {key} >= {p}", [*args, after])
            rows = self._rows(
                f"SELECT id, {key} FROM {table} WHERE {bounded[0]} ORDER BY {key} LIMIT {p}", [*bounded[1], batch_rows]
            )
            done = self._delete_ids(table, [row[0] for row in rows]) if rows else 0
            deleted += done
            # A short batch is the last; none deleted means another process took them (never loop).
            if len(rows) < batch_rows or not done:
                return deleted
            after = rows[-1][1]

    def drop_deleted_copies(self) -> str | None:
        """After an erase: drop the copies of deleted rows that the database keeps beside its tables,
        where the store can; one line on what still holds some, else None."""
        return None

    @abstractmethod
    def _delete_ids(self, table: str, ids: Sequence[int]) -> int:
        """Delete these rows of ``table`` in one transaction; returns how many were there."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
