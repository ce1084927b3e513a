"""The pull benchmark of issue #13: this project's full path and engine against a plain loop and dlt,
side by side in one run (ratios matter: these machines are noisy).

    make bench                                   # = .venv/bin/python bench/pull_bench.py
    .venv/bin/python bench/pull_bench.py --sizes 100000,1000000 [--no-dlt] [--no-s3] [--json OUT]
    .venv/bin/python bench/pull_bench.py --smoke --no-dlt  # CI: tiny sizes, still verified

HTTP, for each N in --sizes: a loopback audit-log API (its own process, pages of 1,000 events of ~240
bytes pre-rendered as bytes) serves N events to each contender in turn, each in its own process:
  - full path: ``pullmode pull bench_http`` as a new user runs it (fresh DAGSTER_HOME, sources dir
    and SQLite trace store; the run goes through Dagster);
  - engine: ``run_pull`` into a fresh SQLite store, no Dagster;
  - plain loop: httpx + json + sqlite3 INSERT OR IGNORE, no normalization;
  - dlt: ``rest_api`` into DuckDB, from a virtualenv the bench makes itself (.pullmode/bench-dlt-venv).
Then, at the first size: an idle poll (``pullmode pull`` again, nothing new) against a bare
``python -c "import dagster"``.

S3, for each N in --s3-sizes (moto's server in its own process, N events in a few NDJSON files):
``pullmode pull`` of an s3_polling source, its engine alone, a plain boto3 + json loop, and dlt's
``filesystem`` source (up to --s3-dlt-max events); then the listing check (a poll with 10 new keys
among 10,000 old ones).

Every contender's row count in its store is checked against N after its process exits; a mismatch
(or a failed process) is printed as FAILED and the bench exits 1. Peak RSS, user+sys CPU seconds and
wall seconds come from ``wait4`` on the contender's own process. A new contender is one function
registered with ``@contender(suite, name)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: import its siblings by path

from feed import (
    AWS_ENV,
    BUCKET,
    EVENT_MAPPING,
    EVENTS_PATH,
    EVENTS_PREFIX,
    LISTING_PREFIX,
    START_DATE,
    STATS_PATH,
    listing_keys,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
PULLMODE = (
    [str(Path(PY).parent / "pullmode")]
    if (Path(PY).parent / "pullmode").exists()
    else [PY, "-m", "pullmode_dagster.cli"]
)
DLT_VENV = REPO / ".pullmode" / "bench-dlt-venv"
DLT_PACKAGES = ["dlt[duckdb,s3]"]
HTTP_SOURCE, S3_SOURCE, LISTING_SOURCE = "bench_http", "bench_s3", "bench_s3_listing"
PAGE_SIZE = 1000
CHILD_TIMEOUT_SECONDS = 3600

FULL, ENGINE, PLAIN, DLT = "pullmode pull (full path)", "run_pull (engine alone)", "plain loop", "dlt"
S3_FULL, S3_ENGINE, S3_PLAIN, S3_DLT = (
    "pullmode pull s3_polling (full path)",
    "run_pull s3_polling (engine alone)",
    "plain boto3 + json loop",
    "dlt filesystem (NDJSON)",
)


class BenchFailure(Exception):
    """A contender failed or lost events: the bench's numbers would be worthless."""


# --- measuring one process ------------------------------------------------------------------------


