"""Crashes: `pullmode pull` killed with SIGKILL or stopped with SIGTERM mid-pull, two pulls started at
the same moment on a fresh instance, a run whose process died, a source locked by another pull.
Real processes, a real instance in a temp DAGSTER_HOME, real loopback servers."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pullmode_dagster.cli.pull import failure_info
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.definitions import build_definitions, build_project
from pullmode_dagster.defs.names import PROCESS_TAG
from pullmode_dagster.defs.recovery import process_identity, reap_if_dead
from pullmode_dagster.defs.resources import TraceStoreResource
from pullmode_dagster.defs.sensors import PollPlanState, run_checkpoint
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine.pull import DEFAULT_BATCH_SIZE
from pullmode_dagster.engine.store import SqliteTraceStore
from pullmode_dagster.engine.store.locks import SourceBusy, source_lock
from pullmode_dagster.engine.store.postgres import PostgresTraceStore

from .bounded import LineReader
from .conftest import SourceWriter
from .dagster_helpers import Clock, Harness, cli, fast_resources, make_harness, record_run
from .documents import http_source, s3_source
from .fakes import CursorFeed, make_events
from .helpers import stored_ids, wait_for
from .pg import ADMIN_URL, connect, fresh_database
from .s3_helpers import S3Proxy, ndjson

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"
TOKEN = "tok-crash-4242"
N = 3000
FIRST_BATCH = DEFAULT_BATCH_SIZE
"""Events a pull writes (and checkpoints) in its first batch; the fakes hold what comes after it."""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/trace.db")
    monkeypatch.setenv("ACME_AUDIT_TOKEN", TOKEN)
    return home


class Gate:
    """Holds a fake's answers past a point until the test opens it: a pull is then mid-way for as long
    as the test needs, so a kill lands mid-pull by construction (not because the pull was slow enough)."""

    LIMIT = 60.0
    """A held request is answered anyway after this long: a failing test never hangs on the fake."""

    def __init__(self) -> None:
        self._open = threading.Event()

    def wait(self) -> None:
        self._open.wait(self.LIMIT)

    def open(self) -> None:
        self._open.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.open()  # before the servers stop: no answer is left held


@pytest.fixture
def slow_feed(api: LoopbackServer, gate: Gate) -> CursorFeed:
    """N events in pages of 20; the pages after the first batch wait at the gate."""
    feed = CursorFeed(make_events(N), page_size=20)

    def gated(request: Request) -> Response:
        if int(request.arg("cursor") or 0) >= FIRST_BATCH:
            gate.wait()
        return feed(request)

    api.routes["/v1/events"] = gated
    return feed


def start_pull(tmp_path: Path, name: str = "acme_audit") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pullmode_dagster.cli", "pull", name, "--workspace", str(WORKSPACE)],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr, read while waiting (a full pipe never stalls the child)."""
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def pull(tmp_path: Path, name: str = "acme_audit") -> tuple[int, str, str]:
    return finish(start_pull(tmp_path, name))


def count(tmp_path: Path) -> int:
    path = tmp_path / "trace.db"
    if not path.exists():
        return 0
    with SqliteTraceStore(path) as store:
        return store.count()


def ids_in_the_store(tmp_path: Path, source: str = "acme_audit") -> list[str]:
    """The ids of ``source`` in the trace store the pulls under ``tmp_path`` write."""
    with SqliteTraceStore(tmp_path / "trace.db") as store:
        return stored_ids(store, source)


def poller_state(name: str = "acme_audit") -> PollPlanState:
    with dg.DagsterInstance.get() as instance:
        return PollPlanState.from_json(SensorCursors(instance, WORKSPACE).get(f"{name}_poller"))


def runs(name: str = "acme_audit") -> list[dg.DagsterRun]:
    """The source's runs, oldest first."""
    with dg.DagsterInstance.get() as instance:
        return list(reversed(instance.get_runs(filters=dg.RunsFilter(tags={"pullmode/source": name}))))


def checkpoint_recorded(name: str = "acme_audit") -> bool:
    with dg.DagsterInstance.get() as instance:
        started = instance.get_runs(filters=dg.RunsFilter(tags={"pullmode/source": name}), limit=1)
        return (
            bool(started) and run_checkpoint(instance, started[0].run_id, dg.AssetKey(["ingestion", name])) is not None
        )


