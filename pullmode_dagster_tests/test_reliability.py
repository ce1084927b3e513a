"""Reliability against a misbehaving API (faults.FaultServer: 429, 5xx, resets, truncated and
trickled bodies, HTML and invalid JSON under 200), pulled the way the poller commits: every event
lands exactly once, nothing is lost, catching up takes a bounded number of pulls, and it is the
failed pulls' checkpoints that make it so (without them, the same faults keep a source from catching up
within the bound).
Fixed seeds: each server meets the same faults in the same order on every run."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pullmode_dagster.defs.alerts import SENSOR_NAME
from pullmode_dagster.defs.sensors import PollPlanState, run_checkpoint, run_metadata
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.demo.vendors.openai import WORKSPACE_ID, ComplianceLogsAPI, LogFile, auth_log_record
from pullmode_dagster.engine.adapters import openai_compliance as oai
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore, TraceStore, open_store

from .conftest import SourceWriter
from .dagster_helpers import Clock, committed, failing_sources, make_harness, running_daemon
from .documents import connector_source, http_source, parsed
from .fakes import make_events
from .faults import (
    FAULT_KINDS,
    FAULT_MIXES,
    DriveResult,
    FaultServer,
    drive,
    expected_pulls,
    failing,
    fault_source,
    min_pulls,
    quiet_context,
)
from .helpers import stored_ids
from .pg import fresh_database

N = 2000
PAGE = 20
MAX_PAGES = 15
ATTEMPTS = 3

MIXES = FAULT_MIXES


def bound(mix: str) -> int:
    """Generous: half as many pulls again as expected, and a few more."""
    return math.ceil(1.5 * expected_pulls(N, PAGE, MAX_PAGES, failing(MIXES[mix]), ATTEMPTS)) + 5


def assert_exactly_once(store: TraceStore, source: str, server: FaultServer) -> None:
    ids = stored_ids(store, source)
    assert len(ids) == len(set(ids)), "an event is stored twice"
    assert store.count(source=source) == len(server.ids)
    assert set(ids) == set(server.ids), f"lost: {sorted(set(server.ids) - set(ids))[:5]}"


def last_watermark(server: FaultServer) -> str:
    return server.events[-1]["created_at"].replace("Z", ".000000Z")


def pull_to_the_end(
    store: TraceStore, tmp_path: Path, mix: str, seed: int, **kw: Any
) -> tuple[DriveResult, FaultServer]:
    server = FaultServer(make_events(N), page_size=PAGE, probabilities=MIXES[mix], seed=seed)
    with server:
        source = fault_source(server.url, tmp_path, maxPagesPerRun=MAX_PAGES, requestTimeoutSeconds=0.3)
        context = quiet_context(ATTEMPTS)
        result = drive(source, store, server, max_pulls=bound(mix), context=context, **kw)
    return result, server


# -- engine level ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("mix", "seed"), [("status", 2), ("broken_bodies", 5), ("everything", 1)])
def test_every_event_once_through_faults_and_checkpoints_are_what_catch_up(tmp_path: Path, mix: str, seed: int) -> None:
    with SqliteTraceStore(tmp_path / "with.db") as store:
        result, server = pull_to_the_end(store, tmp_path, mix, seed)
        assert result.caught_up, f"not caught up after {result.pulls} pulls: {result.errors[-1:]}"
        assert_exactly_once(store, "faulty", server)
        # Nothing was re-read: every failed pull resumed exactly at its checkpoint.
        assert (result.written, result.duplicates) == (N, 0)
        assert result.committed == CursorState(watermark=last_watermark(server))
    # The run met the faults it was built for (all but the rare trickle, surely), and pulls failed of them.
    assert set(server.injected) >= {k for k, p in MIXES[mix].items() if p >= 0.04}, server.injected
    assert result.failed >= 3 and all("gave up after 3 attempts" in e for e in result.errors)
    assert min_pulls(N, PAGE, MAX_PAGES) <= result.pulls <= bound(mix)
    # The failed pulls' checkpoints moved forward (each one committed, then resumed from).
    progress = [int(c.position.get("page_cursor") or 0) for c in result.committed_after_failure]
    assert sum(b > a for a, b in zip([0, *progress], progress, strict=False)) >= result.failed // 2
    if "429" in server.injected:
        assert 1.0 in result.sleeps  # Retry-After: 1 was honoured

    # The same faults (same seed), committing nothing on failure: the bound runs out before it catches
    # up (or, at best, it takes twice the pulls), having read its first pages again and again.
    with SqliteTraceStore(tmp_path / "without.db") as store:
        without, _ = pull_to_the_end(store, tmp_path, mix, seed, commit_checkpoints=False)
        if without.caught_up:
            assert without.pulls >= 2 * result.pulls
        else:
            assert without.pulls == bound(mix) and store.count(source="faulty") < N
        assert without.duplicates > N // 4


def test_every_event_once_through_faults_on_a_fresh_seed_quickly(tmp_path: Path) -> None:
    """The not-slow smoke test of the above: a smaller feed, one mix, checkpoints committed."""
    server = FaultServer(make_events(600), page_size=PAGE, probabilities=MIXES["everything"], seed=11)
    with server, SqliteTraceStore(tmp_path / "s.db") as store:
        source = fault_source(server.url, tmp_path, maxPagesPerRun=5, requestTimeoutSeconds=0.5)
        result = drive(source, store, server, max_pulls=40, context=quiet_context(ATTEMPTS))
        assert result.caught_up and result.failed >= 1
        assert_exactly_once(store, "faulty", server)
        assert (result.written, result.duplicates) == (600, 0)


@pytest.fixture
def pg_store() -> Iterator[TraceStore]:
    with fresh_database() as url, open_store(url) as store:
        yield store


@pytest.mark.slow
def test_every_event_once_through_faults_into_postgres(pg_store: TraceStore, tmp_path: Path) -> None:
    result, server = pull_to_the_end(pg_store, tmp_path, "everything", 5)
    assert result.caught_up and result.failed >= 3
    assert result.pulls <= bound("everything")
    assert_exactly_once(pg_store, "faulty", server)
    assert (result.written, result.duplicates) == (N, 0)
    assert result.committed == CursorState(watermark=last_watermark(server))


# -- the whole-request timeout ---------------------------------------------------------------------


def test_a_trickled_body_times_out_within_the_timeout_and_the_retry_succeeds(tmp_path: Path) -> None:
    # The body of the first response comes a byte every 0.2 s: its 4 KB would take a quarter of an hour
    # (the server gives up after 10 s).
    server = FaultServer(
        make_events(40), page_size=PAGE, script=["trickle"], trickle_interval=0.2, trickle_max_seconds=10
    )
    with server, SqliteTraceStore(tmp_path / "t.db") as store:
        source = fault_source(server.url, tmp_path, requestTimeoutSeconds=1)
        context = quiet_context(ATTEMPTS)
        started = time.monotonic()
        report = run_pull(source, store=store, context=context)
        elapsed = time.monotonic() - started
    assert report.drained and report.written == 40 and store_count(tmp_path / "t.db") == 40
    assert server.injected == {"trickle": 1} and server.requests == 3  # page 1 twice, then page 2
    (warning,) = context.logger.warnings
    assert "page 1: timed out (the whole request took longer than 1s)" in warning and "retry 1/2" in warning
    assert elapsed < 4.0  # about the timeout, not the trickle's duration


def test_a_pull_whose_every_attempt_trickles_fails_naming_the_timeout(tmp_path: Path) -> None:
    server = FaultServer(make_events(40), page_size=PAGE, script=["ok", "trickle", "trickle"], trickle_interval=0.1)
    with server, SqliteTraceStore(tmp_path / "t.db") as store:
        source = fault_source(server.url, tmp_path, requestTimeoutSeconds=0.5)
        started = time.monotonic()
        with pytest.raises(PullError, match=r"page 2: timed out .* gave up after 2 attempts") as info:
            run_pull(source, store=store, context=quiet_context(2))
        elapsed = time.monotonic() - started
        # Page 1 is stored and is the checkpoint.
        assert info.value.report.checkpoint.position.get("page_cursor") == "20"
        assert sorted(stored_ids(store, "faulty")) == server.ids[:20]
    assert elapsed < 3.0  # two attempts of about 0.5 s each, not the 2 x 5 s the server trickles


@pytest.mark.slow
def test_trickled_headers_are_cut_off_by_the_whole_request_timeout(tmp_path: Path) -> None:
    server = FaultServer(
        make_events(20), page_size=PAGE, script=["trickle_headers"], trickle_interval=0.05, trickle_max_seconds=2.0
    )
    with server, SqliteTraceStore(tmp_path / "t.db") as store:
        source = fault_source(server.url, tmp_path, requestTimeoutSeconds=0.3)
        context = quiet_context(ATTEMPTS)
        started = time.monotonic()
        report = run_pull(source, store=store, context=context)
        elapsed = time.monotonic() - started
    assert report.written == 20
    assert elapsed < 1.5, f"a 0.3 s request took {elapsed:.1f}s"


def test_a_retry_after_past_the_deadline_stops_the_pull_cleanly_and_the_next_resumes(tmp_path: Path) -> None:
    server = FaultServer(make_events(100), page_size=PAGE, script=["ok", "429"], retry_after="3600")
    with server, SqliteTraceStore(tmp_path / "d.db") as store:
        source = fault_source(server.url, tmp_path, pullDeadlineSeconds=30)
        context = quiet_context(ATTEMPTS)
        report = run_pull(source, store=store, context=context)
        assert (report.stopped, report.drained, report.written) == ("deadline", False, 20)
        assert report.cursor_after.position.get("page_cursor") == "20" and context.sleep == []  # no wait taken
        resumed = run_pull(source, store=store, start=report.cursor_after, context=quiet_context(ATTEMPTS))
        assert (resumed.drained, resumed.written, resumed.duplicates) == (True, 80, 0)
        assert_exactly_once(store, "faulty", server)


# What the deadline cuts short: a clean stop only before a request, a failure after one that failed.
GAVE_UP_AT_THE_DEADLINE = (
    r"gave up after \d+ attempts: a retry in \d+\.\ds would pass the pull's deadline \(pullDeadlineSeconds\)"
)


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A URL whose host accepts every connection (the kernel's backlog) and never answers."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/events"


def test_a_host_that_never_answers_fails_the_pull_at_its_deadline_and_the_checkpoint_holds(
    silent_listener: str, tmp_path: Path
) -> None:
    # Retries of 0.4 s each fit a 1 s deadline about twice: the attempt whose retry does not fit is
    # the last, and the pull fails with its error. A clean stop here would report a vendor down for
    # the whole deadline as a successful pull of nothing, on every pull.
    start = CursorState(watermark="2026-03-01T00:00:00.000000Z")
    with SqliteTraceStore(tmp_path / "n.db") as store:
        source = fault_source(silent_listener, tmp_path, requestTimeoutSeconds=0.4, pullDeadlineSeconds=1)
        context = quiet_context(50)
        with pytest.raises(PullError) as failed:
            run_pull(source, store=store, start=start, context=context)
        assert store.count(source="faulty") == 0
    assert re.fullmatch(
        rf"source 'faulty': page 1: timed out.* from {re.escape(silent_listener)}, {GAVE_UP_AT_THE_DEADLINE}",
        str(failed.value),
    ), str(failed.value)
    assert failed.value.report.checkpoint == start and failed.value.report.stopped is None
    assert len(context.logger.warnings) >= 1  # it was retried while a retry fit


# -- streamed downloads: the same whole-request timeout -------------------------------------------

OAI_KEY = "sk-oai-stream-test-key"


def openai_files(vendor: ComplianceLogsAPI, count: int, records: int) -> list[LogFile]:
    """``count`` AUTH_LOG files of ``records`` events each, an hour apart."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        vendor.add_file(
            "AUTH_LOG",
            [
                auth_log_record(f"auth_{n}_{i:04d}", t0 + timedelta(minutes=i), email="a@acme.example")
                for i in range(records)
            ],
            end_time=t0 + timedelta(hours=n + 1),
        )
        for n in range(count)
    ]


