"""Reliability under injected faults: the README table.

    .venv/bin/python bench/reliability.py [--events N] [--scenario NAME]

Each scenario pulls a feed of N events (pages of 100, maxPagesPerRun 10, 3 attempts per request)
from the fault-injection server (pullmode_dagster_tests/faults.py) into a fresh SQLite store, the
way the poller commits: cursor_after after a success, the failed pull's checkpoint after a failure
(the "no checkpoint" rows commit nothing on failure, as before checkpoints existed). A source is
stuck when it has not caught up within the pull bound (1.5x the expected pulls, plus 5). Half of
all responses fail in every mix, so a page fails one time in eight and most pulls fail somewhere.
Fixed seeds: every run meets the same faults.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pullmode_dagster.engine.store import SqliteTraceStore
from pullmode_dagster_tests.fakes import make_events
from pullmode_dagster_tests.faults import (
    FAULT_MIXES,
    FaultServer,
    drive,
    expected_pulls,
    failing,
    fault_source,
    quiet_context,
)
from pullmode_dagster_tests.helpers import stored_ids

PAGE = 100
MAX_PAGES = 10
ATTEMPTS = 3
COMMAND = ".venv/bin/python bench/reliability.py"
# (mix, seed, commit checkpoints)
SCENARIOS = [
    ("status", 1, True),
    ("broken_bodies", 2, True),
    ("everything", 3, True),
    ("everything", 4, True),
    ("status", 1, False),
    ("everything", 3, False),
]


def name(mix: str, seed: int, checkpoints: bool) -> str:
    return f"{mix}-{seed}" + ("" if checkpoints else "-no-checkpoint")


def run(mix: str, seed: int, checkpoints: bool, n: int, tmp: Path) -> dict[str, object]:
    events = make_events(n)
    bound = math.ceil(1.5 * expected_pulls(n, PAGE, MAX_PAGES, failing(FAULT_MIXES[mix]), ATTEMPTS)) + 5
    started = time.perf_counter()
    with FaultServer(events, page_size=PAGE, probabilities=FAULT_MIXES[mix], seed=seed) as server:
        source = fault_source(server.url, tmp, maxPagesPerRun=MAX_PAGES, requestTimeoutSeconds=0.5)
        with SqliteTraceStore(tmp / f"{name(mix, seed, checkpoints)}.db") as store:
            result = drive(
                source,
                store,
                server,
                max_pulls=bound,
                commit_checkpoints=checkpoints,
                context=quiet_context(ATTEMPTS),
                check_every_failure=False,
            )
            ids = stored_ids(store, source.name)
    stored = set(ids)
    # Lost: before the committed cursor, yet not in the store. Behind: after it, not pulled yet.
    lost = len(server.covered(result.committed) - stored)
    behind = len(set(server.ids) - stored) - lost
    return {
        "scenario": name(mix, seed, checkpoints),
        "faults": ", ".join(f"{k} {v}" for k, v in sorted(server.injected.items(), key=lambda kv: -kv[1])),
        "injected": sum(server.injected.values()),
        "requests": server.requests,
        "pulls": f"{result.pulls} ({result.failed} failed; bound {bound})",
        "expected": n,
        "stored": len(stored),
        "duplicates": len(ids) - len(stored),
        "reread": result.duplicates,
        "lost": lost,
        "stuck": "0" if result.caught_up else f"1 ({behind:,} events behind)",
        "seconds": time.perf_counter() - started,
        "command": f"`{COMMAND} --scenario {name(mix, seed, checkpoints)}`",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--scenario", help="run only this scenario (a name from the table)")
    args = parser.parse_args()
    logging.getLogger("pullmode").setLevel(logging.ERROR)
    chosen = [s for s in SCENARIOS if args.scenario in (None, name(*s))]
    if not chosen:
        parser.error(f"unknown scenario {args.scenario!r}; one of: {', '.join(name(*s) for s in SCENARIOS)}")
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for mix, seed, checkpoints in chosen:
            row = run(mix, seed, checkpoints, args.events, Path(tmp))
            rows.append(row)
            print(f"{row['scenario']}: {row['seconds']:.1f}s", file=sys.stderr, flush=True)
    print(
        f"{args.events:,} events per scenario in pages of {PAGE}, maxPagesPerRun {MAX_PAGES}, "
        f"{ATTEMPTS} attempts per request; {time.perf_counter() - started:.0f}s in all.\n"
    )
    print(
        "| scenario | faults injected (by kind) | pulls run | events expected | events stored | duplicates "
        "| re-read (skipped) | losses | stuck sources | reproduce |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['injected']} of {r['requests']} responses: {r['faults']} | {r['pulls']} "
            f"| {r['expected']:,} | {r['stored']:,} | {r['duplicates']} | {r['reread']:,} | {r['lost']} "
            f"| {r['stuck']} | {r['command']} |"
        )
    if any(r["duplicates"] or r["lost"] for r in rows):
        sys.exit("a scenario stored an event twice or lost one")


if __name__ == "__main__":
    main()
