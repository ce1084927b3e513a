"""Retention and erasure on a large store (issue 24): `pullmode prune` and `pullmode erase` on 1M events.

    .venv/bin/python bench/retention_bench.py [--events 1000000] [--no-postgres] [--json OUT]
    .venv/bin/python bench/retention_bench.py --smoke      # CI: 20,000 events, still verified

For each store (SQLite; then Postgres, a fresh database on $PULLMODE_TEST_PG_URL's server, skipped
when it cannot be reached), the bench writes N events in the engine's batches of 2,000 (4 sources,
dated over the last 100 days, ~230-byte raw payloads as the pull bench's feed; 997 users, and one
service account behind every tenth event) and 10,000 rejected records, 10 of which name the user
erased. Then, each command a process of its own (the real CLI), timed and measured by ``wait4``:

1. ``erase --dry-run`` and ``erase`` of one user (about 1 event in 1,000, and their rejects);
2. ``erase`` of the service account (1 event in 10);
3. ``prune --dry-run`` and ``prune --older-than 50``: about half the store;
4. ``prune --older-than 25`` while a pull writes: this process writes batches of 2,000 new events
   the whole time; every batch must land, and the longest a batch waited is reported.

Every count is checked against the store afterwards (the bench exits 1 on a mismatch). Peak RSS is
the command's whole process (interpreter and imports included); ``baseline`` is the same command
on an empty store, so the difference is what the deleting costs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: import its siblings by path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feed import event_json
from pull_bench import PULLMODE, REPO, BenchFailure, Proc, measure

from pullmode_dagster.engine.events.model import EventRows
from pullmode_dagster.engine.events.rejects import Reject
from pullmode_dagster.engine.events.rules import format_timestamp
from pullmode_dagster.engine.store import open_store

SOURCES = 4
DAYS = 100
BATCH = 2_000
REJECTS = 10_000
ERASED = "user5@acme.example"
SERVICE = "svc-batch@acme.example"


def actor(i: int) -> str:
    return SERVICE if i % 10 == 0 else f"user{i % 997}@acme.example"


def rows(start: int, stop: int, n: int, now: datetime, *, prefix: str = "evt") -> Iterator[EventRows]:
    """Events ``start`` to ``stop`` of ``n`` spread evenly over the last ``DAYS`` days (oldest
    first), round-robin over the sources, in batches of ``BATCH``."""
    spacing = DAYS * 86_400 / n
    origin = now - timedelta(days=DAYS)
    for first in range(start, stop, BATCH):
        batch = []
        for i in range(first, min(first + BATCH, stop)):
            t = origin + timedelta(seconds=i * spacing)
            batch.append(
                (f"bench_{i % SOURCES}", f"{prefix}_{i:08d}", format_timestamp(t), actor(i), "messages.create",
                 "claude-sonnet-4-5", 0.001, 100, 20, event_json(i, origin=t - timedelta(seconds=i)), "org")
            )  # fmt: skip
        yield EventRows(batch)


def fill(url: str, n: int, now: datetime) -> float:
    """Write the bench's events and rejects; returns the seconds the events took."""
    with open_store(url) as store:
        t = time.perf_counter()
        for batch in rows(0, n, n, now):
            store.write_events(batch, run_id="bench")
        took = time.perf_counter() - t
        rejects = []
        for k in range(REJECTS):
            who = ERASED if k % (REJECTS // 10) == 0 else f"user{1000 + k % 997}@acme.example"
            raw = json.dumps({"id": f"bad_{k}", "created_at": "not a time", "actor": {"email": who}})
            rejects.append(Reject(f"bench_{k % SOURCES}", "event_timestamp: not a timestamp", raw, f"page {k}"))
        store.write_rejects(rejects, run_id="bench")
    return took


def count(url: str, sql: str, args: list[Any] | None = None) -> int:
    with open_store(url) as store:
        return int(store._rows(sql.replace("?", store.PARAM), args or [])[0][0])  # the bench's look inside


def run_cli(args: list[str], url: str, sources: Path) -> Proc:
    env = {**os.environ, "PULLMODE_TRACE_STORE_URL": url, "PULLMODE_SOURCES_DIR": str(sources)}
    # This checkout's code, whichever checkout the virtualenv was installed from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PULLMODE_RETENTION_DAYS", None)
    proc = measure([*PULLMODE, *args], env=env)
    if proc.returncode != 0:
        raise BenchFailure(f"pullmode {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def said(proc: Proc, pattern: str) -> int:
    """The number the command printed where ``pattern`` (a regex with one group) matches."""
    match = re.search(pattern, proc.stdout)
    if match is None:
        raise BenchFailure(f"no {pattern!r} in: {proc.stdout[-1000:]}")
    return int(match.group(1).replace(",", ""))


class Writer(threading.Thread):
    """A pull's writes, beside a prune: batches of 2,000 new events, dated today, back to back."""

    def __init__(self, url: str, now: datetime):
        super().__init__(daemon=True)
        self.url, self.now = url, now
        self.stop = threading.Event()
        self.waits: list[float] = []
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open_store(self.url) as store:
                k = 0
                while not self.stop.is_set():
                    batch = EventRows(
                        [(f"bench_{k % SOURCES}", f"new_{k:06d}_{j}", format_timestamp(self.now), "late@acme.example",
                          "messages.create", None, 0.0, 1, 1, "{}", "org") for j in range(BATCH)]
                    )  # fmt: skip
                    t = time.perf_counter()
                    self.written += store.write_events(batch, run_id="writer").written
                    self.waits.append(time.perf_counter() - t)
                    k += 1
        except BaseException as exc:  # reported by the bench, never lost in a thread
            self.error = exc


def bench_store(label: str, url: str, n: int, tmp: Path) -> dict[str, Any]:
    now = datetime.now(UTC)
    sources = tmp / f"sources-{label}"
    sources.mkdir()
    fill_s = fill(url, n, now)
    print(f"{label}: {n:,} events written in {fill_s:.1f} s", flush=True)
    results: dict[str, Any] = {"store": label, "events": n, "fill_s": round(fill_s, 1), "steps": []}

    def step(name: str, args: list[str], expect: int, pattern: str, check: str | None = None, *check_args: Any) -> Proc:
        proc = run_cli(args, url, sources)
        printed = said(proc, pattern)
        left = count(url, check, list(check_args)) if check else 0
        if printed != expect or left != 0:
            raise BenchFailure(f"{label}: {name}: printed {printed:,}, expected {expect:,}; {left:,} rows left")
        results["steps"].append(
            {"step": name, "rows": printed, "wall_s": round(proc.wall, 2), "cpu_s": round(proc.cpu, 2),
             "rss_mb": round(proc.rss_mb, 1)}
        )  # fmt: skip
        print(f"{label}: {name}: {printed:,} rows, {proc.wall:.2f} s wall, {proc.cpu:.2f} CPU s, "
              f"peak RSS {proc.rss_mb:.0f} MB", flush=True)  # fmt: skip
        return proc

    user = count(url, "SELECT count(*) FROM pulled_events WHERE actor = ?", [ERASED])
    service = count(url, "SELECT count(*) FROM pulled_events WHERE actor = ?", [SERVICE])
    user_rejects = 10
    erased = r"erase[ds]? ([\d,]+) events"
    step("erase --dry-run (one user)", ["erase", "--actor", ERASED, "--dry-run"], user, erased)
    step("erase (one user)", ["erase", "--actor", ERASED], user, erased,
         "SELECT count(*) FROM pulled_events WHERE actor = ?", ERASED)  # fmt: skip
    rejects_left = count(url, "SELECT count(*) FROM pulled_events_rejected")
    if rejects_left != REJECTS - user_rejects:
        raise BenchFailure(
            f"{label}: erase left {rejects_left:,} rejected records, expected {REJECTS - user_rejects:,}"
        )
    step("erase (service account, 1 in 10)", ["erase", "--actor", SERVICE], service, erased,
         "SELECT count(*) FROM pulled_events WHERE actor = ?", SERVICE)  # fmt: skip

    pruned = r"pruned? ([\d,]+) events"
    half = format_timestamp(datetime.combine((now - timedelta(days=50)).date(), datetime.min.time(), tzinfo=UTC))
    old = count(url, "SELECT count(*) FROM pulled_events WHERE event_timestamp < ?", [half])
    step("prune --dry-run (half)", ["prune", "--older-than", "50", "--dry-run"], old, pruned)
    step("prune (half)", ["prune", "--older-than", "50"], old, pruned,
         "SELECT count(*) FROM pulled_events WHERE event_timestamp < ?", half)  # fmt: skip

    quarter = format_timestamp(datetime.combine((now - timedelta(days=25)).date(), datetime.min.time(), tzinfo=UTC))
    old = count(url, "SELECT count(*) FROM pulled_events WHERE event_timestamp < ?", [quarter])
    writer = Writer(url, now)
    writer.start()
    time.sleep(0.5)  # the writer is in its stride
    try:
        step("prune (a quarter) while a pull writes", ["prune", "--older-than", "25"], old, pruned,
             "SELECT count(*) FROM pulled_events WHERE event_timestamp < ?", quarter)  # fmt: skip
    finally:
        writer.stop.set()
        writer.join()
    if writer.error is not None:
        raise BenchFailure(f"{label}: the writer failed beside the prune: {writer.error!r}")
    landed = count(url, "SELECT count(*) FROM pulled_events WHERE actor = 'late@acme.example'")
    if landed != writer.written or landed != len(writer.waits) * BATCH:
        raise BenchFailure(f"{label}: the writer wrote {writer.written:,} events; {landed:,} are stored")
    waits = sorted(writer.waits)
    results["writer"] = {"batches": len(waits), "max_wait_s": round(waits[-1], 3),
                         "median_s": round(waits[len(waits) // 2], 3)}  # fmt: skip
    print(f"{label}: beside it, {len(waits)} writer batches of {BATCH:,} all stored; the longest took "
          f"{waits[-1] * 1000:.0f} ms (median {waits[len(waits) // 2] * 1000:.0f} ms)", flush=True)  # fmt: skip

    with empty_store(label, tmp) as empty:
        base = run_cli(["erase", "--actor", ERASED, "--dry-run"], empty, sources)
    results["baseline_rss_mb"] = round(base.rss_mb, 1)
    print(f"{label}: baseline (the same command, empty store): peak RSS {base.rss_mb:.0f} MB", flush=True)
    return results


@contextmanager
def empty_store(label: str, tmp: Path) -> Iterator[str]:
    if label == "sqlite":
        yield f"sqlite:///{tmp}/empty.db"
        return
    from pullmode_dagster_tests.pg import fresh_database

    with fresh_database() as url:
        yield url


def postgres_reachable() -> bool:
    try:
        from pullmode_dagster_tests.pg import ADMIN_URL, connect

        connect(ADMIN_URL).close()
        return True
    except Exception:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="CI: 20,000 events")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    n = 20_000 if args.smoke else args.events
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            results.append(bench_store("sqlite", f"sqlite:///{tmp}/store.db", n, Path(tmp)))
            if not args.no_postgres and postgres_reachable():
                from pullmode_dagster_tests.pg import fresh_database

                with fresh_database() as url:
                    results.append(bench_store("postgres", url, n, Path(tmp)))
            elif not args.no_postgres:
                print("postgres: skipped (cannot reach the server)")
        except BenchFailure as exc:
            failures.append(str(exc))
            print(f"FAILED: {exc}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "failures": failures}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