def test_sigkill_mid_pull_then_pull_again_stores_every_event_once_with_no_manual_step(
    home: Path, tmp_path: Path, slow_feed: CursorFeed, sources: SourceWriter, api: LoopbackServer, gate: Gate
) -> None:
    sources.write(http_source(api.url("/v1/events"), maxPagesPerRun=1000))
    victim = start_pull(tmp_path)
    # The first batch is in the store and the run recorded its checkpoint (a kill between the two
    # would leave the checkpoint behind the data, which is safe: the re-pull skips the overlap).
    wait_for(lambda: count(tmp_path) >= FIRST_BATCH and checkpoint_recorded(), timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    before = count(tmp_path)
    assert before < N, "the pull finished before it could be killed"
    gate.open()

    code, out, err = pull(tmp_path)
    assert code == 0, out + err
    assert "Traceback" not in out + err
    ids = ids_in_the_store(tmp_path)
    assert len(ids) == len(set(ids)) == N  # every event exactly once
    killed, again = runs()
    assert killed.status == dg.DagsterRunStatus.FAILURE and again.status == dg.DagsterRunStatus.SUCCESS
    with dg.DagsterInstance.get() as instance:
        failure = instance.get_records_for_run(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert "is gone (killed, out of memory or crashed)" in failure[0].event_log_entry.message
    # The killed run's checkpoint was committed: the new pull skipped at most what the killed one
    # fetched after its last checkpoint, never re-read from the beginning.
    skipped = int(out.split(" duplicates skipped")[0].rsplit(" ", 1)[1])
    assert skipped <= before - FIRST_BATCH + 20
    assert poller_state().committed.watermark == make_events(1, start=N - 1)[0]["created_at"].replace("Z", ".000000Z")


def test_sigterm_ends_the_run_with_its_checkpoint_and_the_next_pull_proceeds_at_once(
    home: Path, tmp_path: Path, slow_feed: CursorFeed, sources: SourceWriter, api: LoopbackServer, gate: Gate
) -> None:
    sources.write(http_source(api.url("/v1/events"), maxPagesPerRun=1000))
    victim = start_pull(tmp_path)
    wait_for(lambda: count(tmp_path) >= FIRST_BATCH, timeout=60)
    victim.send_signal(signal.SIGTERM)  # while it waits for a page: SIGTERM does not wait for the answer
    sent = time.monotonic()
    out, err = victim.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    gate.open()
    assert victim.returncode != 0
    assert "acme_audit: FAILED: source 'acme_audit': interrupted (SIGINT or SIGTERM); checkpoint " in out
    assert "Traceback" not in out + err
    checkpoint = poller_state().committed
    assert checkpoint.position.get("page_cursor") is not None
    assert int(checkpoint.position.get("page_cursor")) >= FIRST_BATCH
    assert set(ids_in_the_store(tmp_path)) >= {
        f"evt_{i:05d}" for i in range(int(checkpoint.position.get("page_cursor")))
    }
    assert poller_state().in_flight is None

    code, out, err = pull(tmp_path)
    assert code == 0, out + err
    ids = ids_in_the_store(tmp_path)
    assert len(ids) == len(set(ids)) == N
    assert [r.status for r in runs()] == [
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.SUCCESS,
    ]


class GatedS3(S3Proxy):
    """The files after the first batch's (50 events each) wait at the gate."""

    def __init__(self, moto_url: str, gate: Gate):
        super().__init__(moto_url)
        self.gate = gate

    def __call__(self, request: Request) -> Response:
        file = re.search(r"/audit/(\d+)\.ndjson$", request.path)
        if request.method == "GET" and file and int(file[1]) >= FIRST_BATCH // 50:
            self.gate.wait()
        return super().__call__(request)


@pytest.fixture
def slow_s3(s3: Any, moto_url: str, gate: Gate) -> Iterator[str]:
    events = make_events(N)
    for i in range(N // 50):
        s3.put_object(Bucket="audit-drops", Key=f"audit/{i:04d}.ndjson", Body=ndjson(events[i * 50 : i * 50 + 50]))
    with LoopbackServer(fallback=GatedS3(moto_url, gate)) as server:
        yield server.base_url
        gate.open()


def test_sigkill_mid_pull_of_an_s3_source(
    home: Path, tmp_path: Path, sources: SourceWriter, slow_s3: str, monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> None:
    monkeypatch.setenv("DROP_KEY_ID", "AKIACRASHKEY0001")
    monkeypatch.setenv("DROP_SECRET", "crash-secret-value-0001")
    sources.write(s3_source(slow_s3, maxFilesPerRun=1000))
    victim = start_pull(tmp_path, "audit_drop")
    wait_for(lambda: count(tmp_path) >= FIRST_BATCH, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert count(tmp_path) < N
    gate.open()

    code, out, err = pull(tmp_path, "audit_drop")
    assert code == 0, out + err
    ids = ids_in_the_store(tmp_path, "audit_drop")
    assert len(ids) == len(set(ids)) == N
    assert poller_state("audit_drop").committed.position.get("after_key") == f"audit/{N // 50 - 1:04d}.ndjson"


def test_two_pulls_started_at_once_on_a_fresh_instance_one_runs_one_is_refused(
    home: Path, tmp_path: Path, slow_feed: CursorFeed, sources: SourceWriter, api: LoopbackServer, gate: Gate
) -> None:
    sources.write(http_source(api.url("/v1/events"), maxPagesPerRun=1000))
    first, second = start_pull(tmp_path), start_pull(tmp_path)
    # The pull that runs waits at the gate until the other has ended (refused): the two overlap by
    # construction, however fast either starts. Were both pulling, neither ends and this fails.
    wait_for(lambda: first.poll() is not None or second.poll() is not None, timeout=60)
    gate.open()
    results = [finish(p) for p in (first, second)]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    outputs = "".join(out + err for _, out, err in results)
    assert "Traceback" not in outputs and "IntegrityError" not in outputs
    refused = next(out for code, out, _ in results if code == 1)
    assert refused.startswith("acme_audit: not pulled: another pull is running (pid ")
    ids = ids_in_the_store(tmp_path)
    assert len(ids) == len(set(ids)) == N
    assert len(runs()) == 1


@contextmanager
def child_until_stdin_closes(args: list[str], cwd: Path, expecting: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A child process that prints one line when ready and lives until its stdin closes: yields it
    and that line, then closes its stdin and waits for it."""
    child = subprocess.Popen(
        args,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = LineReader(child.stdout, lambda: f"exit code: {child.poll()}")
        yield child, lines.next_line(30, expecting)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


@contextmanager
def lock_holder(source: str, cwd: Path, url: str | None = None) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``source``'s lock (yielded once it holds it) until its stdin closes."""
    script = (
        "import sys\nfrom pullmode_dagster.engine.store.locks import source_lock\n"
        f"with source_lock({source!r}, url={url!r}):\n    print('held', flush=True)\n    sys.stdin.read()"
    )
    with child_until_stdin_closes([sys.executable, "-c", script], cwd, "'held' once it holds the lock") as (
        holder,
        line,
    ):
        assert line == "held"
        yield holder


def test_a_poll_run_refuses_while_another_process_holds_the_source(
    home: Path, tmp_path: Path, sources: SourceWriter, api: LoopbackServer
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(5))
    sources.write(http_source(api.url("/v1/events")))
    with lock_holder("acme_audit", tmp_path) as holder:
        code, out, _ = pull(tmp_path)
        assert code == 1
        assert out.startswith(f"acme_audit: not pulled: another pull is running (pid {holder.pid} on ")
        assert runs() == []  # refused before any run was created
        # A poll run the daemon launched meanwhile fails at once, without pulling.
        with dg.DagsterInstance.get() as instance:
            harness = make_harness(
                sources.directory, instance, Clock(datetime(2026, 3, 2, 10, 2, tzinfo=UTC)), tmp_path, "acme_audit"
            )
            result = harness.run(harness.tick(None).run_requests[0])
            assert not result.success
            message, _ = failure_info(result)
            assert message.startswith(f"source 'acme_audit': another pull is running (pid {holder.pid} on ")
        # One request: the poller's probe (the source has news); the refused run sent none.
        assert len(api.requests) == 1 and count(tmp_path) == 0
        holder.kill()
        holder.wait(timeout=10)
    code, out, _ = pull(tmp_path)  # the holder died: its lock died with it
    assert code == 0 and "acme_audit: 5 written" in out


def test_the_poller_marks_a_run_whose_process_died_failed_and_pulls_again(
    home: Path, tmp_path: Path, sources: SourceWriter, api: LoopbackServer
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(5))
    sources.write(http_source(api.url("/v1/events")))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(dead.pid)
    dead.wait(timeout=30)
    with dg.DagsterInstance.get() as instance:
        harness = make_harness(
            sources.directory, instance, Clock(datetime(2026, 3, 2, 10, 2, tzinfo=UTC)), tmp_path, "acme_audit"
        )
        first = harness.tick(None)
        request = first.run_requests[0]
        orphan = record_run(
            instance,
            harness.project.defs,
            "acme_audit_pull",
            status=dg.DagsterRunStatus.STARTED,
            tags={**request.tags, PROCESS_TAG: identity},
        )
        harness.clock.now = datetime(2026, 3, 2, 10, 5, 1, tzinfo=UTC)
        second = harness.tick(first.cursor)
        assert instance.get_run_by_id(orphan.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        assert PollPlanState.from_json(second.cursor).last_pull["status"] == "FAILURE"  # type: ignore[index]
        (retry,) = second.run_requests
        assert harness.run(retry).success and len(harness.rows()) == 5


def dead_process_identity() -> str:
    """The identity of a process of ours (this host, boot and PID namespace) that has exited."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(dead.pid)
    dead.wait(timeout=30)
    return identity


def with_field(identity: str, index: int, value: str) -> str:
    """``identity`` (host:pid:start:boot_id:pid_namespace) with one field replaced."""
    fields = identity.rsplit(":", 4)
    fields[index] = value
    return ":".join(fields)


@pytest.mark.parametrize(
    ("case", "reaped"),
    [
        ("this host, boot and PID namespace", True),
        ("another PID namespace", False),
        ("another boot", False),
        ("another host", False),
        ("PID namespace unknown where recorded", False),
        ("an older version's tag (host:pid:start)", False),
    ],
)
def test_only_a_dead_process_of_this_host_boot_and_pid_namespace_is_reaped(
    home: Path, sources: SourceWriter, api: LoopbackServer, case: str, reaped: bool
) -> None:
    """The pid is dead here every time; only where it names the same process here is the run reaped.
    Anywhere else (a container sharing the host's name, another boot) it may be alive and writing."""
    sources.write(http_source(api.url("/v1/events")))
    ours = dead_process_identity()
    make = {
        "this host, boot and PID namespace": lambda: ours,
        "another PID namespace": lambda: with_field(ours, 4, str(int(ours.rsplit(":", 1)[1]) + 1)),
        "another boot": lambda: with_field(ours, 3, "0f0f0f0f-0000-4000-8000-000000000000"),
        "another host": lambda: with_field(ours, 0, "some-other-host"),
        "PID namespace unknown where recorded": lambda: with_field(ours, 4, "?"),
        "an older version's tag (host:pid:start)": lambda: ":".join(ours.split(":")[:3]),
    }
    identity = make[case]()
    with dg.DagsterInstance.get() as instance:
        run = record_run(
            instance,
            build_definitions(sources.directory),
            "acme_audit_pull",
            status=dg.DagsterRunStatus.STARTED,
            tags={"pullmode/source": "acme_audit", "pullmode/mode": "poll", PROCESS_TAG: identity},
        )
        after = reap_if_dead(instance, run)
        assert instance.get_run_by_id(run.run_id).status == after.status  # type: ignore[union-attr]
        assert after.status == (dg.DagsterRunStatus.FAILURE if reaped else dg.DagsterRunStatus.STARTED)


IN_NEW_PID_NAMESPACE = """
import os, sys
from pullmode_dagster.defs.recovery import process_identity
# The pull's process gets a pid that names no process outside: the old check took it for dead.
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(int(sys.argv[1]) - 1))
child = os.fork()
if child == 0:
    print(process_identity(), flush=True)
    sys.stdin.read()  # alive until the test closes its stdin
    os._exit(0)
os.waitpid(child, 0)
"""


def free_pid() -> int:
    """A pid no process of this namespace has (the highest free one: the kernel hands out pids upwards)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(pid for pid in range(pid_max - 1, 300, -1) if not Path(f"/proc/{pid}").exists())


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="a new PID namespace needs root and unshare"
)
def test_a_live_run_in_another_pid_namespace_with_this_host_name_is_not_reaped(
    home: Path, tmp_path: Path, sources: SourceWriter, api: LoopbackServer
) -> None:
    """A container with host networking: same host name and boot, its own PID namespace."""
    api.routes["/v1/events"] = CursorFeed(make_events(5))
    sources.write(http_source(api.url("/v1/events")))
    pid = free_pid()
    with child_until_stdin_closes(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", IN_NEW_PID_NAMESPACE, str(pid)],
        tmp_path,
        "the identity of the process in the new PID namespace",
    ) as (_, identity):
        assert identity.split(":")[:2] == [socket.gethostname(), str(pid)] and not Path(f"/proc/{pid}").exists()
        with dg.DagsterInstance.get() as instance:
            harness = make_harness(
                sources.directory, instance, Clock(datetime(2026, 3, 2, 10, 2, tzinfo=UTC)), tmp_path, "acme_audit"
            )
            first = harness.tick(None)
            live = record_run(
                instance,
                harness.project.defs,
                "acme_audit_pull",
                status=dg.DagsterRunStatus.STARTED,
                tags={**first.run_requests[0].tags, PROCESS_TAG: identity},
            )
            harness.clock.now = datetime(2026, 3, 2, 10, 5, 1, tzinfo=UTC)
            second = harness.tick(first.cursor)
            assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
            assert second.run_requests == []
            assert second.skip_reason is not None
            assert second.skip_reason.skip_message.endswith(f"in flight: run {live.run_id} (STARTED)")
            assert len(api.requests) == 1  # the first tick's probe; the second asked nothing


@pytest.fixture
def pg_store(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh Postgres trace store for every pull of the test (Dagster's own storage stays SQLite)."""
    with fresh_database() as url:
        monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", url)
        yield url


def lock_backends(source: str, url: str) -> list[int]:
    """The Postgres sessions holding ``source``'s lock in the store at ``url``, found by the
    application name they connect with (in its database only: other tests' stores run alongside)."""
    with connect(ADMIN_URL) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s AND datname = %s",
            [f"pullmode lock {source}: %", url.rsplit("/", 1)[1]],
        ).fetchall()
    return [pid for (pid,) in rows]


class LockKiller:
    """A feed whose first request ends the session holding the source's lock before it is answered:
    the lock is lost mid-pull by construction."""

    def __init__(self, feed: CursorFeed, url: str, source: str = "acme_audit"):
        self.feed, self.url, self.source = feed, url, source
        self.terminated: list[int] = []

    def __call__(self, request: Request) -> Response:
        if not self.terminated:
            (backend,) = lock_backends(self.source, self.url)
            with connect(ADMIN_URL) as admin:  # waits (5 s at most) until the backend has ended
                assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", [backend]).fetchone() == (True,)
            self.terminated.append(backend)
        return self.feed(request)


LOST_LOCK = (
    "source 'acme_audit': lost its lock during the pull (AdminShutdown: terminating connection due to "
    "administrator command), so another pull of it may have run alongside; the store keeps each event once"
)


def test_a_lock_lost_mid_pull_is_a_warning_and_pull_all_goes_on(
    pg_store: str, sources: SourceWriter, api: LoopbackServer
) -> None:
    killer = LockKiller(CursorFeed(make_events(5)), pg_store)
    api.routes["/v1/events"] = killer
    api.routes["/v1/other"] = CursorFeed(make_events(3))
    sources.write(http_source(api.url("/v1/events")))
    sources.write(http_source(api.url("/v1/other"), name="beta_audit"))

    result = cli("pull", "--all")
    assert result.exit_code == 0, result.output
    assert killer.terminated, "the lock's session was never terminated"
    lines = result.output.splitlines()
    assert lines[0] == f"acme_audit: warning: {LOST_LOCK}"
    assert lines[1].startswith("acme_audit: 5 written, 0 duplicates skipped, 0 rejected, 1 pages")
    assert lines[2].startswith("beta_audit: 3 written, 0 duplicates skipped, 0 rejected, 1 pages")
    assert "unexpected" not in result.output
    with PostgresTraceStore(pg_store) as store:
        for source, n in (("acme_audit", 5), ("beta_audit", 3)):
            assert sorted(r["source_event_id"] for r in store.tail(source=source, limit=100)) == [
                e["id"] for e in make_events(n)
            ]
    assert [r.status for r in runs("acme_audit")] == [dg.DagsterRunStatus.SUCCESS]
    assert poller_state().in_flight is None and poller_state().committed.watermark is not None
    assert lock_backends("acme_audit", pg_store) == []  # nothing left behind


def test_a_poll_run_whose_lock_is_lost_mid_pull_succeeds_with_a_warning(
    pg_store: str, tmp_path: Path, sources: SourceWriter, api: LoopbackServer
) -> None:
    """The daemon's path: the run itself holds the lock (not re-entrantly, as under `pullmode pull`)."""
    api.routes["/v1/events"] = killer = LockKiller(CursorFeed(make_events(5)), pg_store)
    sources.write(http_source(api.url("/v1/events")))
    clock = Clock(datetime(2026, 3, 2, 10, 2, tzinfo=UTC))
    resources = {**fast_resources(tmp_path / "unused.db"), "trace_store": TraceStoreResource(url=pg_store)}
    with dg.DagsterInstance.get() as instance:
        harness = Harness(
            build_project(sources.directory, resources=resources, clock=clock), instance, clock, tmp_path, "acme_audit"
        )
        first = harness.tick(None)
        result = harness.run(first.run_requests[0])
        assert result.success and killer.terminated
        logged = [r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.WARNING]
        assert LOST_LOCK in logged, logged
        clock.now = datetime(2026, 3, 2, 10, 5, 1, tzinfo=UTC)
        second = harness.tick(first.cursor)
        assert PollPlanState.from_json(second.cursor).last_pull["status"] == "SUCCESS"  # type: ignore[index]
    with PostgresTraceStore(pg_store) as store:
        assert store.count() == 5


def test_the_lock_session_outlives_the_servers_idle_session_timeout(pg_store: str) -> None:
    """The lock's session idles for the whole pull; a server that ends idle sessions must not end it."""
    name = pg_store.rsplit("/", 1)[1]
    with connect(ADMIN_URL) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET idle_session_timeout = 200')  # ms, for new sessions
    with source_lock("acme_audit", url=pg_store):
        (backend,) = lock_backends("acme_audit", pg_store)
        # A plain session opened after the lock's, idle as long: once the server has ended it, the
        # lock's session has idled past the timeout too.
        control = connect(pg_store)
        control_pid = control.info.backend_pid
        with connect(ADMIN_URL) as admin:
            wait_for(
                lambda: admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [control_pid]).fetchone() is None
            )
            assert lock_backends("acme_audit", pg_store) == [backend]
            held = admin.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s AND granted", [backend]
            ).fetchone()
            assert held == (1,)
        control.close()
    assert lock_backends("acme_audit", pg_store) == []


COLLIDING = ("source_1999", "source_1031462")
"""Two valid source names with the same CRC32."""


def test_sources_whose_names_share_a_crc32_do_not_block_each_other(pg_store: str, tmp_path: Path) -> None:
    assert zlib.crc32(COLLIDING[0].encode()) == zlib.crc32(COLLIDING[1].encode())
    with lock_holder(COLLIDING[0], tmp_path, pg_store) as holder:
        with source_lock(COLLIDING[1], url=pg_store):
            pass  # the other name is free
        with pytest.raises(SourceBusy) as refused, source_lock(COLLIDING[0], url=pg_store):
            pass
        assert str(refused.value) == (
            f"source {COLLIDING[0]!r}: another pull is running (pid {holder.pid} on {socket.gethostname()})"
        )