def openai_fault_source(
    vendor: ComplianceLogsAPI, directory: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> SourceConfig:
    monkeypatch.setenv("PULLMODE_OPENAI_COMPLIANCE_BASE_URL", vendor.base_url)
    monkeypatch.setenv("OAI_STREAM_KEY", OAI_KEY)
    credentials = {"api_key": {"env": "OAI_STREAM_KEY"}}
    stream = {"workspaceId": WORKSPACE_ID, "eventTypes": ["AUTH_LOG"], "schedule": "*/15 * * * *"}
    return parsed(connector_source("openai_compliance", "streamed", credentials, **{**stream, **overrides}), directory)


def test_a_trickled_file_download_fails_at_the_whole_request_timeout_naming_the_file_and_the_checkpoint_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second file's signed URL leads to a host that sends its headers at once, then a byte every
    # 0.3 s: each read arrives well within a per-read timeout, the whole body would take an hour (the
    # host gives up after 20 s). The pull's deadline (1 s) passes while it trickles.
    trickler = FaultServer(make_events(200), page_size=200, script=["trickle"], trickle_interval=0.3)
    trickler.trickle_max_seconds = 20
    with ComplianceLogsAPI(OAI_KEY) as vendor, trickler, SqliteTraceStore(tmp_path / "s.db") as store:
        read, stuck = openai_files(vendor, 2, 3)
        signed = vendor.storage.url
        monkeypatch.setattr(vendor.storage, "url", lambda path: trickler.url if stuck.id in path else signed(path))
        source = openai_fault_source(vendor, tmp_path, monkeypatch, requestTimeoutSeconds=1.5, pullDeadlineSeconds=1)
        started = time.monotonic()
        with pytest.raises(PullError) as failed:
            run_pull(source, store=store, context=quiet_context(ATTEMPTS))
        elapsed = time.monotonic() - started
        assert str(failed.value) == (
            f"source 'streamed': AUTH_LOG file {stuck.file_name}: the download broke off: ReadTimeout: the whole "
            "request took longer than 1.5s; the file is read again by the next pull"
        )
        assert elapsed < 10, f"held for {elapsed:.1f}s by a trickle the host keeps up for 20 s"
        assert trickler.injected == {"trickle": 1}  # the status was final: the body is not tried again
        # The checkpoint holds at the file before: its events are stored, the trickled file's are not.
        checkpoint = failed.value.report.checkpoint
        assert checkpoint.position == {"streams": {"AUTH_LOG": {"after": "2026-01-01T00:00:00Z", "done": [read.id]}}}
        assert sorted(stored_ids(store, "streamed")) == [f"auth_0_{i:04d}" for i in range(3)]

        # The file host recovers: the next pull reads the file from the checkpoint, once.
        monkeypatch.setattr(vendor.storage, "url", signed)
        vendor.api.requests.clear()
        resumed = run_pull(source, store=store, start=checkpoint, context=quiet_context(ATTEMPTS))
        assert vendor.downloads() == [stuck.id] and (resumed.written, resumed.duplicates) == (3, 0)
        assert sorted(stored_ids(store, "streamed")) == [f"auth_{n}_{i:04d}" for n in range(2) for i in range(3)]


def test_a_file_host_trickling_its_headers_fails_the_pull_at_its_deadline_and_the_checkpoint_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second file's host sends its status line and headers a byte every 0.2 s, every time: each
    # attempt is cut off at the whole-request timeout (0.4 s), and the one whose retry would pass the
    # deadline (1 s) fails the pull. It used to end "more to pull, stopped at the deadline": a success.
    trickler = FaultServer(make_events(20), page_size=20, probabilities={"trickle_headers": 1.0}, trickle_interval=0.2)
    with ComplianceLogsAPI(OAI_KEY) as vendor, trickler, SqliteTraceStore(tmp_path / "h.db") as store:
        read, stuck = openai_files(vendor, 2, 3)
        signed = vendor.storage.url
        monkeypatch.setattr(vendor.storage, "url", lambda path: trickler.url if stuck.id in path else signed(path))
        source = openai_fault_source(vendor, tmp_path, monkeypatch, requestTimeoutSeconds=0.4, pullDeadlineSeconds=1)
        with pytest.raises(PullError) as failed:
            run_pull(source, store=store, context=quiet_context(50))
        where = re.escape(f"{source.scope_url()}/logs/{stuck.id}")  # type: ignore[attr-defined]
        assert re.fullmatch(
            rf"source 'streamed': AUTH_LOG file {re.escape(stuck.file_name)}: timed out \(the whole request took "
            rf"longer than 0.4s\) from {where}, {GAVE_UP_AT_THE_DEADLINE}",
            str(failed.value),
        ), str(failed.value)
        assert trickler.injected["trickle_headers"] >= 2  # retried while a retry fit
        # The checkpoint holds at the file before: its events are stored, the stuck file's are not.
        checkpoint = failed.value.report.checkpoint
        assert checkpoint.position == {"streams": {"AUTH_LOG": {"after": "2026-01-01T00:00:00Z", "done": [read.id]}}}
        assert sorted(stored_ids(store, "streamed")) == [f"auth_0_{i:04d}" for i in range(3)]


def test_a_large_file_whose_pages_take_long_to_store_is_not_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The body (about 400 KB, read in several chunks) arrives at once; what takes time is the pull's
    # own work on its pages (0.25 s each here, 2.5 s for the file). That is not the request's time:
    # only waiting on the host is.
    monkeypatch.setattr(oai, "RECORDS_PER_PAGE", 100)
    with ComplianceLogsAPI(OAI_KEY) as vendor, SqliteTraceStore(tmp_path / "s.db") as store:
        (file,) = openai_files(vendor, 1, 1000)
        source = openai_fault_source(vendor, tmp_path, monkeypatch, requestTimeoutSeconds=1)
        busy: list[float] = []

        def slow_page(page: Any, report: Any) -> None:
            started = time.monotonic()
            time.sleep(0.25)  # work on the page, not synchronization
            busy.append(time.monotonic() - started)

        report = run_pull(source, store=store, context=quiet_context(ATTEMPTS), on_page=slow_page)
    assert sum(busy) > 2 * 1  # the pull spent twice the request's timeout on the file's pages
    assert (report.written, report.files, report.drained) == (1000, 1, True)
    assert report.cursor_after.position["streams"]["AUTH_LOG"]["done"] == [file.id]


def store_count(path: Path) -> int:
    with SqliteTraceStore(path) as store:
        return store.count()


def test_the_fault_server_is_deterministic_and_bounded(tmp_path: Path) -> None:
    mix = {k: 0.05 for k in FAULT_KINDS if not k.startswith("trickle") and k != "slow"}
    logs = []
    for _ in range(2):
        server = FaultServer(make_events(200), page_size=PAGE, probabilities=mix, seed=9, max_requests=12)
        with server, SqliteTraceStore(tmp_path / f"{len(logs)}.db") as store:
            source = fault_source(server.url, tmp_path, maxPagesPerRun=100)
            result = drive(source, store, server, max_pulls=20, context=quiet_context(ATTEMPTS))
        logs.append((server.log, dict(server.injected), result.pulls, result.failed))
    assert logs[0] == logs[1]
    log = logs[0][0]
    # The request budget ends it: past 12 requests every answer is a 410, which is not retried.
    assert server.requests > 12 and not result.caught_up
    assert "HTTP 410" in result.errors[-1]
    assert sum(server.injected.values()) == sum(1 for fate, _ in log if fate not in ("ok", "exhausted"))


# -- in Dagster: the poller sensor and real runs ----------------------------------------------------

T = datetime(2026, 3, 2, 10, 2, 30, tzinfo=UTC)


@pytest.mark.slow
def test_the_poller_commits_failed_runs_checkpoints_and_catches_up(
    sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-reliability-1")
    n, max_pages = 400, 4
    # fast_resources: 2 attempts per request. A third of responses fail: a page fails one time in 9.
    mix = {"429": 0.06, "503": 0.06, "reset": 0.06, "truncated": 0.06, "html": 0.05, "invalid_json": 0.05}
    limit = math.ceil(1.5 * expected_pulls(n, PAGE, max_pages, failing(mix), 2)) + 3
    server = FaultServer(make_events(n), page_size=PAGE, probabilities=mix, seed=21, retry_after="0")
    with server, dg.instance_for_test() as instance:
        sources.write(
            http_source(
                server.url,
                maxPagesPerRun=max_pages,
                requestTimeoutSeconds=5,
                incrementalParams={"created_after": "${{cursor.watermark}}"},
                probe=False,  # every tick a run: this is about the runs' checkpoints, not the probe
            )
        )
        harness = make_harness(sources.directory, instance, Clock(T), tmp_path, "acme_audit")
        key = dg.AssetKey(["ingestion", "acme_audit"])
        cursor: str | None = None
        failed_runs, ticks, caught_up = 0, 0, False
        last_failed: str | None = None
        before_failure = CursorState()
        checkpoints_committed = 0
        while ticks < limit and not caught_up:
            ticks += 1
            result = harness.tick(cursor)
            cursor = result.cursor
            state = PollPlanState.from_json(cursor)
            if last_failed is not None:
                # The failed run's checkpoint is committed, and its events are all in the store.
                # (A run that failed on its first page stored nothing: the cursor stays.)
                checkpoint = run_checkpoint(instance, last_failed, key) or before_failure
                assert state.committed == checkpoint
                checkpoints_committed += checkpoint != before_failure
                stored = {r["source_event_id"] for r in harness.rows()}
                assert server.covered(checkpoint) <= stored
            (request,) = result.run_requests
            config = request.run_config["ops"]["ingestion__acme_audit"]["config"]
            assert CursorState.from_json(config["cursor"]) == state.committed  # it pulls on from there
            outcome = harness.run(request)
            if outcome.success:
                last_failed = None
                metadata = run_metadata(instance, outcome.run_id, key)
                assert metadata is not None
                caught_up = bool(metadata["drained"]) and metadata["records_seen"] == 0
            else:
                failed_runs += 1
                last_failed, before_failure = outcome.run_id, state.committed
            harness.clock.now += timedelta(minutes=5)  # the next cron tick
        final = harness.tick(cursor)
    assert caught_up, f"not caught up in {ticks} ticks ({failed_runs} failed runs)"
    assert failed_runs >= 2 and checkpoints_committed >= 1 and ticks <= limit
    ids = [r["source_event_id"] for r in harness.rows()]
    assert len(ids) == n and sorted(ids) == server.ids
    assert committed(final.cursor) == {"v": 1, "watermark": last_watermark(server)}


# -- alerts under the real daemon: a slow webhook ------------------------------------------------------


class SlowWebhook:
    """A webhook receiver that answers each POST after ``delay`` seconds, recording the alerts it took."""

    def __init__(self, delay: float):
        self.delay = delay
        self.taken: list[str] = []
        self._stop = threading.Event()

    def __call__(self, request: Request) -> Response:
        self._stop.wait(self.delay)  # the slowness under test, not a synchronization
        self.taken.append(request.json()["run_id"])
        return Response(200, {"ok": True})

    def stop(self) -> None:
        self._stop.set()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_under_the_daemon_a_slow_webhook_gets_each_failing_source_alerted_once(
    home: Path, sources: SourceWriter, tmp_path: Path
) -> None:
    """Six sources failing, a webhook that takes 3 s per alert and Dagster's sensor timeout at 16 s: all
    at once would take 18 s and time out, losing the cursor, so every tick sent them all again. Now a
    tick delivers for at most 8 s (3 alerts), the next one the rest, and each source is alerted once;
    the webhook's user info, query and path appear in no log, cursor, skip reason or instance file."""
    sources.write({**http_source("http://127.0.0.1:9/v1/events"), "enabled": False})  # no poller runs
    instance = dg.DagsterInstance.get()
    run_ids = failing_sources(instance, 6)
    webhook = SlowWebhook(delay=3.0)
    user, password, token = "hookuser-c4n4ry", "hookpass-c4n4ry", "hooktoken-c4n4ry"
    secrets = [user, password, token, "slackpath-c4n4ry"]
    with LoopbackServer({"/services/slackpath-c4n4ry": webhook}) as server:
        env = {
            "PULLMODE_ALERT_WEBHOOK_URL": (
                f"http://{user}:{password}@127.0.0.1:{server.port}/services/slackpath-c4n4ry?token={token}\n"
            ),
            "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": "16",  # deliveries start within 8 s of a tick, end by 12 s
        }
        with running_daemon(tmp_path, env, lambda: f"alerts {webhook.taken}") as (_, output):
            try:
                done = f"Sensor {SENSOR_NAME} skipped: no change"
                ends = time.monotonic() + 100  # two ticks 30 s apart, with room for a slow machine
                while True:
                    line = output.next_line(max(0.0, ends - time.monotonic()), expecting=f"'{done}', nothing waiting")
                    assert len(webhook.taken) == len(set(webhook.taken)), f"alerted twice: {webhook.taken}"
                    if line.endswith(done):
                        break
            finally:
                webhook.stop()  # before the daemon is stopped, so no delivery holds it up
    assert sorted(webhook.taken) == sorted(run_ids)
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.tags["pullmode/alerted"] == "failing"
    (state,) = [s for s in instance.all_instigator_state() if s.name == SENSOR_NAME]
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    assert len(ticks) >= 2 and all(t.status.value == "SKIPPED" for t in ticks), [t.status for t in ticks]
    stored = "\n".join(p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file())
    assert "sent: source_1 failing (run " in stored  # the sensor's log is among the instance's files
    for secret in secrets:
        assert secret not in stored and not any(secret in line for line in output.seen), secret
