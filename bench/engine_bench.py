"""The engine alone: ``run_pull`` vs a plain loop, side by side in one run (issue #13).

    .venv/bin/python bench/engine_bench.py [--events 100000] [--page-size 1000] [--rounds 5]
                                           [--cost 4.5e-05] [--profile FILE]

A loopback audit-log API (``CursorFeed``'s shape, ``{"data": [...], "next_cursor": "<offset>"}``, of
``make_events`` records, about 220 bytes each) runs in a separate process, so that it does not
compete with the measured code for the GIL; its pages are rendered to bytes before the clock
starts. Each round runs ``run_pull`` into a fresh SQLite trace store, then the plain loop into a
fresh SQLite file; the best rounds are compared, and the median of the rounds' ratios (these
machines are noisy), and the events per CPU second of this process (the API's work not counted).

The plain loop is what a hand-written puller does: httpx GET, stdlib ``json``, an
``INSERT OR IGNORE`` executemany of the raw fields and the record as its raw payload
(``json.dumps``), no normalization, rejects, redaction or checkpoints; SQLite in WAL mode with
``synchronous=FULL``, as the trace store (``bench/run.py``'s loop, with the store's durability).
``--profile`` writes a cProfile of one more ``run_pull`` (read it with ``pstats``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run import plain_loop as run_plain_loop  # bench/run.py, beside this script

from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import parse_source
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore
from pullmode_dagster_tests.fakes import EVENT_MAPPING, make_events


def serve(events: int, page_size: int, cost: float | None, ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The API process: every page pre-rendered, served by the project's loopback server."""
    from pullmode_dagster.demo.server import LoopbackServer, Request, Response

    records = make_events(events)
    if cost is not None:
        for record in records:
            record["usage"]["cost_usd"] = cost
    pages: dict[str, bytes] = {}
    for offset in range(0, events, page_size):
        more = offset + page_size < events
        doc = {"data": records[offset : offset + page_size], "next_cursor": str(offset + page_size) if more else None}
        pages[str(offset)] = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}

    def feed(request: Request) -> Response:
        return Response(200, pages[request.arg("cursor") or "0"], dict(headers))

    server = LoopbackServer({"/events": feed}).start()
    server.requests = _Discard()  # type: ignore[assignment]  # do not keep every request of every round
    ready.put(server.url("/events"))
    while True:
        time.sleep(3600)


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: object) -> None:
        pass


def plain_loop(url: str, db: Path, events: int) -> int:
    """``bench/run.py``'s plain loop (one copy), checked for the full count."""
    n = run_plain_loop(url, db)
    assert n == events, n
    return n


def engine_pull(source: SourceConfig, db: Path, events: int) -> int:
    with SqliteTraceStore(db) as store:
        report = run_pull(source, store=store)
    assert report.written == events, report.summary()
    return report.written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--cost",
        type=float,
        help="every event's cost_usd (default 0.25); 4.5e-05, a cheap model call, measures the floats that "
        "msgspec spells otherwise than Python (events.ReprFloat)",
    )
    parser.add_argument("--profile", type=Path, help="write a cProfile of one more run_pull here")
    args = parser.parse_args()
    logging.getLogger("pullmode").setLevel(logging.WARNING)

    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Queue()
    server = spawn.Process(target=serve, args=(args.events, args.page_size, args.cost, ready), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=120)
        with tempfile.TemporaryDirectory() as tmp:
            doc = {
                "name": "bench", "adapter": "http_polling", "startDate": "2026-01-01", "schedule": "* * * * *",
                "url": url, "cursorJsonPath": "$.next_cursor", "eventsJsonPath": "$.data",
                "maxPagesPerRun": 100_000, "eventMapping": EVENT_MAPPING,
            }  # fmt: skip
            source, problems = parse_source(doc, file=Path(tmp) / "bench.yaml", adapters=ADAPTERS)
            assert source is not None, problems
            n = args.events
            plain_loop(url, Path(tmp) / "warm.db", n)  # warm up both sides: imports, connections, page cache
            engine_pull(source, Path(tmp) / "warm-engine.db", n)
            engine_times, plain_times = [], []  # (wall, CPU) seconds of each round
            for i in range(args.rounds):
                engine_times.append(timed(lambda i=i: engine_pull(source, Path(tmp) / f"engine{i}.db", n)))
                plain_times.append(timed(lambda i=i: plain_loop(url, Path(tmp) / f"plain{i}.db", n)))
                (engine_wall, engine_cpu), (plain_wall, plain_cpu) = engine_times[-1], plain_times[-1]
                print(
                    f"round {i + 1}: run_pull {n / engine_wall:,.0f}/s, plain loop {n / plain_wall:,.0f}/s "
                    f"-> {plain_wall / engine_wall:.2f} (per CPU second {n / engine_cpu:,.0f} vs {n / plain_cpu:,.0f})",
                    flush=True,
                )
            if args.profile:
                profiler = cProfile.Profile()
                profiler.runcall(engine_pull, source, Path(tmp) / "profiled.db", n)
                profiler.dump_stats(args.profile)
    finally:
        server.terminate()
        server.join()

    engine, plain = n / min(w for w, _ in engine_times), n / min(w for w, _ in plain_times)
    ratios = [p[0] / e[0] for e, p in zip(engine_times, plain_times, strict=True)]
    engine_cpu, plain_cpu = n / min(c for _, c in engine_times), n / min(c for _, c in plain_times)
    print(
        f"{n:,} events, pages of {args.page_size:,}, best of {args.rounds} rounds: "
        f"run_pull {engine:,.0f} events/s, plain loop {plain:,.0f} events/s -> ratio {engine / plain:.2f} "
        f"(median of the rounds' ratios {statistics.median(ratios):.2f}; per CPU second "
        f"{engine_cpu:,.0f} vs {plain_cpu:,.0f} -> {engine_cpu / plain_cpu:.2f})"
    )


def timed(run: Callable[[], int]) -> tuple[float, float]:
    """Wall and CPU seconds of ``run`` (this process only: the API's own work is not counted)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


if __name__ == "__main__":
    main()
