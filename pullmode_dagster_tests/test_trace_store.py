"""The trace store: batched writes, dedup on (source_name, source_event_id), rejects, tail.

Every test taking ``store`` or ``store_url`` runs on both backends, SQLite and Postgres (each
Postgres test in a database of its own); the WAL test is SQLite's alone.
"""

from __future__ import annotations

import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from pullmode_dagster.cli import _event_line, _row_json
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.adapters import PullContext
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.events.model import TIMESTAMP_FORMAT, TIMESTAMP_WIDTH, NormalizedEvent
from pullmode_dagster.engine.events.rejects import Reject
from pullmode_dagster.engine.events.rules import (
    FIELD_CHECKS,
    NormalizationError,
    format_timestamp,
    normalize_cost,
    normalize_count,
    normalize_event_id,
    normalize_timestamp,
)
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore, TraceStore, WriteResult, open_store
from pullmode_dagster.engine.store.base import Newest

from .bounded import join_all
from .conftest import SourceWriter
from .documents import http_source
from .fakes import CursorFeed, make_events
from .helpers import ev, wait_for
from .pg import blocked_by, connect, fresh_database
from .ui_helpers import running_in_ci


@pytest.fixture
def store(store_url: str) -> Iterator[TraceStore]:
    with open_store(store_url) as s:
        yield s


