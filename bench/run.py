"""Benchmarks, as ratios measured side by side in one run (these machines are noisy).

    make bench            # or: .venv/bin/python bench/run.py [--events N]

1. JSONPath lookup: the compiled fast path vs jsonpath-ng on the same simple paths.
2. Mapping: records normalized per second.
3. End to end: `run_pull` vs a plain fetch-parse-insert loop against the same loopback API and a
   fresh SQLite file each, alternating, best of several rounds.
4. Trace store writes in batches of 2,000: SQLite vs Postgres (COPY into staging, then INSERT ...
   ON CONFLICT DO NOTHING), and that COPY path vs a plain executemany of the same INSERT; first
   writes and a re-pull (every event a duplicate); then 3's run_pull into Postgres. Postgres is
   the local server ($PULLMODE_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres),
   a fresh database each round; skipped when it cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from jsonpath_ng.ext import parse as jsonpath_ng_parse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import parse_source
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.events.jsonpath import compile_path
from pullmode_dagster.engine.events.mapping import EventMapper, EventMapping
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore
from pullmode_dagster_tests.fakes import EVENT_MAPPING, CursorFeed, make_events

PATHS = ["$.id", "$.created_at", "$.actor.email", "$.type", "$.model", "$.usage.cost_usd"]


def best_of(rounds: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_jsonpath(records: list[dict]) -> tuple[float, float]:
    fast = [compile_path(p) for p in PATHS]
    slow = [jsonpath_ng_parse(p) for p in PATHS]
    sample = records[:2000]
    n = len(sample) * len(PATHS)
    t_fast = best_of(5, lambda: [p.first(r) for r in sample for p in fast]) / n
    t_slow = best_of(3, lambda: [p.find(r) for r in sample for p in slow]) / n
    return t_fast * 1e6, t_slow * 1e6


def bench_mapping(records: list[dict]) -> float:
    mapper = EventMapper(
        EventMapping(**EVENT_MAPPING),
        source_name="bench",
        organization_id=None,
    )
    t = best_of(3, lambda: mapper.map_page(records, location="p"))
    return len(records) / t


def plain_loop(url: str, db: Path) -> int:
    """What a hand-written puller does: fetch, parse, insert-or-ignore, follow the cursor."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # as the trace store: an fsync of the WAL per commit, on either side
    conn.execute(
        "CREATE TABLE e (source_name TEXT, source_event_id TEXT, event_timestamp TEXT, actor TEXT, "
        "action TEXT, target TEXT, cost_usd REAL, tokens_input INT, tokens_output INT, raw_payload TEXT, "
        "UNIQUE (source_name, source_event_id))"
    )
    n, cursor = 0, None
    with httpx.Client() as client:
        while True:
            doc = client.get(url, params={"cursor": cursor} if cursor else None).json()
            rows = [
                ("bench", e["id"], e["created_at"], e["actor"]["email"], e["type"], e["model"],
                 e["usage"]["cost_usd"], e["usage"]["input_tokens"], e["usage"]["output_tokens"], json.dumps(e))
                for e in doc["data"]
            ]  # fmt: skip
            conn.execute("BEGIN")
            conn.executemany("INSERT OR IGNORE INTO e VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
            n += len(rows)
            cursor = doc.get("next_cursor")
            if not cursor:
                conn.close()
                return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("pullmode").setLevel(logging.WARNING)
    records = make_events(args.events)

    fast, slow = bench_jsonpath(records)
    print(f"jsonpath lookup: compiled {fast:.2f} us, jsonpath-ng {slow:.2f} us  -> {slow / fast:.0f}x faster")
    print(f"mapping: {bench_mapping(records):,.0f} records/s normalized")

    feed = CursorFeed(records, page_size=args.page_size)
    # Pre-render pages so the server's own JSON encoding is not what is measured.
    with LoopbackServer({"/events": feed}) as server, tempfile.TemporaryDirectory() as tmp:
        doc = {
            "name": "bench", "adapter": "http_polling", "startDate": "2026-01-01", "schedule": "* * * * *",
            "url": server.url("/events"), "cursorJsonPath": "$.next_cursor", "eventsJsonPath": "$.data",
            "maxPagesPerRun": 100_000,
            "eventMapping": EVENT_MAPPING,
        }  # fmt: skip
        source, problems = parse_source(doc, file=Path(tmp) / "bench.yaml", adapters=ADAPTERS)
        assert source is not None, problems
        engine_times, plain_times = [], []
        for i in range(args.rounds):
            db_plain, db_engine = Path(tmp) / f"plain{i}.db", Path(tmp) / f"engine{i}.db"
            t = time.perf_counter()
            n_plain = plain_loop(server.url("/events"), db_plain)
            plain_times.append(time.perf_counter() - t)
            with SqliteTraceStore(db_engine) as store:
                t = time.perf_counter()
                report = run_pull(source, store=store)
                engine_times.append(time.perf_counter() - t)
            assert n_plain == report.written == args.events, (n_plain, report.written)
        plain, engine = min(plain_times), min(engine_times)
        print(
            f"end to end, {args.events:,} events, pages of {args.page_size}: "
            f"plain loop {args.events / plain:,.0f}/s, "
            f"run_pull {args.events / engine:,.0f}/s  -> run_pull takes {engine / plain:.2f}x the plain loop's time"
        )
        bench_stores(records, args.rounds, source=source, sqlite_pull_seconds=engine)


def bench_stores(records: list[dict], rounds: int, *, source: SourceConfig, sqlite_pull_seconds: float) -> None:
    """4. Store writes only (events already normalized), so the stores are what is compared; then
    section 3's run_pull into Postgres, against its time into SQLite."""
    import psycopg

    from pullmode_dagster.engine.store import EVENT_COLUMNS, TraceStore, open_store
    from pullmode_dagster_tests.pg import ADMIN_URL, connect, fresh_database

    try:
        connect(ADMIN_URL).close()
    except psycopg.OperationalError as exc:
        print(f"trace store writes: skipped, no Postgres at {ADMIN_URL}: {str(exc).strip().splitlines()[0]}")
        return
    mapper = EventMapper(
        EventMapping(**EVENT_MAPPING),
        source_name="bench",
        organization_id="org",
    )
    events, _ = mapper.map_page(records, location="p")
    batches = [events[i : i + 2000] for i in range(0, len(events), 2000)]
    columns = EVENT_COLUMNS[: EVENT_COLUMNS.index("pulled_at")]
    insert = (
        f"INSERT INTO pulled_events ({', '.join(columns)}, pulled_at, run_id) "
        f"VALUES ({', '.join('%s' for _ in columns)}, now(), 'bench') ON CONFLICT DO NOTHING"
    )

    def store_writes(store: TraceStore) -> tuple[float, float]:
        """Seconds to write every batch into an empty store, then to write them all again."""
        times = []
        for _ in range(2):
            t = time.perf_counter()
            for batch in batches:
                store.write_events(batch, run_id="bench")
            times.append(time.perf_counter() - t)
        assert store.count() == len(events)
        return times[0], times[1]

    def executemany_writes(url: str) -> float:
        with connect(url) as conn:
            t = time.perf_counter()
            for batch in batches:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(insert, [tuple(getattr(e, c) for c in columns) for e in batch])
            elapsed = time.perf_counter() - t
            assert conn.execute("SELECT count(*) FROM pulled_events").fetchone() == (len(events),)
        return elapsed

    sqlite_times, pg_times, many_times, pull_times = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            with open_store(f"sqlite:///{tmp}/store{i}.db") as store:
                sqlite_times.append(store_writes(store))
            with fresh_database() as url, open_store(url) as store:
                pg_times.append(store_writes(store))
            with fresh_database() as url:
                open_store(url).close()
                many_times.append(executemany_writes(url))
            with fresh_database() as url, open_store(url) as store:
                t = time.perf_counter()
                assert run_pull(source, store=store).written == len(events)
                pull_times.append(time.perf_counter() - t)
    n = len(events)
    sqlite_first, sqlite_again = min(t[0] for t in sqlite_times), min(t[1] for t in sqlite_times)
    pg_first, pg_again = min(t[0] for t in pg_times), min(t[1] for t in pg_times)
    many = min(many_times)
    print(
        f"trace store writes, {n:,} events in batches of 2,000: "
        f"SQLite {n / sqlite_first:,.0f}/s, Postgres {n / pg_first:,.0f}/s "
        f"-> Postgres {sqlite_first / pg_first:.2f}x SQLite's speed; "
        f"re-pull (all duplicates): SQLite {n / sqlite_again:,.0f}/s, Postgres {n / pg_again:,.0f}/s"
    )
    print(
        f"Postgres first writes: COPY + INSERT ON CONFLICT {n / pg_first:,.0f}/s, executemany {n / many:,.0f}/s "
        f"-> COPY {many / pg_first:.1f}x faster"
    )
    pull = min(pull_times)
    print(
        f"end to end into Postgres: run_pull {n / pull:,.0f}/s vs {n / sqlite_pull_seconds:,.0f}/s into SQLite "
        f"-> {pull / sqlite_pull_seconds:.2f}x the time"
    )


if __name__ == "__main__":
    main()
