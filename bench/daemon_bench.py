"""Issue #20's daemon benchmarks: what polling costs under the real ``dagster-daemon``, side by side in one
run (ratios and shares matter: these machines are noisy).

    .venv/bin/python bench/daemon_bench.py                      # 60 sources x 4 min, 200 x 3, 1M backlog, idle
    .venv/bin/python bench/daemon_bench.py --quiet 10x2 --backlog 50000 --idle-rounds 1   # a small check
    .venv/bin/python bench/daemon_bench.py --smoke              # 2 sources x 1 min, 5,000 events: it still runs

Each part gets a fresh instance (a temp DAGSTER_HOME with the repository's dagster.yaml: SQLite, the
default run launcher, the queued run coordinator), a sources dir and a SQLite trace store, and runs
``dagster-daemon run -w workspace.yaml`` under a reaper (``bench/children.py reaper``) so the CPU time
of the daemon's whole tree (daemon, code server, run workers, exited ones included) can be read.

- **Quiet sources** (``--quiet NxD``): N ``http_polling`` sources on a one-minute cron, served by one
  process (``bench/feed.py quiet``): each holds one event from an hour ago, so after its first pull
  every poll asks ``since`` its watermark and gets nothing new. After a warm-up (every source polled
  once) the window is D whole minutes: N x D ticks are due; a source's tick counts as polled when a
  request of it reached its API (a quiet poll is one request), at most D per source. CPU-s per poll
  is the tree's CPU over the window (sampled from /proc at its two ends) over the polls. At the
  window's end: each source's latest materialization age (freshness: within 150 s?), the runs
  launched and the poller sensors' ticks in the window. One more source, ``fresh``, gets a new event
  in the middle of the window: the time until it is in the trace store.
- **Backlog** (``--backlog N``): N events (pages of 1,000, ``bench/feed.py http``) pulled in process
  first (``run_pull`` alone, and ``pullmode pull``, each uncapped), then by the daemon from a source
  left at its defaults (as a user writes it), timed from the daemon's first request until the store
  holds all N.
- **Idle pull** (``--idle-rounds R``): ``pullmode pull`` with nothing new against a bare
  ``python -c "import dagster"`` (bench/pull_bench.py's idle poll): CPU ratio, requests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: import its siblings by path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: pullmode_dagster_tests.helpers

from feed import EVENT_MAPPING, FRESH, STATS_PATH, quiet_url
from pull_bench import (
    BENCH,
    HTTP_SOURCE,
    PAGE_SIZE,
    PY,
    REPO,
    BenchFailure,
    Run,
    finish,
    http_engine,
    http_full_path,
    http_source,
    idle_poll,
    load,
    pullmode_env,
    server,
    write_source,
)

from pullmode_dagster_tests.helpers import free_port

DAEMON = Path(PY).with_name("dagster-daemon")
FRESHNESS_SECONDS = 150.0
"""The target: every quiet source's asset materialized within the last 150 s."""
CRON_SECONDS = 60.0
LATENCY_TARGET = CRON_SECONDS + 60.0
"""A new event upstream is stored within one cron interval plus 60 s."""
LATENCY_LIMIT = 4 * LATENCY_TARGET
"""How long the bench waits for the new event before calling it not stored."""
CPU_PER_POLL_TARGET = 0.25
POLLED_TARGET = 0.90
BACKLOG_TARGET = 0.5
IDLE_TARGET = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the daemon and its process tree --------------------------------------------------------------