def execute(url: str, sql: str) -> None:
    """Change the store's tables behind its back, the way an operator (or a bug) would."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql)
    else:
        with connect(url) as conn:
            conn.execute(sql)


def test_duplicates_are_skipped_and_counted(store: TraceStore) -> None:
    assert store.write_events([ev(1), ev(2)], run_id="r1") == WriteResult(2, 0)
    result = store.write_events([ev(2), ev(3), ev(3)], run_id="r2")
    assert (result.written, result.duplicates) == (1, 2)
    assert store.count() == 3
    assert [r["run_id"] for r in store.tail()] == ["r1", "r1", "r2"]


def test_same_event_id_in_two_sources_is_two_rows(store: TraceStore) -> None:
    store.write_events([ev(1, "a"), ev(1, "b")], run_id=None)
    assert store.count() == 2 and store.count(source="a") == 1


def test_rejects_are_kept_once(store: TraceStore) -> None:
    rejects = [Reject("s", "no timestamp", '{"x":1}', "page 1, record 1")]
    assert store.write_rejects(rejects, run_id="r1") == 1
    assert store.write_rejects(rejects, run_id="r2") == 0
    assert store.count(rejected=True) == 1


def test_tail_is_newest_last_and_resumable(store: TraceStore) -> None:
    store.write_events([ev(i) for i in range(10)], run_id=None)
    rows = store.tail(limit=3)
    assert [r["source_event_id"] for r in rows] == ["e7", "e8", "e9"]
    store.write_events([ev(10)], run_id=None)
    assert [r["source_event_id"] for r in store.tail(after_id=rows[-1]["id"])] == ["e10"]
    assert [r["source_event_id"] for r in store.tail(source="other")] == []
    # Resuming reads the first rows after the id, so a reader that takes a few at a time misses none.
    first = store.tail(after_id=rows[0]["id"], limit=2)
    assert [r["source_event_id"] for r in first] == ["e8", "e9"]
    assert [r["source_event_id"] for r in store.tail(after_id=first[-1]["id"], limit=2)] == ["e10"]


def at(source: str, event_id: str, minute: int) -> NormalizedEvent:
    return replace(ev(0, source), source_event_id=event_id, event_timestamp=f"2026-03-01T10:{minute:02d}:00.000000Z")


def test_newest_is_by_event_time_across_sources_whatever_order_they_were_stored(store: TraceStore) -> None:
    assert store.newest() == Newest([], 0)
    # A newest-first feed stores its latest events first; a second source's events fall in between.
    store.write_events([at("s", f"s{m}", m) for m in (50, 40, 30, 20, 10)], run_id="r1")
    store.write_events([at("o", "o45", 45), at("o", "o5", 5), at("o", "o50", 50)], run_id="r2")
    newest = store.newest(limit=4)
    # Oldest first; the two events of 10:50 in the order they were stored.
    assert [r["source_event_id"] for r in newest.rows] == ["s40", "o45", "s50", "o50"]
    assert newest.last_id == max(r["id"] for r in store.tail(limit=100)) and store.count() == 8
    assert [r["source_event_id"] for r in store.newest(source="s", limit=2).rows] == ["s40", "s50"]
    assert [r["source_event_id"] for r in store.newest(source="o", limit=10).rows] == ["o5", "o45", "o50"]
    assert store.newest(source="nobody").rows == []
    assert newest.rows[0] == next(r for r in store.tail(limit=100) if r["source_event_id"] == "s40")  # same row
    # What lands after the read comes from tail, resumed after last_id: an old event included.
    store.write_events([at("s", "s1", 1), at("s", "s55", 55)], run_id="r3")
    after = store.tail(after_id=newest.last_id, limit=100)
    assert [r["source_event_id"] for r in after] == ["s1", "s55"]
    assert [r["source_event_id"] for r in store.newest(limit=2).rows] == ["o50", "s55"]


def test_source_names_are_every_stored_source_sorted(store: TraceStore) -> None:
    assert store.source_names() == []
    store.write_events([ev(1, "b"), ev(2, "a"), ev(3, "b"), ev(4, "c_1"), ev(5, "c")], run_id=None)
    assert store.source_names() == ["a", "b", "c", "c_1"]


def test_rows_are_numbered_in_batch_order_and_the_first_of_a_repeated_key_wins(store: TraceStore) -> None:
    batch = [
        ev(9),
        ev(3),
        ev(5),
        NormalizedEvent("s", "e3", "2026-03-01T00:00:00.000000Z", "later", "x", "y", 0, 0, 0, "{}"),
    ]
    assert store.write_events(batch, run_id="r") == WriteResult(3, 1)
    rows = store.tail()
    assert [(r["source_event_id"], r["actor"]) for r in rows] == [("e9", "a"), ("e3", "a"), ("e5", "a")]


def test_columns_match_the_contract(store: TraceStore) -> None:
    store.write_events([ev(1)], run_id="r")
    row = store.tail()[0]
    assert set(row) == {
        "id",
        "source_name",
        "source_event_id",
        "event_timestamp",
        "actor",
        "action",
        "target",
        "cost_usd",
        "tokens_input",
        "tokens_output",
        "raw_payload",
        "organization_id",
        "pulled_at",
        "run_id",
    }


def test_tail_and_the_cli_lines_are_the_same_on_both_backends(tmp_path: Path) -> None:
    events = [
        NormalizedEvent(
            "s", "a1", "2026-03-01T10:00:00.123456Z", "ana@x", "completion", "m", 0.1, 7, 8, '{"b":1,"a":2}'
        ),
        NormalizedEvent("s", "a2", "2026-03-01T10:00:01.000000Z", None, None, None, 1e-07, 0, 0, '{"é":"ü 😀"}', "o"),
        NormalizedEvent("s", "a3", "1999-12-31T23:59:59.999999Z", "b", "x", "y", 123.456789, 10**12, 1, "{ }", "o"),
    ]
    with fresh_database() as url:
        tails = []
        for store_url in (f"sqlite:///{tmp_path}/same.db", url):
            with open_store(store_url) as s:
                s.write_events(events, run_id="r")
                tails.append(s.tail())
    sqlite_rows, postgres_rows = tails
    for row in postgres_rows:
        assert len(row.pop("pulled_at")) == len("2026-03-01T10:00:00.000000Z") and isinstance(row["cost_usd"], float)
    for row in sqlite_rows:
        row.pop("pulled_at")
    assert postgres_rows == sqlite_rows
    assert [_event_line(r) for r in postgres_rows] == [_event_line(r) for r in sqlite_rows]
    assert [_row_json(r) for r in postgres_rows] == [_row_json(r) for r in sqlite_rows]


def test_integrity_looks_at_the_runs_rows_and_flags_invalid_ones(store: TraceStore, store_url: str) -> None:
    store.write_events([ev(1), ev(2), ev(3)], run_id="r1")
    store.write_events([ev(4)], run_id="r2")
    clean = store.integrity(source="s", run_id="r1")
    assert (clean.rows, clean.duplicate_keys, clean.invalid_rows, clean.invalid_examples) == (3, 0, 0, ())
    execute(store_url, "UPDATE pulled_events SET cost_usd = -1 WHERE source_event_id = 'e1'")
    execute(store_url, """UPDATE pulled_events SET raw_payload = '{"x":NaN}' WHERE source_event_id IN ('e2', 'e4')""")
    flagged = store.integrity(source="s", run_id="r1")
    assert (flagged.rows, flagged.invalid_rows, sorted(flagged.invalid_examples)) == (3, 2, ["e1", "e2"])
    assert store.integrity(source="other", run_id="r1").rows == 0


def test_integrity_of_a_window_counts_the_rows_dated_in_it(store: TraceStore, store_url: str) -> None:
    next_day = replace(ev(9), event_timestamp="2026-03-02T00:00:00.000000Z")
    store.write_events([ev(1), ev(2), next_day], run_id="r1")
    execute(store_url, "UPDATE pulled_events SET cost_usd = -1 WHERE source_event_id IN ('e2', 'e9')")
    day = store.integrity(source="s", start=datetime(2026, 3, 1, tzinfo=UTC), end=datetime(2026, 3, 2, tzinfo=UTC))
    assert (day.rows, day.invalid_rows, day.invalid_examples, day.duplicate_keys) == (2, 1, ("e2",), 0)
    assert store.integrity(source="s").rows == 3


def test_hour_counts_are_the_runs_rows_per_utc_hour(store: TraceStore) -> None:
    late = replace(ev(5), event_timestamp="2026-03-02T23:59:59.999999Z")
    store.write_events([ev(1), ev(2), late], run_id="r1")
    store.write_events([ev(3)], run_id="r2")
    assert store.hour_counts(source="s", run_id="r1") == {"2026-03-01T00": 2, "2026-03-02T23": 1}
    assert store.hour_counts(source="other", run_id="r1") == {}


def test_unusual_text_is_stored_and_early_years_are_flagged(store: TraceStore) -> None:
    """NUL characters (Postgres text cannot hold them) do not fail a batch, the original payload
    comes back byte for byte, and a year the engine cannot write at fixed width is reported."""
    payload = '{"note":"a\\u0000b","t":"0005-01-01"}'
    nul = NormalizedEvent("s", "nul", "2026-03-01T00:00:00.000000Z", "a\x00b", "act", None, 0, 0, 0, payload)
    early = NormalizedEvent("s", "early", "5-01-01T00:00:00.000000Z", None, None, None, 0, 0, 0, "{}")
    assert store.write_events([nul, early], run_id="r") == WriteResult(2, 0)
    rows = {r["source_event_id"]: r for r in store.tail()}
    assert rows["nul"]["raw_payload"] == payload
    assert rows["nul"]["actor"] in ("a\x00b", "a\ufffdb")  # SQLite keeps NUL; Postgres marks where it was
    assert rows["early"]["event_timestamp"].endswith("5-01-01T00:00:00.000000Z")  # the year 5, not 2001
    integrity = store.integrity(source="s", run_id="r")
    assert (integrity.invalid_rows, integrity.invalid_examples) == (1, ("early",))


# --- The normalized shape: one rule (events.rules.FIELD_CHECKS), each store's predicate generated from it -------------

GOOD = ev(0)
# Each breaks one field's check (the label, in actor, names the row even where the id is the bad field).
BAD = {
    "unpadded year": replace(GOOD, event_timestamp="5-01-01T00:00:00.000000Z"),
    "year before 1000": replace(GOOD, event_timestamp="0999-12-31T23:59:59.999999Z"),
    "year after 9999": replace(GOOD, event_timestamp="10000-01-01T00:00:00.000000Z"),
    "negative cost": replace(GOOD, cost_usd=-0.5),
    "negative tokens_input": replace(GOOD, tokens_input=-1),
    "negative tokens_output": replace(GOOD, tokens_output=-1),
    "NaN in JSON": replace(GOOD, raw_payload='{"x":NaN}'),
    "not JSON": replace(GOOD, raw_payload="{"),
    "empty id": replace(GOOD, source_event_id=""),
}
EDGES = {
    "first instant": replace(GOOD, event_timestamp="1000-01-01T00:00:00.000000Z"),
    "last instant": replace(GOOD, event_timestamp="9999-12-31T23:59:59.999999Z"),
    "zeros": replace(GOOD, cost_usd=0.0, tokens_input=0, tokens_output=0, raw_payload="[]"),
}


def broken_field(event: NormalizedEvent) -> str:
    """The one checked field in which ``event`` differs from GOOD."""
    (field,) = [f for f in FIELD_CHECKS if getattr(event, f) != getattr(GOOD, f)]
    return field


def labelled(rows: dict[str, NormalizedEvent]) -> list[NormalizedEvent]:
    """The rows with their label as actor, and as id unless the id is what is broken."""
    return [replace(e, source_event_id=e.source_event_id and label, actor=label) for label, e in rows.items()]


def test_both_stores_flag_exactly_the_rows_outside_the_normalized_shape(tmp_path: Path) -> None:
    assert {broken_field(e) for e in BAD.values()} == set(FIELD_CHECKS)  # a bad row for every checked field
    every = {"good": GOOD, **EDGES, **BAD}
    with fresh_database() as url:
        for store_url in (f"sqlite:///{tmp_path}/shape.db", url):
            with open_store(store_url) as s:
                assert s.write_events(labelled(every), run_id="r") == WriteResult(len(every), 0)
                flagged = {r[0] for r in s._rows(f"SELECT actor FROM pulled_events WHERE {s.INVALID_ROW}", [])}
                assert flagged == set(BAD), store_url
                integrity = s.integrity(source="s", run_id="r")
                assert (integrity.rows, integrity.invalid_rows) == (len(every), len(BAD))


def test_normalization_refuses_what_the_stores_flag_and_keeps_the_edges() -> None:
    """The same rule seen from the engine: each bad value above is a reject, each edge is kept as is."""
    rules = {
        "source_event_id": normalize_event_id,
        "event_timestamp": normalize_timestamp,
        "cost_usd": normalize_cost,
        "tokens_input": lambda v: normalize_count("tokens_input", v),
        "tokens_output": lambda v: normalize_count("tokens_output", v),
    }
    for event in BAD.values():
        field = broken_field(event)
        if field != "raw_payload":  # the engine writes raw_payload itself: JSON always
            with pytest.raises(NormalizationError):
                rules[field](getattr(event, field))
    for event in EDGES.values():
        assert all(rule(getattr(event, field)) == getattr(event, field) for field, rule in rules.items())


def test_timestamps_are_the_engines_text_on_both_stores(store: TraceStore) -> None:
    """What each store writes itself (pulled_at) and reads back is TIMESTAMP_FORMAT text, fixed width."""
    store.write_events(labelled(EDGES), run_id="r")
    rows = store.tail()
    assert [r["event_timestamp"] for r in rows] == [e.event_timestamp for e in EDGES.values()]
    for row in rows:
        pulled_at = row["pulled_at"]
        written = datetime.strptime(pulled_at, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        assert len(pulled_at) == TIMESTAMP_WIDTH and format_timestamp(written) == pulled_at
        assert abs(datetime.now(UTC) - written) < timedelta(minutes=5)  # UTC, not the database's local time
    hours = {e.event_timestamp[: len("2026-03-01T10")]: 1 for e in EDGES.values()}
    assert len(hours) == len(EDGES) and store.hour_counts(source="s", run_id="r") == hours


def test_wal_lets_a_reader_read_while_a_writer_holds_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    writer = SqliteTraceStore(path)
    writer.write_events([ev(1)], run_id=None)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    raw.execute(
        "INSERT INTO pulled_events (source_name, source_event_id, event_timestamp, raw_payload, pulled_at) "
        "VALUES ('s', 'held', 'x', '{}', 'x')"
    )
    reader = SqliteTraceStore(path)
    assert reader.count() == 1  # not blocked, and the uncommitted row is invisible
    raw.execute("COMMIT")
    assert reader.count() == 2


def test_two_writers_with_overlapping_batches_end_with_each_event_once(store_url: str) -> None:
    """A backfill and a poll at the same time, with overlapping batches: each batch of one writer
    holds the keys of the other's in the opposite order, the order in which two writers that lock
    keys as they go would deadlock."""
    open_store(store_url).close()  # the schema exists before the race starts
    batches = {
        "up": [list(range(b * 500, b * 500 + 1000)) for b in range(8)],
        "down": [list(range(b * 500 + 999, b * 500 - 1, -1)) for b in range(8)],
    }
    start = threading.Barrier(2, timeout=60)
    results: list[WriteResult] = []
    errors: list[BaseException] = []

    def write(direction: str) -> None:
        try:
            with open_store(store_url) as s:
                start.wait()
                for batch in batches[direction]:
                    results.append(s.write_events([ev(i) for i in batch], run_id=direction))
        except BaseException as exc:
            start.abort()  # the other writer stops waiting for this one
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(d,), name=f"writer {d}", daemon=True) for d in batches]
    for t in threads:
        t.start()
    join_all(threads, timeout=120)  # two writers that deadlock each other fail here, not at pytest's timeout
    assert errors == []
    expected = {i for batch_list in batches.values() for batch in batch_list for i in batch}
    with open_store(store_url) as s:
        rows = s.tail(limit=10**6)
    assert sorted(r["source_event_id"] for r in rows) == sorted(f"e{i}" for i in expected)
    assert sum(r.written for r in results) == len(expected)
    assert sum(r.written + r.duplicates for r in results) == 2 * 8 * 1000


# --- A writer killed mid-batch -------------------------------------------------------------------

HELD_KEY = "evt_00015"  # in the second batch of ten


def kill_postgres_writer_mid_batch(url: str, source: SourceConfig, context: PullContext) -> str:
    """Run a pull whose second batch blocks on a key another transaction holds (its INSERT has
    written the batch's first rows, uncommitted), then terminate its connection from outside."""
    outcome: list[BaseException] = []

    def pull() -> None:
        try:
            with open_store(url) as s:
                run_pull(source, store=s, context=context, batch_size=10)
        except BaseException as exc:
            outcome.append(exc)

    with connect(url) as blocker, connect(url) as admin:
        open_store(url).close()
        with blocker.transaction(force_rollback=True):
            blocker.execute(
                "INSERT INTO pulled_events (source_name, source_event_id, event_timestamp, raw_payload) "
                "VALUES (%s, %s, now(), '{}')",
                [source.name, HELD_KEY],
            )
            writer = threading.Thread(target=pull, name="pull", daemon=True)
            writer.start()
            blocked = wait_for(lambda: blocked_by(admin, blocker))
            assert blocked[1].startswith("INSERT INTO pulled_events ")  # mid-batch: COPY done, INSERT under way
            assert admin.execute("SELECT pg_terminate_backend(%s)", [blocked[0]]).fetchone() == (True,)
            join_all([writer], timeout=30)
    (error,) = outcome
    # One clear line for the user; the driver's error underneath.
    assert isinstance(error, PullError) and isinstance(error.__cause__, psycopg.OperationalError)
    assert str(error).startswith(f"source {source.name!r}: trace store write failed: AdminShutdown: terminating ")
    return str(error)


SQLITE_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pullmode_dagster.engine.pull import run_pull
    from pullmode_dagster.engine.adapters import ADAPTERS
    from pullmode_dagster.engine.declare.loading import load_sources
    from pullmode_dagster.engine.store import SqliteTraceStore

    directory, path, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = SqliteTraceStore(path)
    inserts = 0

    def trace(statement):
        global inserts
        if statement.startswith("INSERT OR IGNORE INTO pulled_events "):
            inserts += 1
            if inserts == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    store._conn.set_trace_callback(trace)
    run_pull(load_sources(directory, adapters=ADAPTERS).sources["acme_audit"], store=store, batch_size=10)
    """
)


def kill_sqlite_writer_mid_batch(url: str, source: SourceConfig, context: PullContext) -> str:
    """Run the pull in a process that is killed (SIGKILL) at the sixth row of its second batch."""
    path = url.removeprefix("sqlite:///")
    assert source.file is not None
    child = subprocess.run(
        [sys.executable, "-c", SQLITE_WRITER, str(source.file.parent), path, "16"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    return "killed"


def test_a_writer_killed_mid_batch_leaves_whole_batches_and_the_next_pull_completes_the_rest(
    store_url: str,
    api: LoopbackServer,
    sources: SourceWriter,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-kill-1234")
    api.routes["/v1/events"] = CursorFeed(make_events(40), page_size=10)
    source = sources.load(http_source(api.url("/v1/events")))
    kill = kill_sqlite_writer_mid_batch if store_url.startswith("sqlite") else kill_postgres_writer_mid_batch
    error = kill(store_url, source, context)
    assert error == "killed" or "terminating connection due to administrator command" in error

    with open_store(store_url) as s:
        assert sorted(r["source_event_id"] for r in s.tail(limit=100)) == [f"evt_{i:05d}" for i in range(10)]
        # Nothing was committed by the killed pull, so the next one starts from the same cursor.
        retry = run_pull(source, store=s, context=context, batch_size=10)
        assert (retry.written, retry.duplicates) == (30, 10)
        rows = s.tail(limit=100)
    assert sorted(r["source_event_id"] for r in rows) == [f"evt_{i:05d}" for i in range(40)]
    assert {r["run_id"] for r in rows[10:]} == {retry.run_id}


def test_open_store_default_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store() as s:
        assert isinstance(s, SqliteTraceStore)
    assert (tmp_path / ".pullmode" / "trace_store.db").exists()
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/other.db")
    with open_store():
        pass
    assert (tmp_path / "other.db").exists()


def test_several_runs_opening_a_new_sqlite_store_at_once_do_not_fail(tmp_path: Path) -> None:
    errors: list[Exception] = []

    def open_close(path: Path) -> None:
        try:
            SqliteTraceStore(path).close()
        except Exception as exc:
            errors.append(exc)

    for trial in range(20):
        threads = [
            threading.Thread(target=open_close, args=(tmp_path / f"new{trial}.db",), daemon=True) for _ in range(4)
        ]
        for t in threads:
            t.start()
        join_all(threads, timeout=30)
    assert errors == []


def test_sqlite_keeps_no_actor_index_and_drops_an_old_one(tmp_path: Path) -> None:
    """An index on actor made SQLite writes ten times the data at a million events (README)."""

    path = tmp_path / "old.db"
    SqliteTraceStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE INDEX pulled_events_actor ON pulled_events (actor)")  # as older versions made it
    SqliteTraceStore(path).close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "pulled_events_actor" not in names
    assert {"pulled_events_source_time", "pulled_events_run"} <= names


# -- durability: a checkpoint never counts events a power loss could take -------------------------

_DURABLE_CHILD = """
import os, sys
from pathlib import Path
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore
from pullmode_dagster_tests.fakes import make_events
from pullmode_dagster_tests.faults import FaultServer, fault_source, quiet_context

directory = Path(sys.argv[1])
marker = os.open(directory / "checkpoints", os.O_WRONLY | os.O_CREAT)
with FaultServer(make_events(300), page_size=100) as server, SqliteTraceStore(directory / "store.db") as store:
    source = fault_source(server.url, directory)
    report = run_pull(
        source, store=store, context=quiet_context(), batch_size=100,
        on_checkpoint=lambda state: os.write(marker, b"checkpoint"),
    )
print(report.written)
"""
_SYSCALL = re.compile(r"^\d+\s+(\w+)\(\d+<([^>]*)>")


@pytest.mark.skipif(
    shutil.which("strace") is None and not running_in_ci(),
    reason="needs strace (.ci/run installs it)",
)
def test_sqlite_syncs_the_wal_before_every_checkpoint_is_reported(tmp_path: Path) -> None:
    # The system calls of a real pull, in order: every checkpoint the engine reports (a marker write)
    # comes after an fsync of the WAL that follows the WAL's last write, so no power loss can take
    # events that a checkpoint already counts.
    log = tmp_path / "strace.log"
    strace = ["strace", "-f", "-qq", "-y", "-e", "trace=write,pwrite64,fsync,fdatasync", "-o", str(log)]
    child = subprocess.run(
        [*strace, sys.executable, "-c", _DURABLE_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.returncode == 0 and child.stdout.strip() == "300", child.stderr[-2000:]
    unsynced, wal_writes, checkpoints = False, 0, 0
    for line in log.read_text().splitlines():
        match = _SYSCALL.match(line)
        if match is None:
            continue
        call, path = match.groups()
        if path.endswith("/checkpoints"):
            checkpoints += 1
            assert not unsynced, f"checkpoint {checkpoints} was reported before the WAL was synced"
        elif path.endswith("store.db-wal"):
            if call in ("write", "pwrite64"):
                unsynced, wal_writes = True, wal_writes + 1
            elif call in ("fsync", "fdatasync"):
                unsynced = False
    assert checkpoints == 3 and wal_writes >= 3  # one per batch of 100: the pull wrote through the WAL


def test_sqlite_commits_are_synced_when_a_checkpoint_is_reported(
    tmp_path: Path, api: LoopbackServer, sources: SourceWriter, context: PullContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the connection says at each report: the batch is committed (another connection sees it)
    # with synchronous=FULL (2), which syncs the WAL before COMMIT returns.
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-durable-1234")
    api.routes["/v1/events"] = CursorFeed(make_events(30), page_size=10)
    seen: list[tuple[int, int]] = []
    with SqliteTraceStore(tmp_path / "store.db") as store:

        def report(state: object) -> None:
            with sqlite3.connect(tmp_path / "store.db") as other:
                visible = other.execute("SELECT count(*) FROM pulled_events").fetchone()[0]
            seen.append((store._conn.execute("PRAGMA synchronous").fetchone()[0], visible))

        run_pull(
            sources.load(http_source(api.url("/v1/events"))),
            store=store,
            context=context,
            batch_size=10,
            on_checkpoint=report,
        )
    assert seen == [(2, 10), (2, 20), (2, 30)]
