"""The embedded SQLite trace store: the default for laptops, the demo and tests.

WAL mode lets readers (``pullmode tail``, Dagster checks) run while a pull writes; a busy timeout lets
two writers (a backfill and a poll) take turns instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..events import NormalizedEvent, Reject, format_timestamp
from .base import EVENT_COLUMNS, TraceStore, WriteResult

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
CREATE INDEX IF NOT EXISTS pulled_events_actor ON pulled_events (actor);
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


_TIMESTAMP_GLOB = (
    "[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z"
)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SqliteTraceStore(TraceStore):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so a batch is all or nothing.
        self._conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=60000")
        self._setup_with_retries()

    def _setup_with_retries(self) -> None:
        """WAL mode and the schema. Switching a brand-new file to WAL takes an exclusive lock that the
        busy handler does not wait for, so several runs opening a new store at once take turns."""
        for attempt in range(50):
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.02 * (attempt + 1))

    def _batch(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        conn = self._conn
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return conn.total_changes - before

    def write_events(self, events: Sequence[NormalizedEvent], *, run_id: str | None) -> WriteResult:
        if not events:
            return WriteResult(0, 0)
        pulled_at = now_iso()
        rows = [
            (
                e.source_name,
                e.source_event_id,
                e.event_timestamp,
                e.actor,
                e.action,
                e.target,
                e.cost_usd,
                e.tokens_input,
                e.tokens_output,
                e.raw_payload,
                e.organization_id,
                pulled_at,
                run_id,
            )
            for e in events
        ]
        written = self._batch(_INSERT_EVENT, rows)
        return WriteResult(written=written, duplicates=len(rows) - written)

    def write_rejects(self, rejects: Sequence[Reject], *, run_id: str | None) -> int:
        if not rejects:
            return 0
        pulled_at = now_iso()
        rows = [(r.source_name, r.reason, r.location, r.raw_record, r.record_hash, pulled_at, run_id) for r in rejects]
        return self._batch(_INSERT_REJECT, rows)

    def tail(self, *, source: str | None = None, limit: int = 20, after_id: int = 0) -> list[dict[str, Any]]:
        where, args = "id > ?", [after_id]
        if source:
            where += " AND source_name = ?"
            args.append(source)
        cur = self._conn.execute(
            f"SELECT id, {', '.join(EVENT_COLUMNS)} FROM pulled_events WHERE {where} ORDER BY id DESC LIMIT ?",
            [*args, limit],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in reversed(cur.fetchall())]

    def count(self, *, source: str | None = None, rejected: bool = False) -> int:
        table = "pulled_events_rejected" if rejected else "pulled_events"
        if source:
            sql, args = f"SELECT count(*) FROM {table} WHERE source_name = ?", [source]
        else:
            sql, args = f"SELECT count(*) FROM {table}", []
        return int(self._conn.execute(sql, args).fetchone()[0])

    PARAM = "?"
    INVALID_ROW = (
        f"event_timestamp NOT GLOB '{_TIMESTAMP_GLOB}' OR cost_usd < 0 OR tokens_input < 0 "
        "OR tokens_output < 0 OR json_valid(raw_payload) = 0 OR source_event_id = ''"
    )

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

    def _time(self, value: datetime) -> Any:
        return format_timestamp(value)  # fixed-width text: text order is time order

    def hour_counts(self, *, source: str, run_id: str) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT substr(event_timestamp, 1, 13), count(*) FROM pulled_events "
            "WHERE source_name = ? AND run_id = ? GROUP BY 1",
            [source, run_id],
        )
        return {hour: int(n) for hour, n in rows}

    def close(self) -> None:
        self._conn.close()
