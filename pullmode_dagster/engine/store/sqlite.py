"""The embedded SQLite trace store: the default for laptops, the demo and tests.

WAL mode lets readers (``pullmode tail``, Dagster checks) run while a pull writes; a busy timeout lets
two writers (a backfill and a poll) take turns instead of failing.

Durability: ``synchronous=FULL``. In WAL mode ``NORMAL`` syncs the WAL only when it is checkpointed
into the database, so a committed batch survives a crash of the process but not a power loss or a
kernel panic, while the pull's checkpoint that counts it may already be in Dagster's storage (another
database, with its own fsync): those events would never be pulled again. ``FULL`` syncs the WAL at
every commit, before ``COMMIT`` returns, and the engine reports a checkpoint only after the write
that holds its events returned (``pull.run_pull``'s flush). Every write of a pull precedes a
checkpoint (each batch is followed by one; rejects are written before the events of their page), so
every commit is made durable: one fsync of the WAL per batch of 2,000 events (100k events written
here took 1.0-1.1x the time of ``NORMAL``). A checkpoint of the WAL into the database needs no more
(it copies synced frames; ``FULL`` and ``NORMAL`` sync it alike).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

from ..events.model import EVENT_FIELDS, EventRows, NormalizedEvent
from ..events.rejects import Reject
from ..events.rules import format_timestamp
from .base import EVENT_COLUMNS, HOUR_FORMAT, TraceStore, WriteResult, invalid_row, spell_format

SCHEMA = """
CREATE TABLE IF NOT EXISTS pulled_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_name TEXT NOT NULL,
    source_event_id TEXT NOT NULL,
    event_timestamp TEXT NOT NULL,
    actor TEXT,
    action TEXT,
    target TEXT,
    cost_usd REAL NOT NULL DEFAULT 0,
    tokens_input INTEGER NOT NULL DEFAULT 0,
    tokens_output INTEGER NOT NULL DEFAULT 0,
    raw_payload TEXT NOT NULL,
    organization_id TEXT,
    pulled_at TEXT NOT NULL,
    run_id TEXT,
    UNIQUE (source_name, source_event_id)
);
CREATE INDEX IF NOT EXISTS pulled_events_source_time ON pulled_events (source_name, event_timestamp);
-- No index on actor here (Postgres has one): its pages are hit at random by every batch, and WAL
-- rewrites each touched page at each commit, so it made writes 10x the data at a million events.
-- An actor query scans the source's rows instead (a million rows: a fraction of a second).
DROP INDEX IF EXISTS pulled_events_actor;
CREATE INDEX IF NOT EXISTS pulled_events_run ON pulled_events (run_id);
CREATE TABLE IF NOT EXISTS pulled_events_rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    location TEXT,
    raw_record TEXT NOT NULL,
    record_hash TEXT NOT NULL,
    pulled_at TEXT NOT NULL,
    run_id TEXT,
    UNIQUE (source_name, record_hash)
);
"""

_INSERT_EVENT = (
    f"INSERT OR IGNORE INTO pulled_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
_INSERT_REJECT = (
    "INSERT OR IGNORE INTO pulled_events_rejected "
    "(source_name, reason, location, raw_record, record_hash, pulled_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


# The shape of the engine's timestamp text, as a GLOB: digits where it has them, in the ranges their
# first digit can take (the range of the whole value is a portable check, see base.invalid_row).
_GLOB_DIRECTIVES = {
    "%Y": "[0-9]" * 4,
    "%m": "[0-1][0-9]",
    "%d": "[0-3][0-9]",
    "%H": "[0-2][0-9]",
    "%M": "[0-5][0-9]",
    "%S": "[0-6][0-9]",
    "%f": "[0-9]" * 6,
}


def _glob_literal(text: str) -> str:
    """``text`` matched as itself: GLOB's wildcards in brackets."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


_TIMESTAMP_GLOB = spell_format(_GLOB_DIRECTIVES, _glob_literal)
_HOUR_WIDTH = len(datetime.max.strftime(HOUR_FORMAT))


DELETE_PAUSE_SHARE = 0.5
DELETE_PAUSE_MAX = 0.1
"""After each delete transaction, prune and erase pause for this share of the time it took (at
most ``DELETE_PAUSE_MAX`` seconds), so a pull writing meanwhile gets the database between them."""

BUSY_TIMEOUT_MS = 60_000
"""How long a writer waits for another (a backfill and a poll take turns)."""
CHECKPOINT_WAIT_MS = 1000

_ROWS_PER_STATEMENT = 100
_event_fields = attrgetter(*EVENT_FIELDS)
assert EVENT_COLUMNS[: len(EVENT_FIELDS)] == EVENT_FIELDS, "an event's fields are the first columns, in order"


@functools.cache
def _many_rows(sql: str, width: int, shared: int, rows: int) -> str:
    """``sql`` (one row's ``INSERT ... VALUES (?, ...)``) for ``rows`` rows of ``width`` values each,
    every row ending with the same ``shared`` values, numbered after all the rows' own."""
    own = range(1, width + 1)
    tail = [f"?{rows * width + k}" for k in range(1, shared + 1)]
    values = ("(" + ", ".join([*(f"?{r * width + k}" for k in own), *tail]) + ")" for r in range(rows))
    return sql[: sql.rindex("(")] + ", ".join(values)