@dataclass
class Proc:
    """One finished child process, as ``wait4`` saw it."""

    argv: list[str]
    returncode: int
    wall: float
    user: float
    sys: float
    rss_mb: float
    stdout: str
    stderr: str
    waits: int = 0
    """Voluntary context switches: the process blocked (network, disk: fsync)."""
    preempted: int = 0
    """Involuntary context switches: the process was ready but another held the CPU (a busy machine)."""

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    def last_json(self) -> dict[str, Any]:
        """The last JSON object line the child printed (the children's report)."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                return dict(json.loads(line))
        return {}

    def check(self, label: str) -> Proc:
        if self.returncode != 0:
            tail = "\n    ".join((self.stderr or self.stdout).strip().splitlines()[-15:])
            raise BenchFailure(f"{label}: exit {self.returncode}\n    {tail}")
        return self


def measure(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO, log: Path | None = None) -> Proc:
    """Run ``argv`` to completion, alone, and read its own peak RSS and CPU time from ``wait4``
    (RSS of the process and the children it waited for; Linux reports ru_maxrss in KiB)."""
    with ExitStack() as stack:
        if log is None:
            out, err = stack.enter_context(tempfile.TemporaryFile()), stack.enter_context(tempfile.TemporaryFile())
        else:
            log.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context((log / "stdout.txt").open("w+b"))
            err = stack.enter_context((log / "stderr.txt").open("w+b"))
        t = time.perf_counter()
        child = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        watchdog = threading.Timer(CHILD_TIMEOUT_SECONDS, child.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - t
        child.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it: tell Popen
        out.seek(0)
        err.seek(0)
        return Proc(
            argv=argv,
            returncode=child.returncode,
            wall=wall,
            user=usage.ru_utime,
            sys=usage.ru_stime,
            rss_mb=usage.ru_maxrss / 1024,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            waits=usage.ru_nvcsw,
            preempted=usage.ru_nivcsw,
        )


# --- results --------------------------------------------------------------------------------------


@dataclass
class Result:
    suite: str
    contender: str
    events: int
    rows: int | None = None
    wall: float | None = None
    cpu: float | None = None
    rss_mb: float | None = None
    loop_seconds: float | None = None
    """The child's own time after its imports (None where it cannot tell, e.g. ``pullmode pull``)."""
    status: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.events / self.wall if self.ok and self.wall else None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def verified(suite: str, name: str, n: int, proc: Proc, rows: int, **extra: Any) -> Result:
    """The contender's result, after checking that every one of the N events is in its store."""
    if rows != n:
        raise BenchFailure(f"{name}: {rows:,} rows in the store, expected {n:,}: events were lost or duplicated")
    report = proc.last_json()
    extra.update(waits=proc.waits, preempted=proc.preempted)
    extra.update({k: report[k] for k in ("written_mb", "read_mb") if k in report})
    return Result(
        suite, name, n, rows=rows, wall=proc.wall, cpu=proc.cpu, rss_mb=proc.rss_mb,
        loop_seconds=report.get("seconds"), extra=extra,
    )  # fmt: skip


def sqlite_count(db: Path, table: str, where: str = "") -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0])


# --- a run of one suite at one size ---------------------------------------------------------------


@dataclass
class Run:
    """What a contender function gets: the size, the server, a fresh directory of its own, options."""

    suite: str
    n: int
    base_url: str
    root: Path
    options: argparse.Namespace
    shared: dict[str, Any] = field(default_factory=dict)

    def workdir(self, name: str) -> Path:
        path = self.root / name.replace(" ", "_").replace("/", "_")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def measure(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> Proc:
        return measure(argv, env=env, log=self.workdir(name) / "log").check(name)

    def stats(self, **params: Any) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base_url}{STATS_PATH}", params=params).json())


ContenderFn = Callable[[Run], Result]


@dataclass(frozen=True)
class Contender:
    suite: str
    name: str
    fn: ContenderFn
    needs_dlt: bool = False


CONTENDERS: list[Contender] = []


def contender(suite: str, name: str, *, needs_dlt: bool = False) -> Callable[[ContenderFn], ContenderFn]:
    """Register ``fn`` as a contender of ``suite`` ("http" or "s3"); contenders run in this order."""

    def register(fn: ContenderFn) -> ContenderFn:
        CONTENDERS.append(Contender(suite, name, fn, needs_dlt))
        return fn

    return register


# --- environments ---------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any PULLMODE_/DAGSTER_ setting of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULLMODE_", "DAGSTER_"))}
    env.update(extra)
    return env


def new_dagster_home(path: Path) -> Path:
    """A fresh instance directory holding the repository's dagster.yaml, its storage moved inside."""
    path.mkdir(parents=True, exist_ok=True)
    text = (REPO / "dagster.yaml").read_text().replace(".pullmode/dagster", str(path / "storage"))
    (path / "dagster.yaml").write_text(text)
    return path


