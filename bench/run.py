"""Benchmarks, as ratios measured side by side in one run (these machines are noisy).

    make bench            # or: .venv/bin/python bench/run.py [--events N]

1. JSONPath lookup: the compiled fast path vs jsonpath-ng on the same simple paths.
2. Mapping: records normalized per second.
3. End to end: `run_pull` vs a plain fetch-parse-insert loop against the same loopback API and a
   fresh SQLite file each, alternating, best of several rounds.
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
from pullmode_dagster.engine.config import EventMapping
from pullmode_dagster.engine.jsonpath import compile_path
from pullmode_dagster.engine.mapping import EventMapper
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.sources import parse_source
from pullmode_dagster.engine.store import SqliteTraceStore
from pullmode_dagster_tests.fakes import CursorFeed, make_events

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
        EventMapping(
            source_event_id="$.id",
            event_timestamp="$.created_at",
            actor="$.actor.email",
            action="$.type",
            target="$.model",
            cost_usd="$.usage.cost_usd",
            tokens_input="$.usage.input_tokens",
            tokens_output="$.usage.output_tokens",
        ),
        source_name="bench",
        organization_id=None,
    )
    t = best_of(3, lambda: mapper.map_page(records, location="p"))
    return len(records) / t


def plain_loop(url: str, db: Path) -> int:
    """What a hand-written puller does: fetch, parse, insert-or-ignore, follow the cursor."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
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
            "eventMapping": {
                "source_event_id": "$.id", "event_timestamp": "$.created_at", "actor": "$.actor.email",
                "action": "$.type", "target": "$.model", "cost_usd": "$.usage.cost_usd",
                "tokens_input": "$.usage.input_tokens", "tokens_output": "$.usage.output_tokens",
            },
        }  # fmt: skip
        source, problems = parse_source(doc, file=Path(tmp) / "bench.yaml")
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


if __name__ == "__main__":
    main()
