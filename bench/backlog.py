"""How fast a backlog drains under the poller: a source with ``maxPagesPerRun`` at its default (50
pages of 1,000 events) and a backlog of N events, evaluated the way the daemon does (each evaluation
settles the last run and, while ``more_to_pull``, requests the next pull at once), every run
materialized in process on a real SQLite instance.

    .venv/bin/python bench/backlog.py [--events 1000000]

Prints the pulls, the compute time, and the drain rate under the daemon, whose evaluations come at
least ``minimum_interval_seconds`` (30 s) apart: a pull's run and the wait for the next evaluation
overlap, so a drain takes about max(run, 30 s) per pull. Before ``more_to_pull`` the next pull waited
for the next cron tick (a minute at best, ``* * * * *``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dagster as dg
import yaml
from pull_bench import http_source, server

SENSOR_INTERVAL = 30.0  # the pollers' minimum_interval_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    from pullmode_dagster.definitions import build_project
    from pullmode_dagster.defs.names import job_name, poller_name
    from pullmode_dagster.defs.resources import TraceStoreResource
    from pullmode_dagster.engine.store import SqliteTraceStore

    with tempfile.TemporaryDirectory() as tmp, server("http", "--events", str(args.events)) as base_url:
        work = Path(tmp)
        (work / "sources").mkdir()
        doc = http_source(base_url)
        del doc["maxPagesPerRun"], doc["pullDeadlineSeconds"]  # the defaults: 50 pages, 600 s
        (work / "sources" / "bench.yaml").write_text(yaml.safe_dump(doc))
        os.environ["DAGSTER_HOME"] = str(work)
        (work / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        db = work / "trace.db"
        now = datetime.now(UTC)
        project = build_project(
            work / "sources", resources={"trace_store": TraceStoreResource(url=f"sqlite:///{db}")}, clock=lambda: now
        )
        name = doc["name"]
        sensor = project.defs.resolve_sensor_def(poller_name(name))
        job = project.defs.resolve_job_def(job_name(name))
        cursor: str | None = None
        pulls, run_seconds = 0, []
        with dg.DagsterInstance.get() as instance:
            started = time.perf_counter()
            while True:
                result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=project.defs))
                cursor = result.cursor
                if not result.run_requests:
                    break
                request = result.run_requests[0]
                t0 = time.perf_counter()
                outcome = job.execute_in_process(
                    run_config=request.run_config,
                    instance=instance,
                    partition_key=request.partition_key,
                    tags=request.tags,
                    raise_on_error=False,
                )
                run_seconds.append(time.perf_counter() - t0)
                if not outcome.success:
                    print(f"pull {pulls + 1} failed", file=sys.stderr)
                    return 1
                pulls += 1
            total = time.perf_counter() - started
        with SqliteTraceStore(db) as store:
            stored = store.count(source=name)
    if stored != args.events:
        print(f"FAILED: {stored} events stored of {args.events}", file=sys.stderr)
        return 1
    compute = sum(run_seconds)
    daemon = sum(max(s, SENSOR_INTERVAL) for s in run_seconds)
    print(f"backlog of {args.events:,} events, maxPagesPerRun 50 (50,000 events a pull): {pulls} pulls")
    print(f"  runs: {compute:.1f} s in all ({compute / pulls:.1f} s a pull); evaluations and runs: {total:.1f} s")
    print(f"  compute-bound drain: {args.events / total:,.0f} events/s")
    print(
        f"  under the daemon (evaluations >= {SENSOR_INTERVAL:.0f} s apart): about {daemon / 60:.1f} min, "
        f"{args.events / daemon:,.0f} events/s; waiting for a one-minute cron instead: "
        f"{pulls:.0f} min, {args.events / (pulls * 60):,.0f} events/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