def tree_cpu(root: int) -> float:
    """CPU seconds (user + sys) of ``root`` and every live descendant, each with the children it has
    reaped: the whole tree's CPU so far, exited processes included (a process's own time is in its
    parent's reaped-children total only once it is gone, so nothing counts twice)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == pid and p not in tree]
        tree.update(kids)
        frontier += kids
    return sum(cpu.get(pid, 0.0) for pid in tree)


@dataclass
class Daemon:
    """``dagster-daemon run`` under the reaper; ``stop()`` returns the whole tree's CPU seconds."""

    proc: subprocess.Popen[bytes]
    work: Path
    started: float
    cpu_total: float | None = None
    """The whole tree's CPU seconds from start to stop (the reaper's RUSAGE_CHILDREN), once stopped."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchFailure(f"dagster-daemon exited ({self.proc.returncode}): {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = (self.work / "daemon.log").read_text(errors="replace")
        return "\n    ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> float | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        report = (self.work / "reaper.json").read_text().strip().splitlines()
        if not report:
            return None
        doc = json.loads(report[-1])
        return float(doc["user"] + doc["sys"])


def workspace_file(work: Path, code_server: str) -> tuple[Path, list[str]]:
    """The workspace the daemon reads, and the command that starts it (in ``work``).

    ``standing`` (the README's production shape): the deployment runs the code server
    (``dagster code-server start``) and the workspace points at it. ``managed``: the workspace names
    the module, and the daemon starts the code server itself; it replaces that server every minute
    (Dagster reloads a managed workspace on that interval), paying a fresh import and cold caches."""
    workspace = work / "workspace.yaml"
    if code_server == "managed":
        workspace.write_text(
            "load_from:\n  - python_module:\n      module_name: pullmode_dagster.definitions\n"
            "      location_name: pullmode\n"
        )
        return workspace, [str(DAEMON), "run", "-w", str(workspace)]
    port = free_port()
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n      location_name: pullmode\n"
    )
    dagster = Path(PY).with_name("dagster")
    # The daemon starts once the server answers a health check (its definitions loaded).
    script = (
        f'"{dagster}" code-server start -m pullmode_dagster.definitions --location-name pullmode '
        f"-h 127.0.0.1 -p {port} & "
        f'until "{dagster}" api grpc-health-check -p {port} >/dev/null 2>&1; do sleep 1; done; '
        f'exec "{DAEMON}" run -w "{workspace}"'
    )
    return workspace, ["bash", "-c", script]


@contextmanager
def daemon(work: Path, env: dict[str, str], code_server: str = "standing") -> Iterator[Daemon]:
    """The real ``dagster-daemon`` over a workspace file loading ``pullmode_dagster.definitions``
    (``workspace_file``), under the reaper."""
    _, command = workspace_file(work, code_server)
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)}
    argv = [PY, str(BENCH / "children.py"), "reaper", "--", *command]
    with (work / "reaper.json").open("wb") as out, (work / "daemon.log").open("wb") as err:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    handle = Daemon(proc, work, time.time())
    try:
        yield handle
    finally:
        handle.cpu_total = handle.stop()


def wait_until(t: float, d: Daemon) -> None:
    """Sleep until epoch ``t`` (the bench waits on the clock: its windows are cron minutes)."""
    while (left := t - time.time()) > 0:
        d.check_alive()
        time.sleep(min(left, 2.0))


def stats(base_url: str, **params: Any) -> dict[str, Any]:
    return dict(httpx.get(f"{base_url}{STATS_PATH}", params=params, timeout=30).json())


def count_rows(db: Path, where: str = "", args: tuple[Any, ...] = ()) -> int:
    """Rows in the trace store (0 while it does not exist yet)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return int(conn.execute(f"SELECT count(*) FROM pulled_events {where}", args).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def instance_at(home: str) -> Any:
    import dagster as dg

    return dg.DagsterInstance.from_config(home)


# --- quiet sources --------------------------------------------------------------------------------


def quiet_source(base_url: str, name: str) -> dict[str, Any]:
    """An ``http_polling`` source as a user writes it: one-minute cron, incremental by watermark."""
    return {
        "name": name,
        "adapter": "http_polling",
        "description": "issue #20 daemon benchmark: a quiet API",
        "startDate": (datetime.now(UTC) - timedelta(days=2)).date().isoformat(),
        "schedule": "* * * * *",
        "url": quiet_url(base_url, name),
        "params": {"limit": "100"},
        "cursorJsonPath": "$.next_cursor",
        "incrementalParams": {"since": "${{cursor.watermark}}"},
        "eventsJsonPath": "$.data",
        "eventMapping": EVENT_MAPPING,
    }


def quiet_run(
    n: int, minutes: int, options: argparse.Namespace, root: Path, code_server: str = "standing"
) -> dict[str, Any]:
    """N quiet sources (and ``fresh``) under the daemon for a window of ``minutes`` cron minutes."""
    work = root / f"quiet-{n}x{minutes}-{code_server}"
    names = [f"quiet_{i:03d}" for i in range(n)]
    served = names + ([FRESH] if options.fresh else [])
    out: dict[str, Any] = {
        "sources": n,
        "minutes": minutes,
        "due": n * minutes,
        "code_server": code_server,
    }
    with server("quiet", "--sources", str(n), *(["--fresh"] if options.fresh else [])) as url:
        for name in served:
            write_source(work / "sources", quiet_source(url, name))
        env, db = pullmode_env(work, work / "sources")
        with daemon(work, env, code_server) as d:
            # Warm-up: every source's first pull stores its one old event and sets its watermark.
            while True:
                hits = stats(url)["hits"]
                warm = sum(1 for name in served if hits[name])
                if warm == len(served) or time.time() - d.started > options.warmup:
                    break
                wait_until(time.time() + 2, d)
            out.update(warmup_s=time.time() - d.started, warm=warm)
            print(f"  warm: {warm} of {len(served)} sources polled in {out['warmup_s']:.0f} s", flush=True)
            # The first pulls are runs: the window starts once they are over (their workers' CPU is
            # the warm-up's, not a quiet poll's).
            runs_done(instance_at(env["DAGSTER_HOME"]), d, time.time() + options.warmup)
            w0 = math.ceil((time.time() + 5) / CRON_SECONDS) * CRON_SECONDS
            w1 = w0 + minutes * CRON_SECONDS
            wait_until(w0, d)
            cpu0 = tree_cpu(d.pid)
            event = None
            if options.fresh:
                wait_until(w0 + (minutes // 2) * CRON_SECONDS + 20, d)  # mid-window, 20 s after a tick
                event = httpx.get(f"{url}/publish", params={"source": FRESH}, timeout=30).json()
            stored_at = None
            while time.time() < w1:
                stored_at = stored_at or fresh_stored(db, event)
                wait_until(min(w1, time.time() + 1), d)
            cpu1 = tree_cpu(d.pid)
            out.update(tree_cpu=cpu1 - cpu0, load=load())
            hits = stats(url, after=w0)["hits"]
            instance = instance_at(env["DAGSTER_HOME"])
            ages = materialization_ages(instance, names, w1)
            while event and stored_at is None and time.time() < event["published_at"] + LATENCY_LIMIT:
                stored_at = fresh_stored(db, event)
                wait_until(time.time() + 1, d)
        out["tree_cpu_total"] = d.cpu_total
        in_window = {name: [t for t in hits[name] if t < w1] for name in served}
        polled = {name: min(minutes, len(times)) for name, times in in_window.items()}
        out.update(
            polled=sum(polled[name] for name in names),
            polls=sum(polled.values()),
            requests=sum(len(times) for times in in_window.values()),
            fresh_ok=sum(1 for a in ages if a is not None and a <= FRESHNESS_SECONDS),
            never=sum(1 for a in ages if a is None),
            max_age=max((a for a in ages if a is not None), default=None),
            median_age=statistics.median([a for a in ages if a is not None])
            if any(a is not None for a in ages)
            else None,
            latency=(stored_at - event["published_at"]) if event and stored_at else None,
            published=event is not None,
            **window_activity(instance, w0, w1),
        )
        out["cpu_per_poll"] = out["tree_cpu"] / out["polls"] if out["polls"] else None
        instance.dispose()
    return out


def fresh_stored(db: Path, event: dict[str, Any] | None) -> float | None:
    """When the new event was first seen in the store (now), or None."""
    if event is None:
        return None
    found = count_rows(db, "WHERE source_name = ? AND source_event_id = ?", (FRESH, event["id"]))
    return time.time() if found else None


def materialization_ages(instance: Any, names: list[str], now: float) -> list[float | None]:
    """Seconds since each source's asset was last materialized (None: never), at ``now``."""
    from pullmode_dagster.defs.assets import asset_key

    ages: list[float | None] = []
    for name in names:
        entry = instance.get_latest_materialization_event(asset_key(name))
        ages.append(None if entry is None else max(0.0, now - entry.timestamp))
    return ages


def runs_done(instance: Any, d: Daemon, deadline: float) -> None:
    """Wait until no run is queued or in progress (or ``deadline``)."""
    import dagster as dg

    busy = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    try:
        while instance.get_runs_count(dg.RunsFilter(statuses=busy)) and time.time() < deadline:
            wait_until(time.time() + 1, d)
    finally:
        instance.dispose()


def window_activity(instance: Any, w0: float, w1: float) -> dict[str, Any]:
    """Runs created, and the poller sensors' ticks by status, between ``w0`` and ``w1``."""
    import dagster as dg

    runs = instance.get_runs_count(
        dg.RunsFilter(created_after=datetime.fromtimestamp(w0, UTC), created_before=datetime.fromtimestamp(w1, UTC))
    )
    ticks: Counter[str] = Counter()
    for state in instance.all_instigator_state():
        if state.name.endswith("_poller"):
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, after=w0, before=w1):
                ticks[tick.status.value] += 1
    return {"runs": runs, "ticks": dict(ticks)}


# --- backlog --------------------------------------------------------------------------------------


def backlog_run(n: int, options: argparse.Namespace, root: Path) -> dict[str, Any]:
    """N events drained in process (engine alone, then ``pullmode pull``) and then by the daemon."""
    with server("http", "--events", str(n), "--page-size", str(PAGE_SIZE)) as url:
        run = Run("http", n, url, root / f"backlog-{n}", options)
        print("  in process: run_pull ...", end="", flush=True)
        engine = http_engine(run)
        print(f" {engine.rate:,.0f} events/s; pullmode pull ...", end="", flush=True)
        full = http_full_path(run)
        print(f" {full.rate:,.0f} events/s; under the daemon ...", flush=True)
        work = run.workdir("daemon")
        doc = http_source(url)
        del doc["maxPagesPerRun"], doc["pullDeadlineSeconds"]  # as a user writes it: the defaults
        env, db = pullmode_env(work, write_source(work / "sources", doc))
        stored = 0
        with daemon(work, env) as d:
            deadline = d.started + options.backlog_timeout
            while stored < n and time.time() < deadline:
                wait_until(time.time() + 1, d)
                stored = count_rows(db)
            done_at = time.time()
        if stored != n:
            raise BenchFailure(f"backlog: {stored:,} of {n:,} events stored after {options.backlog_timeout:.0f} s")
        import dagster as dg

        instance = instance_at(env["DAGSTER_HOME"])
        records = instance.get_run_records(dg.RunsFilter(tags={"pullmode/source": HTTP_SOURCE}))
        instance.dispose()
    # From the first run's creation (its worker's start counts, as the in-process pulls' start does).
    seconds = done_at - min(r.create_timestamp.timestamp() for r in records)
    runs = len(records)
    return {
        "events": n,
        "daemon_rate": n / seconds,
        "daemon_seconds": seconds,
        "daemon_runs": runs,
        "daemon_tree_cpu": d.cpu_total,
        "engine_rate": engine.rate,
        "full_path_rate": full.rate,
        "vs_engine": n / seconds / engine.rate,  # type: ignore[operator]
        "vs_full_path": n / seconds / full.rate,  # type: ignore[operator]
        "load": load(),
    }


# --- idle pull ------------------------------------------------------------------------------------


def idle_run(options: argparse.Namespace, root: Path) -> dict[str, Any]:
    """pull_bench's idle poll: a drained source polled again by ``pullmode pull`` vs a bare import."""
    n = 2000
    with server("http", "--events", str(n), "--page-size", str(PAGE_SIZE)) as url:
        run = Run("http", n, url, root / "idle", options)
        http_full_path(run)
        return idle_poll(run) | {"load": load()}


# --- report ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _s(value: float | None, spec: str = ".0f", unit: str = " s") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def report(quiet: list[dict[str, Any]], backlog: dict[str, Any] | None, idle: dict[str, Any] | None) -> str:
    """One compact Markdown table, every target beside what was measured."""
    lines = ["| part | size | measured | target | |", "| --- | --- | --- | --- | --- |"]
    for q in quiet:
        size = f"{q['sources']} sources x {q['minutes']} min, {q.get('code_server', 'managed')} code server"
        share = q["polled"] / q["due"] if q["due"] else 0.0
        lines.append(
            f"| ticks polled | {size} | {q['polled']} of {q['due']} ({share:.0%}); {q['runs']} runs, "
            f"ticks {q['ticks']} | >= 90% | {verdict(share >= POLLED_TARGET)} |"
        )
        per = q["cpu_per_poll"]
        lines.append(
            f"| CPU-s per poll | {size} | {_s(per, '.2f', '')} ({q['tree_cpu']:.0f} CPU-s over {q['polls']} polls, "
            f"{q['tree_cpu'] / (q['minutes'] * CRON_SECONDS):.2f} cores) | <= {CPU_PER_POLL_TARGET} | "
            f"{verdict(per is not None and per <= CPU_PER_POLL_TARGET)} |"
        )
        lines.append(
            f"| freshness | {size} | {q['fresh_ok']} of {q['sources']} materialized within {FRESHNESS_SECONDS:.0f} s "
            f"(median {_s(q['median_age'])}, max {_s(q['max_age'])}, never {q['never']}) | all | "
            f"{verdict(q['fresh_ok'] == q['sources'])} |"
        )
        if q["published"]:
            latency = q["latency"]
            lines.append(
                f"| new event stored | {size} | "
                f"{_s(latency, '.0f', ' s after it appeared') if latency is not None else 'not stored'} "
                f"| <= {LATENCY_TARGET:.0f} s | {verdict(latency is not None and latency <= LATENCY_TARGET)} |"
            )
    if backlog:
        b = backlog
        lines.append(
            f"| backlog drain | {b['events']:,} events | daemon {b['daemon_rate']:,.0f} events/s ({b['daemon_runs']} "
            f"runs, {b['daemon_seconds']:.0f} s) vs in process {b['engine_rate']:,.0f} (`run_pull`): "
            f"**{b['vs_engine']:.2f}x**; vs `pullmode pull` {b['full_path_rate']:,.0f}: {b['vs_full_path']:.2f}x "
            f"| >= {BACKLOG_TARGET}x | {verdict(b['vs_engine'] >= BACKLOG_TARGET)} |"
        )
    if idle:
        i = idle
        ok = i["cpu_ratio"] <= IDLE_TARGET and i["requests_per_poll"] == 1
        lines.append(
            f"| idle `pullmode pull` | median of {i['rounds']} | {i['poll_cpu']:.2f} CPU-s vs "
            f'{i["import_dagster_cpu"]:.2f} for `python -c "import dagster"`: **{i["cpu_ratio"]:.2f}x** '
            f"({i['ratio']:.2f}x by wall), "
            f"{i['requests_per_poll']:g} request(s) | <= {IDLE_TARGET:g}x, 1 request | {verdict(ok)} |"
        )
    loads = [f"quiet {q['sources']}x{q['minutes']} ({q.get('code_server', 'managed')}): {q['load']}" for q in quiet]
    loads += [f"backlog: {backlog['load']}"] if backlog else []
    loads += [f"idle: {idle['load']}"] if idle else []
    return "\n".join(lines) + ("\n\nLoad average (1/5/15 min) at the end of each part: " + "; ".join(loads))


# --- the run --------------------------------------------------------------------------------------


def parse_quiet(text: str) -> list[tuple[int, int]]:
    """``60x4,200x3`` -> [(60, 4), (200, 3)]: N sources for D minutes each; ``none`` -> []."""
    if text.strip().lower() in ("", "none", "0"):
        return []
    runs = []
    for part in text.split(","):
        n, sep, d = part.strip().lower().partition("x")
        if not sep or not n.isdigit() or not d.isdigit() or int(n) < 1 or int(d) < 1:
            raise argparse.ArgumentTypeError(f"{part.strip()!r}: expected SOURCESxMINUTES, e.g. 60x4")
        runs.append((int(n), int(d)))
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quiet", type=parse_quiet, default="60x4,200x3", help="quiet runs, SOURCESxMINUTES, comma-separated; none"
    )
    parser.add_argument(
        "--code-server",
        dest="code_servers",
        type=lambda text: ["standing", "managed"] if text == "both" else [text],
        default=["standing"],
        help="standing (the deployment runs `dagster api grpc`; the default), managed (the daemon starts it from "
        "the workspace and replaces it every minute) or both, side by side",
    )
    parser.add_argument("--no-fresh", dest="fresh", action="store_false", help="no source gets new data mid-run")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds to wait for every source's first poll")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="backlog events (0: skip)")
    parser.add_argument("--backlog-timeout", type=float, default=3600.0, help="seconds the daemon gets to drain it")
    parser.add_argument(
        "--idle-rounds", type=int, default=3, help="idle pulls (and bare imports) to take the median of"
    )
    parser.add_argument("--smoke", action="store_true", help="2 sources x 1 min, a 5,000-event backlog, 1 idle round")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the instances, stores and logs (printed path)")
    options = parser.parse_args(argv)
    if options.smoke:
        options.quiet, options.backlog, options.idle_rounds = [(2, 1)], 5000, 1
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    print(
        f"daemon bench: quiet {options.quiet or 'none'}, backlog {options.backlog:,}, idle rounds "
        f"{options.idle_rounds}; {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load()}",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="pullmode-daemon-bench-"))
    quiet: list[dict[str, Any]] = []
    backlog = idle = None
    failures: list[str] = []
    try:
        for n, minutes in options.quiet:
            for code_server in options.code_servers:
                label = f"{code_server} code server"
                print(f"{n} quiet sources under dagster-daemon ({label}), a {minutes}-minute window:", flush=True)
                try:
                    quiet.append(quiet_run(n, minutes, options, root, code_server))
                except BenchFailure as exc:
                    failures.append(f"quiet {n}x{minutes} ({label}): {exc}")
        if options.backlog:
            print(f"backlog of {options.backlog:,} events:", flush=True)
            try:
                backlog = backlog_run(options.backlog, options, root)
            except BenchFailure as exc:
                failures.append(str(exc))
        if options.idle_rounds:
            print("idle pullmode pull:", flush=True)
            try:
                idle = idle_run(options, root)
            except BenchFailure as exc:
                failures.append(str(exc))
    finally:
        if options.keep:
            print(f"instances, stores and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(report(quiet, backlog, idle))
    return finish(options.json, {"quiet": quiet, "backlog": backlog, "idle_poll": idle}, failures)


if __name__ == "__main__":
    sys.exit(main())
