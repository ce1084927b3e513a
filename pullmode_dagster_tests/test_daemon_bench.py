"""The daemon benchmark (bench/daemon_bench.py) without the daemon: its command line, its quiet feed, and
the process-tree CPU accounting its numbers rest on. A run at its smallest size takes minutes (cron
minutes, a warm-up), too long for a test: `make bench DAEMON=1` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pullmode_dagster.demo.server import Request

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[Any]:
    sys.path.insert(0, str(BENCH))
    try:
        import daemon_bench

        yield daemon_bench
    finally:
        sys.path.remove(str(BENCH))


def test_help_runs_and_names_the_parts() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "daemon_bench.py"), "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--quiet", "--backlog", "--idle-rounds", "--smoke", "--json"):
        assert flag in done.stdout


def test_arguments(bench: Any) -> None:
    options = bench.parse_args([])
    assert options.quiet == [(60, 4), (200, 3)]  # the sizes are the defaults
    assert (options.backlog, options.idle_rounds, options.fresh) == (1_000_000, 3, True)
    options = bench.parse_args(["--quiet", "10x2", "--backlog", "50000", "--idle-rounds", "1", "--no-fresh"])
    assert (options.quiet, options.backlog, options.idle_rounds, options.fresh) == ([(10, 2)], 50_000, 1, False)
    assert bench.parse_args(["--quiet", "none", "--backlog", "0"]).quiet == []
    smoke = bench.parse_args(["--smoke"])
    assert (smoke.quiet, smoke.backlog, smoke.idle_rounds) == ([(2, 1)], 5000, 1)


def test_code_server_choices(bench: Any, tmp_path: Path) -> None:
    options = bench.parse_args([])
    assert options.code_servers == ["standing"]
    assert bench.parse_args(["--code-server", "both"]).code_servers == ["standing", "managed"]
    workspace, command = bench.workspace_file(tmp_path, "standing")
    text = workspace.read_text()
    port = text.split("port: ")[1].split()[0]
    assert "grpc_server:" in text and "location_name: pullmode" in text
    assert command[:2] == ["bash", "-c"] and "code-server start -m pullmode_dagster.definitions" in command[2]
    assert f"-p {port}" in command[2] and command[2].rstrip().endswith(f'run -w "{workspace}"')
    workspace, command = bench.workspace_file(tmp_path, "managed")
    assert "module_name: pullmode_dagster.definitions" in workspace.read_text()
    assert command[-3:] == ["run", "-w", str(workspace)]


def test_the_evaluation_bench_runs_and_reports_one_request_per_quiet_poll(tmp_path: Path) -> None:
    out = tmp_path / "evaluation.json"
    argv = ["--evaluations", "10", "--history", "30", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(BENCH / "evaluation_bench.py"), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| quiet poll with 30 runs of history |" in done.stdout
    result = json.loads(out.read_text())
    assert result["requests_per_quiet"] == 1 and result["history_runs"] == 30
    assert 0 < result["waiting_cpu_s"] < result["quiet_cpu_s"]


@pytest.mark.parametrize("spec", ["60", "60x", "x4", "60x0", "sixty x4", "60y4"])
def test_a_bad_quiet_size_is_refused(bench: Any, spec: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "daemon_bench.py"), "--quiet", f"10x2,{spec}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert f"argument --quiet: '{spec}': expected SOURCESxMINUTES, e.g. 60x4" in done.stderr


def request(path: str, **query: str) -> Request:
    return Request("GET", path, {k: [v] for k, v in query.items()}, {}, b"", f"http://127.0.0.1{path}")


def test_a_quiet_source_has_nothing_after_its_watermark_until_an_event_is_published() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from feed import FRESH, QuietFeed
    finally:
        sys.path.remove(str(BENCH))
    feed = QuietFeed(["quiet_000", FRESH])
    first = feed(request("/q/quiet_000/events")).body["data"]  # a first pull: the one old event
    assert [e["id"] for e in first] == ["quiet_000-000000"]
    watermark = first[0]["timestamp"]
    assert feed(request("/q/quiet_000/events", since=watermark)).body == {"data": [], "next_cursor": None}
    assert feed(request("/q/nope/events")).status == 404
    published = feed.publish(request("/publish", source=FRESH)).body
    news = feed(request(f"/q/{FRESH}/events", since=watermark)).body["data"]
    assert [e["id"] for e in news] == [published["id"]] == [f"{FRESH}-000001"]
    hits = feed.control(request("/stats")).body["hits"]
    assert (len(hits["quiet_000"]), len(hits[FRESH])) == (2, 1)  # the unknown path is nobody's request
    later = feed.control(request("/stats", after=str(published["published_at"]))).body["hits"]
    assert (len(later["quiet_000"]), len(later[FRESH])) == (0, 1)
    when = datetime.fromisoformat(news[0]["timestamp"])
    assert abs(when - datetime.fromtimestamp(published["published_at"], UTC)) < timedelta(milliseconds=2)


BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"
ORPHAN = (
    "import signal, subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', {code!r}], stdout=subprocess.PIPE)\n"
    "child.stdout.readline()\n"  # the grandchild ignores SIGTERM now: it outlives us
    "print('parent exits', file=sys.stderr)\n"
)
GRANDCHILD = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n" + BURN


def test_the_reaper_counts_the_cpu_of_an_orphaned_grandchild() -> None:
    """A run worker or code server that outlives the daemon is re-parented to the reaper and reaped:
    its CPU is in the total (a plain wait4 on the daemon would miss it)."""
    code = ORPHAN.format(code=GRANDCHILD.format(seconds=0.6))
    done = subprocess.run(
        [sys.executable, str(BENCH / "children.py"), "reaper", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "parent exits" in done.stderr  # the command's output goes to stderr; stdout is the report
    import json

    report = json.loads(done.stdout)
    assert report["exit_code"] == 0
    assert report["user"] + report["sys"] >= 0.6


def test_tree_cpu_sums_live_descendants_and_the_children_they_reaped(bench: Any) -> None:
    """A child that burned 0.4 s, whose child burned 0.3 s and was reaped, and whose other child
    burned 0.3 s and still lives: 1.0 s in the tree."""
    code = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {BURN.format(seconds=0.3)!r}])\n"
        f"live = subprocess.Popen([sys.executable, '-c', {(BURN.format(seconds=0.3) + 'print(1, flush=True)')!r}],"
        " stdout=subprocess.PIPE)\n"
        "live.stdout.readline()\n"
        f"exec({BURN.format(seconds=0.4)!r})\n"
        "print('burned', flush=True)\n"
        "sys.stdin.readline()\n"
        "live.kill()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "burned\n"
        assert bench.tree_cpu(child.pid) >= 1.0
        assert bench.tree_cpu(child.pid) < bench.tree_cpu(1) or child.pid == 1  # a subtree, not the machine
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)


def test_the_report_puts_each_target_beside_its_number(bench: Any) -> None:
    quiet = {
        "sources": 60, "minutes": 4, "due": 240, "polled": 153, "polls": 154, "runs": 150,
        "ticks": {"SUCCESS": 150, "SKIPPED": 300}, "tree_cpu": 445.0, "cpu_per_poll": 445.0 / 154,
        "fresh_ok": 58, "never": 0, "median_age": 70.0, "max_age": 210.0, "published": True, "latency": 95.0,
        "load": "2.0 2.0 2.0",
    }  # fmt: skip
    backlog = {
        "events": 1_000_000, "daemon_rate": 1700.0, "daemon_runs": 20, "daemon_seconds": 588.0,
        "engine_rate": 60_000.0, "full_path_rate": 40_000.0, "vs_engine": 1700 / 60_000,
        "vs_full_path": 1700 / 40_000, "load": "1.0 1.0 1.0",
    }  # fmt: skip
    idle = {
        "rounds": 3, "poll_cpu": 2.8, "import_dagster_cpu": 1.0, "cpu_ratio": 2.8, "ratio": 2.7,
        "requests_per_poll": 1, "load": "1.0 1.0 1.0",
    }  # fmt: skip
    text = bench.report([quiet], backlog, idle)
    lines = text.splitlines()
    assert "| ticks polled | 60 sources x 4 min, managed code server | 153 of 240 (64%); 150 runs" in text
    assert next(line for line in lines if line.startswith("| ticks polled")).endswith("| >= 90% | NOT met |")
    assert (
        "| CPU-s per poll | 60 sources x 4 min, managed code server | 2.89 (445 CPU-s over 154 polls, 1.85 cores) "
        "| <= 0.25 | NOT met |" in lines
    )
    assert "58 of 60 materialized within 150 s (median 70 s, max 210 s, never 0) | all | NOT met |" in text
    assert (
        "| new event stored | 60 sources x 4 min, managed code server | 95 s after it appeared | <= 120 s | met |"
        in lines
    )
    assert "**0.03x**; vs `pullmode pull` 40,000: 0.04x | >= 0.5x | NOT met |" in text
    assert "**2.80x** (2.70x by wall), 1 request(s) | <= 2x, 1 request | NOT met |" in text
    assert lines[-1].startswith("Load average (1/5/15 min) at the end of each part: quiet 60x4 (managed): 2.0 2.0 2.0;")
