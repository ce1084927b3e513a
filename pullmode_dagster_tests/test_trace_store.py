"""The trace store: batched writes, dedup on (source_name, source_event_id), rejects, tail."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from pullmode_dagster.engine.events import NormalizedEvent, Reject
from pullmode_dagster.engine.store import SqliteTraceStore, WriteResult, open_store


def ev(i: int, source: str = "s") -> NormalizedEvent:
    return NormalizedEvent(
        source,
        f"e{i}",
        f"2026-03-01T00:00:{i % 60:02d}.000000Z",
        "a",
        "act",
        "t",
        0.5,
        1,
        2,
        f'{{"i":{i}}}',
        "org",
    )


def test_duplicates_are_skipped_and_counted(store: SqliteTraceStore) -> None:
    assert store.write_events([ev(1), ev(2)], run_id="r1") == WriteResult(2, 0)
    result = store.write_events([ev(2), ev(3), ev(3)], run_id="r2")
    assert (result.written, result.duplicates) == (1, 2)
    assert store.count() == 3
    assert [r["run_id"] for r in store.tail()] == ["r1", "r1", "r2"]


def test_same_event_id_in_two_sources_is_two_rows(store: SqliteTraceStore) -> None:
    store.write_events([ev(1, "a"), ev(1, "b")], run_id=None)
    assert store.count() == 2 and store.count(source="a") == 1


def test_rejects_are_kept_once(store: SqliteTraceStore) -> None:
    rejects = [Reject("s", "no timestamp", '{"x":1}', "page 1, record 1")]
    assert store.write_rejects(rejects, run_id="r1") == 1
    assert store.write_rejects(rejects, run_id="r2") == 0
    assert store.count(rejected=True) == 1


def test_tail_is_newest_last_and_resumable(store: SqliteTraceStore) -> None:
    store.write_events([ev(i) for i in range(10)], run_id=None)
    rows = store.tail(limit=3)
    assert [r["source_event_id"] for r in rows] == ["e7", "e8", "e9"]
    store.write_events([ev(10)], run_id=None)
    assert [r["source_event_id"] for r in store.tail(after_id=rows[-1]["id"])] == ["e10"]


def test_columns_match_the_contract(store: SqliteTraceStore) -> None:
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


def test_two_writers_with_overlapping_batches_end_with_each_event_once(tmp_path: Path) -> None:
    path = tmp_path / "concurrent.db"
    SqliteTraceStore(path).close()
    results = []

    def write(offset: int) -> None:
        with SqliteTraceStore(path) as s:
            for b in range(20):
                results.append(
                    s.write_events([ev(i) for i in range(offset + b * 50, offset + b * 50 + 100)], run_id=None)
                )

    threads = [threading.Thread(target=write, args=(o,)) for o in (0, 500)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with SqliteTraceStore(path) as s:
        total = s.count()
    assert total == len({i for o in (0, 500) for b in range(20) for i in range(o + b * 50, o + b * 50 + 100)})
    assert sum(r.written for r in results) == total


def test_open_store_default_and_env(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    with open_store() as s:
        assert isinstance(s, SqliteTraceStore)
    assert (tmp_path / ".pullmode" / "trace_store.db").exists()
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/other.db")
    with open_store():
        pass
    assert (tmp_path / "other.db").exists()