def write_source(directory: Path, doc: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def pullmode_env(work: Path, sources: Path) -> tuple[dict[str, str], Path]:
    """What a new user has: a fresh DAGSTER_HOME, a sources dir, a SQLite trace store file."""
    db = work / "trace_store.db"
    env = clean_env(
        DAGSTER_HOME=str(new_dagster_home(work / "dagster_home")),
        PULLMODE_SOURCES_DIR=str(sources),
        PULLMODE_TRACE_STORE_URL=f"sqlite:///{db}",
        **AWS_ENV,
    )
    return env, db


def http_source(base_url: str) -> dict[str, Any]:
    return {
        "name": HTTP_SOURCE,
        "adapter": "http_polling",
        "description": "issue #13 benchmark feed",
        "startDate": START_DATE,
        "schedule": "* * * * *",
        "url": f"{base_url}{EVENTS_PATH}",
        "params": {"limit": str(PAGE_SIZE)},
        "cursorJsonPath": "$.next_cursor",
        "incrementalParams": {"since": "${{cursor.watermark}}"},
        "eventsJsonPath": "$.data",
        "maxPagesPerRun": 100_000,  # the default (50) stops at 50k events: one pull must drain N
        "pullDeadlineSeconds": 86_400,
        "eventMapping": EVENT_MAPPING,
    }


def s3_source(endpoint: str, *, name: str = S3_SOURCE, prefix: str = EVENTS_PREFIX) -> dict[str, Any]:
    return {
        "name": name,
        "adapter": "s3_polling",
        "startDate": START_DATE,
        "schedule": "* * * * *",
        "bucket": BUCKET,
        "prefix": prefix,
        "region": AWS_ENV["AWS_DEFAULT_REGION"],
        "parser": "ndjson",
        "endpointUrl": endpoint,
        "maxFilesPerRun": 1_000_000,
        "pullDeadlineSeconds": 86_400,
        "eventMapping": EVENT_MAPPING,
    }


def child(*args: str) -> list[str]:
    return [PY, str(BENCH / "children.py"), *args]


# --- HTTP contenders ------------------------------------------------------------------------------


@contender("http", PLAIN)
def http_plain(run: Run) -> Result:
    db = run.workdir(PLAIN) / "plain.db"
    proc = run.measure(PLAIN, child("plain-http", "--url", f"{run.base_url}{EVENTS_PATH}", "--db", str(db)))
    return verified("http", PLAIN, run.n, proc, sqlite_count(db, "e"))


def engine_alone(run: Run, name: str, doc: dict[str, Any], env: dict[str, str] | None = None) -> Result:
    """``run_pull`` of the source ``doc`` in a child process, into a fresh SQLite store."""
    work = run.workdir(name)
    sources = write_source(work / "sources", doc)
    db = work / "engine.db"
    argv = child("engine", "--sources", str(sources), "--name", doc["name"], "--db", str(db))
    proc = run.measure(name, argv, env=env)
    return verified(run.suite, name, run.n, proc, sqlite_count(db, "pulled_events"))


@contender("http", ENGINE)
def http_engine(run: Run) -> Result:
    return engine_alone(run, ENGINE, http_source(run.base_url))


@contender("http", FULL)
def http_full_path(run: Run) -> Result:
    work = run.workdir(FULL)
    env, db = pullmode_env(work, write_source(work / "sources", http_source(run.base_url)))
    before = run.stats()["requests"]
    proc = run.measure(FULL, [*PULLMODE, "pull", HTTP_SOURCE], env=env)
    requests = run.stats()["requests"] - before
    rejected = sqlite_count(db, "pulled_events_rejected")
    if rejected:
        raise BenchFailure(f"{FULL}: {rejected} events rejected")
    run.shared["full_path_env"] = env
    run.shared["full_path_db"] = db
    return verified("http", FULL, run.n, proc, sqlite_count(db, "pulled_events"), requests=requests)


@contender("http", DLT, needs_dlt=True)
def http_dlt(run: Run) -> Result:
    work = run.workdir(DLT)
    db = work / "dlt.duckdb"
    env = clean_env(DLT_DATA_DIR=str(work / "dlt_data"), RUNTIME__DLTHUB_TELEMETRY="false")
    argv = [run.options.dlt_python, str(BENCH / "dlt_child.py"), "rest-api", "--base-url", run.base_url]
    proc = run.measure(
        DLT, [*argv, "--path", EVENTS_PATH.lstrip("/"), "--db", str(db), "--workdir", str(work)], env=env
    )
    return verified("http", DLT, run.n, proc, dlt_count(run, db), dlt=run.options.dlt_version)


def dlt_count(run: Run, db: Path) -> int:
    """Rows (and distinct ids) dlt landed in DuckDB, read by a process of its own after the run."""
    proc = measure([run.options.dlt_python, str(BENCH / "dlt_child.py"), "count", "--db", str(db)], env=clean_env())
    counted = proc.check("dlt count").last_json()
    if counted["distinct_ids"] != counted["rows"]:
        raise BenchFailure(f"dlt: {counted['rows']:,} rows but {counted['distinct_ids']:,} distinct ids")
    return int(counted["rows"])


def idle_poll(run: Run) -> dict[str, Any]:
    """``pullmode pull`` again once the feed is drained (nothing new), against a bare ``import dagster``:
    the fixed cost every poll pays. Median of --idle-rounds each; requests counted at the server."""
    env = run.shared["full_path_env"]
    rounds = run.options.idle_rounds
    polls: list[Proc] = []
    before = run.stats()["requests"]
    for i in range(rounds):
        polls.append(measure([*PULLMODE, "pull", HTTP_SOURCE], env=env, log=run.workdir(f"idle{i}")).check("idle poll"))
    requests = (run.stats()["requests"] - before) / rounds
    rows = sqlite_count(run.shared["full_path_db"], "pulled_events")
    if rows != run.n:
        raise BenchFailure(f"idle poll: the store holds {rows:,} rows after the idle polls, expected {run.n:,}")
    imports = {
        what: [measure([PY, "-c", f"import {what}"], env=clean_env()).check(f"import {what}") for _ in range(rounds)]
        for what in ("dagster", *([] if run.options.smoke else ["pullmode_dagster.definitions"]))
    }
    floor_home = new_dagster_home(run.workdir("floor") / "dagster_home")
    floor = child("dagster-floor", "--home", str(floor_home))
    measure(floor, env=clean_env()).check("dagster floor")  # the first run creates the instance's tables
    floors = [measure(floor, env=clean_env()).check("dagster floor") for _ in range(rounds)]

    bare = statistics.median(p.wall for p in imports["dagster"])

    def med(procs: list[Proc], attr: str) -> float | None:
        return statistics.median(getattr(p, attr) for p in procs) if procs else None

    return {
        "rounds": rounds,
        "requests_per_poll": requests,
        "poll_wall": med(polls, "wall"),
        "poll_cpu": med(polls, "cpu"),
        "poll_rss_mb": med(polls, "rss_mb"),
        "import_dagster_wall": med(imports["dagster"], "wall"),
        "import_dagster_cpu": med(imports["dagster"], "cpu"),
        "import_definitions_wall": med(imports.get("pullmode_dagster.definitions", []), "wall"),
        "floor_wall": med(floors, "wall"),
        "floor_ratio": statistics.median(p.wall for p in floors) / bare,
        "ratio": statistics.median(p.wall for p in polls) / bare,
        "cpu_ratio": statistics.median(p.cpu for p in polls) / statistics.median(p.cpu for p in imports["dagster"]),
    }


# --- S3 contenders --------------------------------------------------------------------------------


@contender("s3", S3_PLAIN)
def s3_plain(run: Run) -> Result:
    db = run.workdir(S3_PLAIN) / "plain.db"
    argv = child("plain-s3", "--endpoint", run.base_url, "--bucket", BUCKET, "--prefix", EVENTS_PREFIX)
    proc = run.measure(S3_PLAIN, [*argv, "--db", str(db)], env=clean_env(**AWS_ENV))
    return verified("s3", S3_PLAIN, run.n, proc, sqlite_count(db, "e"))


@contender("s3", S3_ENGINE)
def s3_engine(run: Run) -> Result:
    return engine_alone(run, S3_ENGINE, s3_source(run.base_url), env=clean_env(**AWS_ENV))


@contender("s3", S3_FULL)
def s3_full_path(run: Run) -> Result:
    work = run.workdir(S3_FULL)
    env, db = pullmode_env(work, write_source(work / "sources", s3_source(run.base_url)))
    proc = run.measure(S3_FULL, [*PULLMODE, "pull", S3_SOURCE], env=env)
    return verified("s3", S3_FULL, run.n, proc, sqlite_count(db, "pulled_events"))


@contender("s3", S3_DLT, needs_dlt=True)
def s3_dlt(run: Run) -> Result:
    work = run.workdir(S3_DLT)
    db = work / "dlt.duckdb"
    env = clean_env(DLT_DATA_DIR=str(work / "dlt_data"), RUNTIME__DLTHUB_TELEMETRY="false", **AWS_ENV)
    argv = [run.options.dlt_python, str(BENCH / "dlt_child.py"), "filesystem", "--endpoint", run.base_url]
    argv += ["--bucket", BUCKET, "--prefix", EVENTS_PREFIX, "--db", str(db), "--workdir", str(work)]
    proc = run.measure(S3_DLT, argv, env=env)
    return verified("s3", S3_DLT, run.n, proc, dlt_count(run, db), dlt=run.options.dlt_version)


def s3_listing_check(run: Run) -> dict[str, Any]:
    """A poll whose cursor is at the last of ``listing_old`` keys, with ``listing_new`` keys uploaded
    since: it must list only the new keys (one LIST call while they fit in a page) and read only them."""
    old, new = listing_keys(run.options.listing_old, run.options.listing_new)
    work = run.workdir("listing")
    sources = write_source(work / "sources", s3_source(run.base_url, name=LISTING_SOURCE, prefix=LISTING_PREFIX))
    db = work / "listing.db"
    argv = child("s3-listing", "--sources", str(sources), "--name", LISTING_SOURCE, "--after", old[-1])
    proc = measure([*argv, "--db", str(db)], env=clean_env(**AWS_ENV), log=work / "log").check("S3 listing check")
    report = proc.last_json()
    report.update(old_keys=len(old), new_keys=len(new), wall=proc.wall)
    expected_lists = -(-len(new) // 1000)
    problems = [
        f"{what} {got}, expected {want}"
        for what, got, want in (
            ("events written", report["rows"], len(new)),
            ("store rows", sqlite_count(db, "pulled_events"), len(new)),
            ("keys listed", report["keys_listed"], len(new)),
            ("LIST calls", report["list_calls"], expected_lists),
            ("GET calls", report["get_calls"], len(new)),
            ("cursor after", report["cursor_after"], new[-1]),
        )
        if got != want
    ]
    if problems:
        raise BenchFailure("S3 listing check: " + "; ".join(problems))
    return report


# --- servers --------------------------------------------------------------------------------------


@contextmanager
def server(*args: str) -> Iterator[str]:
    """``bench/feed.py`` in a process of its own; yields its base URL; stops it by closing its stdin."""
    proc = subprocess.Popen(
        [PY, str(BENCH / "feed.py"), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise BenchFailure(f"feed server {args}: did not start (exit {proc.wait()})")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- dlt's virtualenv -----------------------------------------------------------------------------


def ensure_dlt(venv: Path = DLT_VENV) -> tuple[str | None, str]:
    """(python, version) of a virtualenv holding dlt, made on first use; (None, reason) when it cannot be."""
    python = venv / "bin" / "python"
    probe = "import dlt, duckdb, s3fs; print(dlt.__version__)"

    def version() -> str | None:
        if not python.exists():
            return None
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    found = version()
    if found:
        return str(python), found
    print(f"dlt: installing {' '.join(DLT_PACKAGES)} into {venv} (once; never a dependency of the project)", flush=True)
    log = venv.parent / "bench-dlt-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("w") as out:
            subprocess.run([PY, "-m", "venv", "--clear", str(venv)], check=True, stdout=out, stderr=out)
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *DLT_PACKAGES]
            subprocess.run(pip, check=True, stdout=out, stderr=out, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        return None, f"{type(exc).__name__}: {lines[-1] if lines else exc} (log: {log})"
    found = version()
    return (str(python), found) if found else (None, f"dlt does not import after install (log: {log})")


# --- the run --------------------------------------------------------------------------------------


def run_suite(suite: str, n: int, base_url: str, root: Path, options: argparse.Namespace) -> tuple[Run, list[Result]]:
    run = Run(suite, n, base_url, root / f"{suite}-{n}", options)
    results: list[Result] = []
    for c in CONTENDERS:
        if c.suite != suite or (options.only and not any(w in c.name for w in options.only)):
            continue
        if c.needs_dlt and not options.dlt_python:
            results.append(Result(suite, c.name, n, status=f"skipped ({options.dlt_skip_reason})"))
            print(f"  {c.name}: skipped ({options.dlt_skip_reason})", flush=True)
            continue
        if c.needs_dlt and suite == "s3" and n > options.s3_dlt_max:
            # dlt's filesystem source reads about 1,600 events/s here: a million would take 10 minutes.
            results.append(Result(suite, c.name, n, status=f"skipped (above --s3-dlt-max {options.s3_dlt_max:,})"))
            print(f"  {c.name}: skipped (above --s3-dlt-max)", flush=True)
            continue
        print(f"  {c.name} ...", end="", flush=True)
        try:
            result = c.fn(run)
        except BenchFailure as exc:
            result = Result(suite, c.name, n, status=f"FAILED: {exc}")
        results.append(result)
        print(" " + (describe(result) if result.ok else result.status), flush=True)
    return run, results


def describe(r: Result) -> str:
    parts = [f"{r.rate:,.0f} events/s, {r.wall:.1f} s wall, {r.cpu:.1f} s CPU, peak RSS {r.rss_mb:,.0f} MB"]
    if r.loop_seconds is not None:
        parts.append(f"{r.loop_seconds:.1f} s after imports")
    parts.append(f"{r.extra.get('waits', 0):,} waits, {r.extra.get('preempted', 0):,} preemptions")
    if "written_mb" in r.extra:
        parts.append(f"{r.extra['written_mb']:,.0f} MB written")
    return "; ".join(parts) + f"; {r.rows:,} rows verified"


def ratio(results: list[Result], suite: str, n: int, a: str, b: str) -> tuple[float, float] | None:
    """A's throughput over B's: by wall time (the target's measure) and by CPU time (steadier when other
    jobs share the machine's cores)."""
    found = {r.contender: r for r in results if r.suite == suite and r.events == n and r.ok}
    if a in found and b in found:
        ra, rb = found[a], found[b]
        return ra.rate / rb.rate, rb.cpu / ra.cpu  # type: ignore[operator]
    return None


RATIOS = [
    # (suite, numerator, denominator, label, target(n) -> minimum or None)
    ("http", FULL, PLAIN, "full path / plain loop", lambda n: 0.67 if n >= 1_000_000 else 0.5),
    ("http", FULL, DLT, "full path / dlt", lambda n: 5.0 if n < 1_000_000 else None),
    ("http", ENGINE, PLAIN, "engine / plain loop", lambda n: 1.0),
    # The S3 target is a streaming throughput: read on large files (1M events: 10 files of 24 MB).
    ("s3", S3_FULL, S3_PLAIN, "S3 full path / boto3 loop", lambda n: 0.67 if n >= 1_000_000 else None),
    ("s3", S3_ENGINE, S3_PLAIN, "S3 engine / boto3 loop", lambda n: None),
    ("s3", S3_FULL, S3_DLT, "S3 full path / dlt filesystem", lambda n: None),
]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[Result], idle: dict[str, Any] | None, listing: dict[str, Any] | None) -> str:
    """The whole run as Markdown tables (what RESULTS.md and the README show)."""
    lines = [
        "| suite | N | contender | events/s | wall s | CPU s | peak RSS MB | s after imports | rows verified |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if not r.ok:
            status = r.status.splitlines()[0].replace("|", "/")  # a failure's first line; the rest is on stderr
            lines.append(f"| {r.suite} | {r.events:,} | {r.contender} | {status} | | | | | |")
            continue
        lines.append(
            f"| {r.suite} | {r.events:,} | {r.contender} | {r.rate:,.0f} | {r.wall:.1f} | {r.cpu:.1f} | "
            f"{r.rss_mb:,.0f} | {_fmt(r.loop_seconds, '.1f')} | {r.rows:,} |"
        )
    lines += [
        "",
        "| N | ratio (throughput) | by wall | by CPU | target (by wall) |",
        "| ---: | --- | ---: | ---: | --- |",
    ]
    for n in sorted({r.events for r in results}):
        for suite, a, b, label, target in RATIOS:
            values = ratio(results, suite, n, a, b)
            if values is None:
                continue
            value, by_cpu = values
            want = target(n)
            verdict = "" if want is None else (f">= {want:g}x: " + ("met" if value >= want else "NOT met"))
            lines.append(f"| {n:,} | {label} | {value:.2f}x | {by_cpu:.2f}x | {verdict} |")
    full = {r.events: r for r in results if r.contender == FULL and r.ok}
    if len(full) >= 2:
        small, large = full[min(full)], full[max(full)]
        met = large.rss_mb < 200 and large.rss_mb <= small.rss_mb * 1.05
        lines.append(
            f"| {large.events:,} | full path peak RSS | {large.rss_mb:,.0f} MB (vs {small.rss_mb:,.0f} MB at "
            f"{small.events:,}) | | < 200 MB and no higher than at {small.events:,}: {'met' if met else 'NOT met'} |"
        )
    if idle:
        lines += [
            "",
            f"Idle poll (`pullmode pull` with nothing new, median of {idle['rounds']}): "
            f"{idle['poll_wall']:.2f} s wall, {idle['poll_cpu']:.2f} s CPU, peak RSS {idle['poll_rss_mb']:,.0f} MB, "
            f'{idle["requests_per_poll"]:g} request(s) per poll; bare `python -c "import dagster"`: '
            f"{idle['import_dagster_wall']:.2f} s wall ({idle['import_dagster_cpu']:.2f} s CPU); "
            f"`import pullmode_dagster.definitions`: {_fmt(idle['import_definitions_wall'], '.2f')} s wall. "
            f"Ratio {idle['ratio']:.2f}x by wall, {idle['cpu_ratio']:.2f}x by CPU "
            f"(target <= 2x: {'met' if idle['ratio'] <= 2 else 'NOT met'} by wall). "
            f"Dagster's own floor (a no-op asset materialized in process on a SQLite instance, nothing of "
            f"ours): {idle['floor_wall']:.2f} s wall, {idle['floor_ratio']:.2f}x.",
        ]
    if listing:
        lines += [
            "",
            f"S3 listing: a poll with {listing['new_keys']} new keys among {listing['old_keys']:,} old ones made "
            f"{listing['list_calls']} LIST call(s) returning {listing['keys_listed']} keys and "
            f"{listing['get_calls']} GETs ({listing['rows']} events written, {listing['wall']:.1f} s wall); listing "
            f"the whole prefix instead takes {listing['full_listing_calls']} calls and "
            f"{listing['full_listing_keys']:,} keys.",
        ]
    return "\n".join(lines)


def load() -> str:
    """The 1/5/15-minute load averages: a busy machine (other jobs on its 2 cores) skews every number."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def durability(n: int, rounds: int = 3) -> dict[str, Any]:
    """What a durable commit costs (issue #19): ``n`` normalized events written in the engine's
    batches of 2,000 into the SQLite trace store as shipped (``synchronous=FULL``: the WAL synced
    before each commit returns, so before each checkpoint) and with the old ``NORMAL``, rounds
    alternating so the machine's drift hits both alike; the medians and their ratio."""
    from pullmode_dagster.engine.events.mapping import EventMapper, EventMapping
    from pullmode_dagster.engine.store import SqliteTraceStore
    from pullmode_dagster_tests.fakes import EVENT_MAPPING as FAKES_MAPPING
    from pullmode_dagster_tests.fakes import make_events

    events, _ = EventMapper(EventMapping(**FAKES_MAPPING), source_name="bench", organization_id="org").map_page(
        make_events(n), location="bench"
    )
    batches = [events[i : i + 2000] for i in range(0, len(events), 2000)]
    times: dict[str, list[float]] = {"FULL": [], "NORMAL": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for mode in times:
                with SqliteTraceStore(Path(tmp) / f"{mode}{i}.db") as store:
                    store._conn.execute(f"PRAGMA synchronous={mode}")  # the bench's one look inside the store
                    t = time.perf_counter()
                    for batch in batches:
                        store.write_events(batch, run_id="bench")
                    times[mode].append(time.perf_counter() - t)
                    assert store.count() == n
    full, normal = statistics.median(times["FULL"]), statistics.median(times["NORMAL"])
    return {"events": n, "batches": len(batches), "full_s": full, "normal_s": normal, "ratio": full / normal}


def parse_sizes(text: str) -> list[int]:
    return [int(s.replace("_", "")) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="HTTP sizes, comma-separated")
    parser.add_argument("--s3-sizes", default="100000,1000000", help="S3 sizes, comma-separated")
    parser.add_argument("--s3-dlt-max", type=int, default=100_000, help="run dlt's filesystem source up to this size")
    parser.add_argument("--smoke", action="store_true", help="CI: 2,000 events, small listing check, no dlt install")
    parser.add_argument("--no-dlt", action="store_true", help="leave dlt out (no virtualenv made)")
    parser.add_argument("--no-s3", action="store_true", help="leave the S3 suite out")
    parser.add_argument(
        "--idle-rounds", type=int, default=3, help="idle polls (and bare imports) to take the median of"
    )
    parser.add_argument("--listing-old", type=int, default=10_000)
    parser.add_argument("--listing-new", type=int, default=10)
    parser.add_argument("--only", help="comma-separated words: run only the contenders whose name holds one")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the stores and logs (printed path)")
    options = parser.parse_args(argv)
    if options.smoke:
        options.sizes, options.s3_sizes, options.idle_rounds = "2000", "2000", 1
        options.listing_old, options.no_dlt = 300, True
    options.only = [w.strip() for w in options.only.split(",") if w.strip()] if options.only else []
    sizes, s3_sizes = parse_sizes(options.sizes), ([] if options.no_s3 else parse_sizes(options.s3_sizes))

    options.dlt_python, options.dlt_version, options.dlt_skip_reason = None, None, "--no-dlt"
    if not options.no_dlt:
        options.dlt_python, found = ensure_dlt()
        if options.dlt_python:
            options.dlt_version = found
        else:
            options.dlt_skip_reason = found
            print(f"dlt: skipped ({found})", flush=True)

    print(
        f"pull bench: HTTP sizes {sizes}, S3 sizes {s3_sizes or 'none'}, pages of {PAGE_SIZE}; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, dlt {options.dlt_version or 'not run'}, "
        f"load average {load()}",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="pullmode-bench-"))
    results: list[Result] = []
    idle = listing = None
    failures: list[str] = []
    try:
        for i, n in enumerate(sizes):
            print(f"HTTP, {n:,} events (serving from a separate process):", flush=True)
            with server("http", "--events", str(n), "--page-size", str(PAGE_SIZE)) as url:
                run, got = run_suite("http", n, url, root, options)
                results += got
                if i == 0 and "full_path_env" in run.shared:
                    try:
                        idle = idle_poll(run)
                    except BenchFailure as exc:
                        failures.append(str(exc))
            if not options.keep:
                shutil.rmtree(run.root, ignore_errors=True)
        for i, n in enumerate(s3_sizes):
            files = max(1, min(10, n // 25_000))
            old, new = (options.listing_old, options.listing_new) if i == 0 else (0, 0)
            print(f"S3, {n:,} events in {files} NDJSON files (moto, separate process):", flush=True)
            args = ["--events", str(n), "--files", str(files), "--listing-old", str(old), "--listing-new", str(new)]
            with server("s3", *args) as url:
                run, got = run_suite("s3", n, url, root, options)
                results += got
                if i == 0 and new:
                    try:
                        listing = s3_listing_check(run)
                    except BenchFailure as exc:
                        failures.append(str(exc))
            if not options.keep:
                shutil.rmtree(run.root, ignore_errors=True)
    finally:
        if options.keep:
            print(f"stores and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    failures += [f"{r.contender} at {r.events:,}: {r.status}" for r in results if r.status.startswith("FAILED")]

    durable = durability(min(sizes or [100_000], default=100_000))
    print(f"\nload average at the end: {load()}\n")
    print(report(results, idle, listing))
    print(
        f"\nDurable commits (SQLite synchronous=FULL, as shipped, vs the old NORMAL), {durable['events']:,} events "
        f"in {durable['batches']} batches: {durable['full_s']:.2f} s vs {durable['normal_s']:.2f} s, "
        f"{durable['ratio']:.2f}x (medians of 3 alternating rounds)"
    )
    doc = {
        "dlt": options.dlt_version,
        "load_average_at_end": load(),
        "results": [{**asdict(r), "events_per_second": r.rate} for r in results],
        "idle_poll": idle,
        "s3_listing": listing,
        "durability": durable,
    }
    return finish(options.json, doc, failures)


def finish(path: Path | None, doc: dict[str, Any], failures: list[str]) -> int:
    """Write the results (with the command and the machine) to ``path``, print the failures; the exit
    code: 1 when anything failed, the numbers then being worthless."""
    if path:
        machine = {"command": " ".join([Path(PY).name, *sys.argv]), "cpus": os.cpu_count()}
        machine["python"] = platform.python_version()
        path.write_text(json.dumps({**machine, **doc, "failures": failures}, indent=2) + "\n")
    if failures:
        print("\nFAILED:\n" + "\n".join(f"  {f}" for f in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