def now_iso() -> str:
    return format_timestamp(datetime.now(UTC))


class SqliteTraceStore(TraceStore):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so a batch is all or nothing.
        self._conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._setup_with_retries()

    def _setup_with_retries(self) -> None:
        """WAL mode and the schema. Switching a brand-new file to WAL takes an exclusive lock that the
        busy handler does not wait for, so several runs opening a new store at once take turns."""
        for attempt in range(50):
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")  # every commit durable: see the module's docstring
                # What prune and erase delete is overwritten in the file, not left in its free pages.
                self._conn.execute("PRAGMA secure_delete=ON")
                self._conn.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.02 * (attempt + 1))

    def _batch(self, sql: str, rows: Sequence[tuple[Any, ...]], shared: tuple[Any, ...] = ()) -> int:
        """Insert ``rows``, each followed by the ``shared`` values (the last columns, the same in every
        row), with ``sql`` (one row's ``INSERT ... VALUES (?, ...)``), all or nothing; returns the rows
        inserted.

        Rows go ``_ROWS_PER_STATEMENT`` at a time in one statement (``VALUES (...), (...)``, the same
        rows in the same order, the shared values bound once): stepping a statement per row, as
        ``executemany`` does, cost as much as the rows' index updates. The rest (fewer rows) go one
        by one, so only two statements are ever prepared."""
        conn = self._conn
        width = len(rows[0]) if rows else 1
        room = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - len(shared)
        per = max(1, min(_ROWS_PER_STATEMENT, room // width))
        whole = len(rows) - len(rows) % per
        before = conn.total_changes
        with self._write():
            if whole:
                many = _many_rows(sql, width, len(shared), per)
                for start in range(0, whole, per):
                    params = list(chain.from_iterable(rows[start : start + per]))
                    params += shared
                    conn.execute(many, params)
            conn.executemany(sql, [row + shared for row in rows[whole:]])
        return conn.total_changes - before

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, all or nothing; taken at once (IMMEDIATE), so it waits for another
        writer at its start (the busy timeout) rather than failing halfway."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _delete_ids(self, table: str, ids: Sequence[int]) -> int:
        started = time.monotonic()
        with self._write():
            deleted = self._conn.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))]
            ).rowcount
        # One writer at a time: leave a pull's batch a window to commit before the next delete takes
        # the database again (a waiting writer's busy handler retries at growing intervals, up to
        # 100 ms apart: without a gap it could miss every turn until the prune ends).
        time.sleep(min(DELETE_PAUSE_MAX, (time.monotonic() - started) * DELETE_PAUSE_SHARE))
        return deleted

    def write_events(self, events: Sequence[NormalizedEvent], *, run_id: str | None) -> WriteResult:
        if not events:
            return WriteResult(0, 0)
        # A pull's batch is rows already, in the event's field order, which is the column order;
        # pulled_at and run_id, the last columns, are the same for the whole batch.
        rows = events.rows if type(events) is EventRows else list(map(_event_fields, events))
        written = self._batch(_INSERT_EVENT, rows, (now_iso(), run_id))
        return WriteResult(written=written, duplicates=len(rows) - written)

    def _insert_rejects(self, rejects: Sequence[Reject], run_id: str | None) -> int:
        pulled_at = now_iso()
        rows = [(r.source_name, r.reason, r.location, r.raw_record, r.record_hash, pulled_at, run_id) for r in rejects]
        return self._batch(_INSERT_REJECT, rows)

    def drop_deleted_copies(self) -> str | None:
        # The WAL holds earlier images of the pages rows were deleted from: copy it into the database
        # and truncate it, unless a reader or writer is at it now (waiting a second at most for them).
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if busy:
            return f"{self.path}-wal still holds copies of deleted pages until the next checkpoint (a pull was busy)"
        return None

    PARAM = "?"
    INVALID_ROW = invalid_row(
        {"timestamp": f"{{column}} NOT GLOB '{_TIMESTAMP_GLOB}'", "json": "json_valid({column}) = 0"}
    )
    HOUR_TEXT = f"substr(event_timestamp, 1, {_HOUR_WIDTH})"  # the text is UTC already

    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, list(args)).fetchall()

    def _row_batches(self, sql: str, args: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        # Its own connection (one snapshot from first batch to last) unless the store is in memory.
        own = str(self.path) != ":memory:"
        conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False) if own else self._conn
        try:
            cursor = conn.execute(sql, list(args))
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            if own:
                conn.close()

    def _has_unique_key(self) -> bool:
        for _, name, unique, _, partial in self._conn.execute("PRAGMA index_list(pulled_events)").fetchall():
            columns = [row[2] for row in self._conn.execute(f"PRAGMA index_info('{name}')").fetchall()]
            if unique and not partial and columns == ["source_name", "source_event_id"]:
                return True
        return False

    def _time(self, value: datetime) -> Any:
        return format_timestamp(value)  # fixed-width text: text order is time order

    def close(self) -> None:
        self._conn.close()
