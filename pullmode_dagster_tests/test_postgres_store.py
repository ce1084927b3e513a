"""What only the Postgres trace store has: its column types and indexes, schema versions and their
concurrent first use, parallel writers and what tail reads meanwhile, the duplicate-key check on a
table without the unique key, connection errors. (Everything both stores do is in
test_trace_store.py, run on both.)"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from pullmode_dagster.engine.errors import PullmodeError
from pullmode_dagster.engine.events.model import TIMESTAMP_FORMAT, NormalizedEvent
from pullmode_dagster.engine.store import WriteResult, describe_store, open_store
from pullmode_dagster.engine.store.locks import source_lock
from pullmode_dagster.engine.store.postgres import MIGRATIONS, PostgresTraceStore, describe_url

from .bounded import join_all
from .helpers import ev, wait_for
from .pg import blocked_by, connect, fresh_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def in_thread(fn: Any, results: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)  # a thread left blocked does not hold the process
    thread.start()
    return thread


def test_both_url_schemes_and_the_environment_select_postgres(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(pg_url.replace("postgresql://", "postgres://", 1)) as s:
        assert isinstance(s, PostgresTraceStore)
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", pg_url)
    with open_store() as s:
        assert isinstance(s, PostgresTraceStore)
        s.write_events([ev(1)], run_id=None)
    with connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM pulled_events").fetchone() == (1,)


def test_columns_have_postgres_types_and_the_queried_indexes_exist(pg_url: str) -> None:
    open_store(pg_url).close()
    with connect(pg_url) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'pulled_events'"
            ).fetchall()
        )
        indexes = dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'pulled_events'"))
    assert types["id"] == "bigint"
    assert types["event_timestamp"] == types["pulled_at"] == "timestamp with time zone"
    assert types["cost_usd"] == "numeric"
    assert types["raw_payload"] == "text"  # the original JSON text, byte for byte (docs/design/trace-store.md)
    assert types["tokens_input"] == types["tokens_output"] == "bigint"
    assert indexes["pulled_events_source_time"].endswith("(source_name, event_timestamp)")
    assert indexes["pulled_events_actor"].endswith("(actor)")
    assert indexes["pulled_events_source_event_key"].startswith("CREATE UNIQUE INDEX")
    assert indexes["pulled_events_source_event_key"].endswith("(source_name, source_event_id)")


def test_money_is_stored_exactly_as_the_engine_wrote_it(pg_url: str) -> None:
    cheap = NormalizedEvent("s", "cheap", "2026-03-01T00:00:00.000000Z", None, None, None, 0.1, 0, 0, "{}")
    with open_store(pg_url) as s:
        s.write_events([cheap, ev(2, cost_usd=0.25)], run_id="r")
    with connect(pg_url) as conn:
        total = conn.execute("SELECT sum(cost_usd)::text FROM pulled_events").fetchone()
    assert total == ("0.35",)  # numeric: no binary-float residue when summing


def test_timestamps_read_back_as_utc_text_whatever_the_session_time_zone(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The to_char patterns derived from TIMESTAMP_FORMAT give the engine's text, in UTC, in a session
    whose time zone (-03:30 here) would move every field of a local rendering."""
    monkeypatch.setenv("PGTZ", "America/St_Johns")
    stamps = ["1000-01-01T00:00:00.000000Z", "2026-03-01T01:59:59.999999Z", "9999-12-31T23:59:59.999999Z"]
    events = [NormalizedEvent("s", f"e{i}", t, None, None, None, 0, 0, 0, "{}") for i, t in enumerate(stamps)]
    with open_store(pg_url) as s:
        assert s._rows("SHOW timezone", []) == [("America/St_Johns",)]
        s.write_events(events, run_id="r")
        rows = s.tail()
        hours = s.hour_counts(source="s", run_id="r")
        batches = list(s.event_batches(source="s"))
    assert [r["event_timestamp"] for r in rows] == stamps
    assert hours == {t[: len("2026-03-01T01")]: 1 for t in stamps}
    assert [d.strftime(TIMESTAMP_FORMAT) for b in batches for d in b.column("event_timestamp").to_pylist()] == stamps
    for row in rows:
        pulled_at = datetime.strptime(row["pulled_at"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        assert abs(datetime.now(UTC) - pulled_at) < timedelta(minutes=5)


def test_the_schema_is_versioned_and_an_older_database_is_migrated(pg_url: str) -> None:
    with open_store(pg_url) as s:
        s.write_events([ev(1)], run_id=None)
    with connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM pullmode_schema").fetchall() == [(len(MIGRATIONS),)]
        # An older database: recorded at version 0 and missing what the migration adds.
        conn.execute("DROP FUNCTION pullmode_json_valid(text)")
        conn.execute("DROP INDEX pulled_events_actor")
        conn.execute("UPDATE pullmode_schema SET version = 0")
    with open_store(pg_url) as s:
        assert s.count() == 1  # the data is kept
        assert s.integrity(source="s", run_id="none").invalid_rows == 0  # the JSON check is back
    with connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM pullmode_schema").fetchall() == [(len(MIGRATIONS),)]
        assert conn.execute("SELECT to_regclass('pulled_events_actor') IS NOT NULL").fetchone() == (True,)


def test_opening_a_new_store_from_several_runs_at_once_does_not_fail(pg_url: str) -> None:
    """Two runs (here four) using a new database at the same moment: one creates the schema, the
    others wait for it. (SQLite's first use is not covered: see the report on PRAGMA journal_mode.)"""
    start = threading.Barrier(4, timeout=60)
    results: list[Any] = []

    def first_use() -> WriteResult:
        start.wait()
        with open_store(pg_url) as s:
            return s.write_events([ev(1)], run_id=None)

    join_all([in_thread(first_use, results) for _ in range(4)], timeout=60)
    assert sorted(results, key=lambda r: -r.written) == [WriteResult(1, 0)] + [WriteResult(0, 1)] * 3
    with connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM pullmode_schema").fetchall() == [(len(MIGRATIONS),)]


def test_writers_run_in_parallel_and_tail_never_skips_a_batch_committed_late(pg_url: str) -> None:
    """A slow batch takes its ids, then waits (on a key another transaction holds); a writer of
    another source commits meanwhile, with greater ids. A reader resuming after the greatest id it
    saw would skip the slow batch, so tail (and newest, for the id it resumes after) waits for the
    batch in flight instead."""
    open_store(pg_url).close()
    slow_results: list[Any] = []
    seen: list[Any] = []
    newest: list[Any] = []
    with (
        connect(pg_url) as blocker,
        connect(pg_url) as admin,
        open_store(pg_url) as slow,
        open_store(pg_url) as fast,
        open_store(pg_url) as reader,
        open_store(pg_url) as newest_reader,
    ):
        with blocker.transaction(force_rollback=True):
            blocker.execute(
                "INSERT INTO pulled_events (source_name, source_event_id, event_timestamp, raw_payload) "
                "VALUES ('a', 'e2', now(), '{}')"
            )
            slow_writer = in_thread(
                lambda: slow.write_events([ev(i, "a") for i in range(3)], run_id="slow"), slow_results
            )
            wait_for(lambda: blocked_by(admin, blocker))
            fast_results: list[Any] = []
            in_thread(lambda: fast.write_events([ev(1, "b"), ev(2, "b")], run_id="fast"), fast_results).join(10)
            assert fast_results == [WriteResult(2, 0)]  # not held up by the slow batch
            tail_reader = in_thread(lambda: seen.extend(reader.tail(limit=100)), [])
            newest_thread = in_thread(lambda: newest_reader.newest(limit=100), newest)
            wait_for(
                lambda: admin.execute(
                    "SELECT count(*) = 2 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()[0]  # type: ignore[index]
            )
            assert seen == [] and newest == []  # waiting for the slow batch, not reading past it
        slow_writer.join(timeout=20)
        tail_reader.join(timeout=20)
        newest_thread.join(timeout=20)
        assert slow_results == [WriteResult(3, 0)]
        assert [r["run_id"] for r in seen] == ["slow"] * 3 + ["fast"] * 2  # the slow batch took its ids first
        assert reader.tail(after_id=seen[-1]["id"]) == []
        [latest] = newest
        assert latest.last_id == seen[-1]["id"] and len(latest.rows) == 5


def test_a_key_stored_twice_is_reported_when_the_table_lacks_the_unique_key(pg_url: str) -> None:
    with open_store(pg_url) as s:
        s.write_events([ev(1), ev(2)], run_id="r1")
        with connect(pg_url) as conn:
            conn.execute("ALTER TABLE pulled_events DROP CONSTRAINT pulled_events_source_event_key")
            conn.execute(
                "INSERT INTO pulled_events (source_name, source_event_id, event_timestamp, raw_payload, run_id) "
                "VALUES ('s', 'e1', now(), '{}', 'r2')"
            )
        integrity = s.integrity(source="s", run_id="r1")
    assert (integrity.rows, integrity.duplicate_keys) == (2, 1)


def test_connection_problems_are_one_line_without_the_password(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    missing = parts._replace(netloc=f"postgres:hunter2@{parts.hostname}:{parts.port}", path="/no_such_database")
    with pytest.raises(PullmodeError) as excinfo:
        open_store(missing.geturl())
    message = str(excinfo.value)
    assert message.startswith("trace store: cannot connect to Postgres at postgres@")
    assert '"no_such_database" does not exist' in message
    assert "hunter2" not in message and "\n" not in message
    with pytest.raises(PullmodeError, match="not a valid postgresql:// URL") as bad:
        open_store("postgresql://postgres:hunter2@127.0.0.1:5432/db?no_such_option=1")
    assert "hunter2" not in str(bad.value)


MISREAD_PASSWORDS = ["Sup3r@S3cret", "Pa55@Qw3:Xy9@Zq7", "Pa55/w0rd", "1234/5678@9012"]


@pytest.mark.parametrize("password", MISREAD_PASSWORDS)
def test_a_password_with_an_unencoded_at_or_slash_never_shows_in_part(pg_url: str, password: str) -> None:
    """libpq ends the user info at the first '@' and the host at the first '/': the rest of such a
    password would be read as the host, port or database, and quoted wherever those are. The URL is
    refused before connecting, and described with none of its parts; percent-encoded, it connects."""
    parts = urlsplit(pg_url)
    unencoded = parts._replace(netloc=f"postgres:{password}@{parts.hostname}:{parts.port}").geturl()
    pieces = {p for p in re.split(r"[@/:]", password) if p}
    for shown in (describe_url(unencoded), describe_store(unencoded)):
        assert "unencoded '@' or '/'" in shown and not any(p in shown for p in pieces), shown
    for attempt in (lambda: open_store(unencoded), lambda: source_lock("s", url=unencoded).__enter__()):
        with pytest.raises(PullmodeError) as excinfo:
            attempt()
        message = str(excinfo.value)
        assert "percent-encode them ('@' as %40, '/' as %2F)" in message
        assert not any(p in message for p in pieces), message
    encoded = parts._replace(netloc=f"postgres:{quote(password, safe='')}@{parts.hostname}:{parts.port}").geturl()
    assert describe_url(encoded) == f"postgres@{parts.hostname}:{parts.port}{parts.path}"
    with open_store(encoded) as store:  # the test server trusts local connections: any password will do
        assert store.count(source="s") == 0


def test_an_unknown_scheme_names_both_supported_ones() -> None:
    with pytest.raises(PullmodeError) as excinfo:
        open_store("mysql://x@y/z")
    assert "unsupported scheme 'mysql'" in str(excinfo.value)
    assert "sqlite:///path.db" in str(excinfo.value) and "postgresql://" in str(excinfo.value)


@pytest.mark.parametrize(("configured", "used"), [("off", "on"), ("local", "local"), ("remote_apply", "remote_apply")])
def test_commits_are_durable_whatever_the_database_says(pg_url: str, configured: str, used: str) -> None:
    # synchronous_commit=off (set on the database here, as an operator might) acknowledges a COMMIT
    # before its WAL is flushed: a checkpoint could count a batch a crash takes. The store turns it
    # back on for its own session, and keeps any setting that flushes locally.
    with connect(pg_url) as admin:
        admin.execute(f"ALTER DATABASE {urlsplit(pg_url).path.lstrip('/')} SET synchronous_commit = {configured}")
    with PostgresTraceStore(pg_url) as store:
        assert store._conn.execute("SHOW synchronous_commit").fetchone() == (used,)
        assert store.write_events([ev(1)], run_id="r") == WriteResult(1, 0)
