"""The Postgres trace store: what production uses (``PULLMODE_TRACE_STORE_URL=postgresql://...``).

Same tables, keys and answers as the SQLite store, with Postgres types. ``raw_payload`` is ``text``, not
``jsonb``, so it stays byte for byte; rows go in in key order, so parallel writers never deadlock.
Design (types, NUL, batches, parallel writers, ids): docs/design/trace-store.md#postgres
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..errors import PullmodeError
from ..events.model import TIMESTAMP_FORMAT, TIMESTAMP_WIDTH, NormalizedEvent
from ..events.rejects import Reject
from .base import EVENT_COLUMNS, HOUR_FORMAT, TraceStore, WriteResult, invalid_row, select_list, spell_format

# Advisory lock keys (two int4s: a namespace and a purpose), scoped to the database.
_LOCK_NAMESPACE = 0x70756C6C  # "pull"
_SCHEMA_LOCK = 1
_IDS_IN_FLIGHT_LOCK = 2  # shared: a writer between taking ids and committing; exclusive: tail

MIGRATIONS: tuple[str, ...] = (
    # 1: the tables, the indexes users query by (source and time, actor) and the one the asset
    # checks use (run_id), and the JSON test the normalized_schema check needs (text, see above).
    """
    CREATE TABLE IF NOT EXISTS pulled_events (
        id bigserial PRIMARY KEY,
        source_name text NOT NULL,
        source_event_id text NOT NULL,
        event_timestamp timestamptz NOT NULL,
        actor text,
        action text,
        target text,
        cost_usd numeric NOT NULL DEFAULT 0,
        tokens_input bigint NOT NULL DEFAULT 0,
        tokens_output bigint NOT NULL DEFAULT 0,
        raw_payload text NOT NULL,
        organization_id text,
        pulled_at timestamptz NOT NULL DEFAULT now(),
        run_id text,
        CONSTRAINT pulled_events_source_event_key UNIQUE (source_name, source_event_id)
    );
    CREATE INDEX IF NOT EXISTS pulled_events_source_time ON pulled_events (source_name, event_timestamp);
    CREATE INDEX IF NOT EXISTS pulled_events_actor ON pulled_events (actor);
    CREATE INDEX IF NOT EXISTS pulled_events_run ON pulled_events (run_id);
    CREATE TABLE IF NOT EXISTS pulled_events_rejected (
        id bigserial PRIMARY KEY,
        source_name text NOT NULL,
        reason text NOT NULL,
        location text,
        raw_record text NOT NULL,
        record_hash text NOT NULL,
        pulled_at timestamptz NOT NULL DEFAULT now(),
        run_id text,
        CONSTRAINT pulled_events_rejected_record_key UNIQUE (source_name, record_hash)
    );
    CREATE OR REPLACE FUNCTION pullmode_json_valid(doc text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
    BEGIN
        PERFORM doc::json;
        RETURN true;
    EXCEPTION WHEN others THEN
        RETURN false;
    END
    $$;
    """,
)
"""Schema versions, applied in order; ``pullmode_schema`` records how many a database has."""

# Session-local staging tables with the real columns' types (so COPY parses each value and names
# the line and column of a bad one), emptied at every commit. Only the columns that vary per row are
# copied; pulled_at and run_id are the same for the whole batch and are added by the INSERT. ``ord``
# keeps the batch order: rows get ids in that order, and the first of two equal keys in one batch
# wins, as with SQLite's INSERT OR IGNORE (docs/design/trace-store.md says why rows go in in key order).
_EVENT_STAGED = EVENT_COLUMNS[: EVENT_COLUMNS.index("pulled_at")]
_REJECT_STAGED = ("source_name", "reason", "location", "raw_record", "record_hash")


def _staging_sql(table: str, columns: Sequence[str]) -> str:
    return (
        f"CREATE TEMP TABLE {table}_staging ON COMMIT DELETE ROWS AS "
        f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA; "
        f"ALTER TABLE {table}_staging ADD COLUMN ord bigint GENERATED ALWAYS AS IDENTITY;"
    )


def _insert_sql(table: str, columns: Sequence[str], key: str, conflict: str) -> str:
    cols = ", ".join(columns)
    # nextval runs after the inner sort (batch order); the outer sort is the order rows are inserted.
    return (
        f"INSERT INTO {table} (id, {cols}, pulled_at, run_id) SELECT id, {cols}, now(), %(run_id)s "
        f"FROM (SELECT nextval('{table}_id_seq') AS id, * FROM {table}_staging ORDER BY ord) batch "
        f"ORDER BY {key}, ord ON CONFLICT ON CONSTRAINT {conflict} DO NOTHING"
    )


_STAGING = _staging_sql("pulled_events", _EVENT_STAGED) + _staging_sql("pulled_events_rejected", _REJECT_STAGED)
_INSERT_EVENTS = _insert_sql(
    "pulled_events", _EVENT_STAGED, "source_name, source_event_id", "pulled_events_source_event_key"
)
_INSERT_REJECTS = _insert_sql(
    "pulled_events_rejected", _REJECT_STAGED, "source_name, record_hash", "pulled_events_rejected_record_key"
)

# The strftime directives of TIMESTAMP_FORMAT in to_char's patterns (US: microseconds, six digits).
_TO_CHAR_DIRECTIVES = {"%Y": "YYYY", "%m": "MM", "%d": "DD", "%H": "HH24", "%M": "MI", "%S": "SS", "%f": "US"}


def _to_char_literal(text: str) -> str:
    """``text`` written as itself: to_char reads letters as patterns unless quoted."""
    return f'"{text}"' if any(c.isalpha() for c in text) else text


def _utc_text(column: str, fmt: str = TIMESTAMP_FORMAT) -> str:
    """``column`` (timestamptz) as the engine's fixed-width UTC text (``2026-03-01T10:00:00.000000Z``),
    whatever the session time zone."""
    return f"to_char({column} AT TIME ZONE 'UTC', '{spell_format(_TO_CHAR_DIRECTIVES, _to_char_literal, fmt)}')"


def _text(value: str | None) -> str | None:
    """Postgres text cannot hold NUL; keep the row (U+FFFD marks where it was) rather than fail the batch."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def _timestamp(value: str) -> str:
    """The engine writes fixed width and rejects years before 1000, but an event built elsewhere may
    carry an unpadded year ("5-01-01T..."), which Postgres would read as 2001-05-01; padding keeps the
    instant. (The integrity check still reports such rows.)"""
    return value if len(value) >= TIMESTAMP_WIDTH else value.zfill(TIMESTAMP_WIDTH)


def _event_rows(events: Iterable[NormalizedEvent]) -> Iterable[tuple[Any, ...]]:
    for e in events:
        yield (
            e.source_name,
            _text(e.source_event_id),
            _timestamp(e.event_timestamp),
            _text(e.actor),
            _text(e.action),
            _text(e.target),
            e.cost_usd,
            e.tokens_input,
            e.tokens_output,
            _text(e.raw_payload),
            _text(e.organization_id),
        )


MISREAD_URL = (
    "PULLMODE_TRACE_STORE_URL: the user name or password holds an unencoded '@' or '/', so part of it "
    "would be read as the host, port or database; percent-encode them ('@' as %40, '/' as %2F)"
)


def misread(info: dict[str, Any]) -> bool:
    """Whether libpq read part of the user info as something else. It ends the user info at the first
    '@' and the host at the first '/', so the rest of a password holding either becomes the host,
    port or database name (and every message naming them quotes it). The user info's own '@' then
    lands there too, or the port is not a number: that is how it shows. The spill never reaches the
    user name, which may hold a percent-encoded '@' (``user%40server``)."""
    ports = [p for p in str(info.get("port") or "").split(",") if p]
    return any("@" in str(v) for k, v in info.items() if k not in ("user", "password")) or not all(
        p.isdigit() for p in ports
    )


def check_url(url: str) -> None:
    """Refuse, before connecting, a URL libpq would misread: its errors would quote the misread host."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return  # the connect attempt reports it, without the URL
    if misread(info):
        raise PullmodeError(MISREAD_URL)


def describe_url(url: str) -> str:
    """``user@host:port/db``, never the password nor a part of it, for error messages."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable URL)"
    if misread(info):
        return "(a URL with an unencoded '@' or '/' in its user name or password)"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"{user}{info.get('host') or 'localhost'}{port}/{info.get('dbname') or ''}"


class PostgresTraceStore(TraceStore):
    def __init__(self, url: str):
        check_url(url)
        try:
            # Autocommit: every transaction is explicit, so a batch is all or nothing and the
            # connection never idles inside an open transaction between batches.
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="pullmode")
        except psycopg.OperationalError as exc:
            reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
            raise PullmodeError(f"trace store: cannot connect to Postgres at {describe_url(url)}: {reason}") from None
        except psycopg.Error:
            # A parse error may quote the URL, password included: say only what is wrong.
            raise PullmodeError("PULLMODE_TRACE_STORE_URL: not a valid postgresql:// URL") from None
        # A writer that stalls mid-transaction (a hung client) must not keep tail readers waiting forever.
        self._conn.execute("SET idle_in_transaction_session_timeout = '5min'")
        # A checkpoint is reported once its batch's COMMIT returned: that commit must be on disk. A
        # server, database or role set to synchronous_commit=off acknowledges before the WAL is
        # flushed, so a crash could lose batches a checkpoint counts. Any other setting (local, on,
        # remote_write, remote_apply) flushes locally first and is kept as the deployment chose it.
        if self._conn.execute("SHOW synchronous_commit").fetchone() == ("off",):
            self._conn.execute("SET synchronous_commit = on")
        self._migrate()
        self._conn.execute(_STAGING)

    def _migrate(self) -> None:
        """Create or upgrade the schema; safe when several processes open a new database at once."""
        conn = self._conn
        if self._schema_version() >= len(MIGRATIONS):
            return  # the common case: no lock, no DDL
        with conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog; take turns.
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, _SCHEMA_LOCK])
            conn.execute("CREATE TABLE IF NOT EXISTS pullmode_schema (version integer NOT NULL)")
            version = self._schema_version()
            for sql in MIGRATIONS[version:]:
                conn.execute(sql)
            # One row: the number of migrations applied.
            conn.execute("DELETE FROM pullmode_schema")
            conn.execute("INSERT INTO pullmode_schema (version) VALUES (%s)", [len(MIGRATIONS)])

    def _schema_version(self) -> int:
        found = self._conn.execute("SELECT to_regclass('pullmode_schema')").fetchone()  # always one row
        if found is None or found[0] is None:
            return 0
        row = self._conn.execute("SELECT max(version) FROM pullmode_schema").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _batch(
        self, staging: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]], insert: str, **params: Any
    ) -> int:
        conn = self._conn
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY {staging} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", [_LOCK_NAMESPACE, _IDS_IN_FLIGHT_LOCK])
            cur.execute(insert, params)
            return cur.rowcount

    def write_events(self, events: Sequence[NormalizedEvent], *, run_id: str | None) -> WriteResult:
        if not events:
            return WriteResult(0, 0)
        written = self._batch(
            "pulled_events_staging", _EVENT_STAGED, _event_rows(events), _INSERT_EVENTS, run_id=run_id
        )
        return WriteResult(written=written, duplicates=len(events) - written)

    def _insert_rejects(self, rejects: Sequence[Reject], run_id: str | None) -> int:
        rows = (
            (r.source_name, _text(r.reason), _text(r.location), _text(r.raw_record), r.record_hash) for r in rejects
        )
        return self._batch("pulled_events_rejected_staging", _REJECT_STAGED, rows, _INSERT_REJECTS, run_id=run_id)

    def _delete_ids(self, table: str, ids: Sequence[int]) -> int:
        # Row locks only: a pull inserting meanwhile is not blocked, whatever it writes.
        with self._conn.transaction():
            return self._conn.execute(f"DELETE FROM {table} WHERE id = ANY(%s)", [list(ids)]).rowcount

    @contextmanager
    def _ids_settled(self) -> Iterator[None]:
        conn = self._conn
        with conn.transaction():
            # No batch in flight: every id below the greatest one read is committed (or never will be).
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, _IDS_IN_FLIGHT_LOCK])
            yield

    PARAM = "%s"
    # The column types already guarantee a timestamp (its range is a portable check); JSON is text
    # here (docs/design/trace-store.md), checked by the function the first migration creates.
    INVALID_ROW = invalid_row({"json": "NOT pullmode_json_valid({column})"})
    HOUR_TEXT = _utc_text("event_timestamp", HOUR_FORMAT)

    # What tail returns is what the SQLite store returns: timestamps as the engine's text, cost as a float.
    READ_COLUMNS = select_list({"timestamp": _utc_text, "float": lambda column: f"{column}::float8"})

    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, list(args)).fetchall()

    def _row_batches(self, sql: str, args: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        # A server-side cursor: the server keeps the result and sends ``size`` rows per fetch.
        conn = self._conn
        with conn.transaction(), conn.cursor(name="pullmode_read") as cursor:
            cursor.itersize = size
            cursor.execute(sql, list(args))
            while rows := cursor.fetchmany(size):
                yield rows

    def _has_unique_key(self) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM pg_constraint WHERE conrelid = 'pulled_events'::regclass AND contype = 'u' "
            "AND conname = 'pulled_events_source_event_key'"
        ).fetchone()
        return row is not None

    def close(self) -> None:
        self._conn.close()
