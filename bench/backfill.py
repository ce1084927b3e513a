"""A history backfill is not a cliff (issue #20): ``pullmode pull`` of N events spread over the last two
years against N events within one day, daily and hourly partitions, each as a new user runs it (a
fresh DAGSTER_HOME, sources dir and SQLite trace store; the feed in its own process).

    .venv/bin/python bench/backfill.py [--events 100000] [--partitioning daily,hourly] [--profile]

A poll records a materialization of every partition its events fall in, so two years of history is
730 daily (17,520 hourly) partitions against one or two (24) for a day. After each pull the bench
checks the store holds N rows and that Dagster shows every partition that received events as
materialized (``instance.get_materialized_partitions``). ``--profile`` runs each pull under cProfile
and prints its top functions by their own time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: import its siblings by path

from feed import T0
from pull_bench import (
    HTTP_SOURCE,
    PULLMODE,
    PY,
    Proc,
    measure,
    pullmode_env,
    server,
    sqlite_count,
    write_source,
)
from pull_bench import http_source as bench_source

SPANS = {"one day": 1.0, "two years": 730.0}


def materialized(env: dict[str, str]) -> set[str]:
    """The partitions Dagster shows materialized, read in a process of its own (the instance's home)."""
    code = (
        "import json, dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        f"    print(json.dumps(sorted(i.get_materialized_partitions(dg.AssetKey(['ingestion', {HTTP_SOURCE!r}])))))\n"
    )
    proc = measure([PY, "-c", code], env=env).check("materialized partitions")
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def expected_partitions(db: Path, partitioning: str) -> set[str]:
    """The partitions that hold events, from the store (``2026-03-01`` or ``2026-03-01-10:00``)."""
    import sqlite3

    width = 13 if partitioning == "hourly" else 10
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(f"SELECT DISTINCT substr(event_timestamp, 1, {width}) FROM pulled_events").fetchall()
    return {r[0] if width == 10 else f"{r[0][:10]}-{r[0][11:13]}:00" for r in rows}


def one(events: int, span: str, partitioning: str, root: Path, profile: bool) -> dict[str, Any]:
    days = SPANS[span]
    with server("http", "--events", str(events), "--span-days", str(days)) as base_url:
        work = root / f"{span.replace(' ', '_')}_{partitioning}"
        doc = bench_source(base_url)
        doc.update(startDate=(T0 - timedelta(days=days + 1)).date().isoformat(), partitioning=partitioning)
        env, db = pullmode_env(work, write_source(work / "sources", doc))
        argv = [*PULLMODE, "pull", HTTP_SOURCE]
        stats = work / "pull.prof"
        if profile:
            argv = [PY, "-m", "cProfile", "-o", str(stats), "-m", "pullmode_dagster.cli", "pull", HTTP_SOURCE]
        proc: Proc = measure(argv, env=env, log=work / "log").check(f"pull ({span}, {partitioning})")
    rows = sqlite_count(db, "pulled_events")
    want = expected_partitions(db, partitioning)
    shown = materialized(env)
    missing = want - shown
    result = {
        "span": span,
        "partitioning": partitioning,
        "events": events,
        "rows": rows,
        "partitions_with_events": len(want),
        "partitions_not_shown": len(missing),
        "wall_s": round(proc.wall, 2),
        "cpu_s": round(proc.cpu, 2),
        "rss_mb": round(proc.rss_mb),
    }
    if rows != events or missing:
        raise SystemExit(f"FAILED: {result}; e.g. not shown: {sorted(missing)[:5]}")
    if profile:
        import pstats

        print(f"--- {span}, {partitioning}: top 25 by own time")
        pstats.Stats(str(stats)).sort_stats("tottime").print_stats(25)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitioning", default="daily,hourly")
    parser.add_argument("--spans", default=",".join(SPANS), help="of: " + ", ".join(SPANS))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (profiles: <case>/pull.prof)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="pullmode-backfill-") as tmp:
        for partitioning in args.partitioning.split(","):
            for span in args.spans.split(","):
                results.append(one(args.events, span, partitioning, args.keep or Path(tmp), args.profile))
                print(json.dumps(results[-1]), flush=True)
    print(f"\n{args.events:,} events, `pullmode pull` (full path), load average {os.getloadavg()[0]:.1f}:")
    print("| partitioning | events dated over | partitions with events | wall s | CPU s | vs one day |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        base = next((b for b in results if b["partitioning"] == r["partitioning"] and b["span"] == "one day"), r)
        print(
            f"| {r['partitioning']} | {r['span']} | {r['partitions_with_events']:,} | {r['wall_s']:.1f} | "
            f"{r['cpu_s']:.1f} | {r['wall_s'] / base['wall_s']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
