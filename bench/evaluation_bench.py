"""What one poller evaluation costs in the code server, and whether that grows with the run history
(issue #20, item 4). In process, as the code server makes an evaluation: a ``SensorEvaluationContext``
holding an instance *ref* and a log key, over a fresh SQLite instance and trace store.

    .venv/bin/python bench/evaluation_bench.py                    # 200 evaluations, 5,000 runs of history
    .venv/bin/python bench/evaluation_bench.py --evaluations 50 --history 500

Two kinds of evaluation, each timed by CPU (``time.process_time``) over ``--evaluations`` rounds:
- **quiet poll**: a due tick; the probe asks the API (one request, nothing new), the poller looks for a
  poll run in flight, counts the partition's stored events and returns the runless materialization;
- **waiting**: the tick is served already; the evaluation only reads its cursor and skips.
Then ``--history`` finished poll runs of the source are added to the instance and the quiet poll is
timed again: the ratio says whether an evaluation's queries grow with the run history. The daemon's
own share (the tick it records, the materialization it stores) is in ``daemon_bench.py``'s numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: import its siblings by path

from pull_bench import REPO, load, new_dagster_home, write_source

sys.path.insert(0, str(REPO))

import dagster as dg

from pullmode_dagster.defs.names import MODE_TAG, SOURCE_TAG, poller_name
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer, Response
from pullmode_dagster.engine.cursor import CursorState

SOURCE = "quiet"


def quiet_api() -> LoopbackServer:
    server = LoopbackServer()
    server.routes["/v1/events"] = lambda request: Response(200, {"data": [], "next_cursor": None})
    return server


def cpu_per_call(fn: Callable[[], object], rounds: int) -> float:
    """Median CPU seconds of one call over ``rounds`` batches of 10 (after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    samples = []
    for _ in range(rounds // 10 or 1):
        t0 = time.process_time()
        for _ in range(10):
            fn()
        samples.append((time.process_time() - t0) / 10)
    return statistics.median(samples)


def add_history(instance: dg.DagsterInstance, runs: int) -> None:
    """``runs`` finished poll runs of the source, as its poller leaves them."""
    for i in range(runs):
        instance.add_run(
            dg.DagsterRun(
                job_name=f"{SOURCE}_pull",
                run_id=str(uuid.uuid4()),
                status=dg.DagsterRunStatus.SUCCESS,
                tags={SOURCE_TAG: SOURCE, MODE_TAG: "poll", "pullmode/pull_id": f"{SOURCE}:{i}"},
            )
        )


def measure(evaluations: int, history: int) -> dict[str, Any]:
    import os

    from pullmode_dagster.definitions import build_project

    work = Path(tempfile.mkdtemp(prefix="pullmode-evaluation-bench-"))
    with quiet_api() as api:
        write_source(
            work / "sources",
            {
                "name": SOURCE,
                "adapter": "http_polling",
                "startDate": "2026-01-01",
                "schedule": "* * * * *",
                "url": api.url("/v1/events"),
                "cursorJsonPath": "$.next_cursor",
                "incrementalParams": {"since": "${{cursor.watermark}}"},
                "eventsJsonPath": "$.data",
                "eventMapping": {"source_event_id": "$.id", "event_timestamp": "$.ts", "action": "$.op"},
            },
        )
        os.environ["PULLMODE_TRACE_STORE_URL"] = f"sqlite:///{work / 'trace_store.db'}"
        home = new_dagster_home(work / "dagster_home")
        instance = dg.DagsterInstance.from_config(str(home))
        project = build_project(work / "sources")
        sensor = project.defs.resolve_sensor_def(poller_name(SOURCE))
        committed = {"watermark": "2026-11-30T00:00:00.000000Z"}
        due = json.dumps({"committed": committed})  # no last_tick: the latest tick is due
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        waiting = PollPlanState(
            committed=CursorState.from_dict(committed), last_tick=now.strftime("%Y-%m-%dT%H:%M:%SZ")
        ).to_json()

        def evaluate(cursor: str, expect: str) -> Callable[[], object]:
            def once() -> object:
                with dg.SensorEvaluationContext(
                    instance.get_ref(), cursor=cursor, log_key=[SOURCE, "tick"], sensor_name=sensor.name
                ) as context:
                    result = sensor(context)
                assert isinstance(result, dg.SensorResult)
                got = "quiet" if result.asset_events else "waiting" if result.skip_reason else "run"
                if got != expect:
                    raise SystemExit(f"expected a {expect} evaluation, got {got}: {result}")
                return result

            return once

        requests0 = len(api.requests)
        quiet = cpu_per_call(evaluate(due, "quiet"), evaluations)
        asked = len(api.requests) - requests0
        idle = cpu_per_call(evaluate(waiting, "waiting"), evaluations)
        add_history(instance, history)
        quiet_history = cpu_per_call(evaluate(due, "quiet"), evaluations)
        instance.dispose()
    return {
        "evaluations": evaluations,
        "history_runs": history,
        "quiet_cpu_s": quiet,
        "waiting_cpu_s": idle,
        "quiet_with_history_cpu_s": quiet_history,
        "history_ratio": quiet_history / quiet,
        "requests_per_quiet": asked / (5 + (evaluations // 10 or 1) * 10),
        "load": load(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=int, default=200)
    parser.add_argument("--history", type=int, default=5000, help="finished poll runs added to the instance")
    parser.add_argument("--json", type=Path, help="also write the results here")
    options = parser.parse_args(argv)
    r = measure(options.evaluations, options.history)
    print("| evaluation (code server side) | CPU per evaluation | |")
    print("| --- | --- | --- |")
    print(f"| quiet poll (1 request, a runless materialization) | {r['quiet_cpu_s'] * 1000:.1f} ms | |")
    print(f"| waiting for the next tick | {r['waiting_cpu_s'] * 1000:.1f} ms | |")
    print(
        f"| quiet poll with {r['history_runs']:,} runs of history | {r['quiet_with_history_cpu_s'] * 1000:.1f} ms "
        f"| **{r['history_ratio']:.2f}x** the quiet poll without |"
    )
    print(f"\n{r['requests_per_quiet']:g} request(s) per quiet poll; load average {r['load']}")
    if options.json:
        options.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
