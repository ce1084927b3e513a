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
    clean_env,
    measure,
    new_dagster_home,
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


FLOOR = """
import dagster as dg
partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2026-12-01")
keys = partitions.get_partition_keys()[: {n}]

@dg.asset(partitions_def=partitions)
def floor(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    for key in keys[:-1]:
        context.log_event(dg.AssetMaterialization(asset_key="floor", partition=key, metadata={{
            "dagster/row_count": 1, "events_written": 1, "written_by_run": context.run.run_id}}))
    return dg.MaterializeResult(metadata={{"events_written": 1}})

job = dg.Definitions(assets=[floor]).get_implicit_global_asset_job_def()
with dg.DagsterInstance.get() as instance:
    assert job.execute_in_process(partition_key=keys[-1], instance=instance).success
"""
"""Dagster alone, nothing of ours: a no-op asset run in process on the same kind of fresh SQLite
instance, recording ``n`` partition materializations as a pull touching ``n`` partitions does."""


def dagster_floor(partitions: int, root: Path) -> Proc:
    home = new_dagster_home(root / f"floor_{partitions}" / "dagster_home")
    env = clean_env(DAGSTER_HOME=str(home))
    return measure([PY, "-c", FLOOR.format(n=partitions)], env=env).check(f"dagster floor ({partitions})")


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
    floor = dagster_floor(len(want), root / f"{span.replace(' ', '_')}_{partitioning}")
    result.update(floor_wall_s=round(floor.wall, 2), floor_cpu_s=round(floor.cpu, 2))
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
    print(
        "| partitioning | events dated over | partitions with events | wall s | CPU s | vs one day (wall, CPU) "
        "| Dagster alone: that many partition materializations, CPU s |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        base = next((b for b in results if b["partitioning"] == r["partitioning"] and b["span"] == "one day"), r)
        print(
            f"| {r['partitioning']} | {r['span']} | {r['partitions_with_events']:,} | {r['wall_s']:.1f} | "
            f"{r['cpu_s']:.1f} | {r['wall_s'] / base['wall_s']:.2f}x, {r['cpu_s'] / base['cpu_s']:.2f}x "
            f"| {r['floor_cpu_s']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
