"""One pull of a source at a time, however its run starts (issue #21): every run of a source's op is
in the source's concurrency pool ``pullmode/<name>``, which the repository's dagster.yaml limits to one
run at a time. Under the real ``dagster-daemon`` a backfill of several partitions runs its windows one
after another; the poller and ``pullmode pull`` (in process, outside the run queue) hold back while a
window run launched elsewhere is in progress; and a pool has its limit before its first run is queued.
The webserver path (a backfill launched through the UI's GraphQL API) is in ``test_ui_e2e.py``."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

# Private: the backfill the UI's "Launch backfill" creates (GraphQL `launchPartitionBackfill` builds
# this object); no public API launches an asset backfill without the webserver.
from dagster._core.execution.backfill import PartitionBackfill

from pullmode_dagster.definitions import build_definitions
from pullmode_dagster.defs.assets import asset_key
from pullmode_dagster.defs.names import PROCESS_TAG
from pullmode_dagster.defs.pools import ensure_pool_limits, run_pools
from pullmode_dagster.defs.recovery import process_identity
from pullmode_dagster.demo.server import LoopbackServer, Request, Response

from .conftest import SourceWriter
from .dagster_helpers import Clock, cli, make_harness, record_run, record_window_run, running_daemon
from .documents import http_source
from .fakes import T0, CursorFeed, make_events
from .test_crash_recovery import dead_process_identity

TOKEN = "tok-pools-4242"
POOL = "pullmode/acme_audit"
T = datetime(2026, 3, 2, 10, 2, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", TOKEN)


def pool_limits(instance: dg.DagsterInstance) -> dict[str, tuple[int, bool]]:
    """Each pool's limit and whether it is the instance's default."""
    return {p.name: (p.limit, p.from_default) for p in instance.event_log_storage.get_pool_limits()}


def test_every_way_a_source_runs_is_in_its_pool(home: Path, sources: SourceWriter, api: LoopbackServer) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(3))
    sources.write(http_source(api.url("/v1/events")))
    defs = build_definitions(sources.directory)
    assert defs.resolve_assets_def(asset_key("acme_audit")).op.pool == POOL
    pulled = cli("pull", "acme_audit")  # in process, through the job, as the poller's run
    assert pulled.exit_code == 0, pulled.output
    with dg.DagsterInstance.get() as instance:
        (pull_run,) = instance.get_runs()
        job_run = record_run(instance, defs, "acme_audit_pull", status=dg.DagsterRunStatus.NOT_STARTED, tags={})
        window_run = record_window_run(
            instance, defs, "acme_audit", status=dg.DagsterRunStatus.NOT_STARTED, partition="2026-03-01"
        )
        assert window_run.job_name == "__ASSET_JOB" and "pullmode/source" not in window_run.tags
        for run in (pull_run, job_run, window_run):
            assert run_pools(run) == {POOL}, run.job_name


def test_a_window_run_launched_elsewhere_holds_the_poller_and_pullmode_pull_until_it_ends(
    home: Path, sources: SourceWriter, api: LoopbackServer, tmp_path: Path
) -> None:
    """A backfill's (or the asset page's) run of the source in progress: the poller requests nothing
    and ``pullmode pull`` refuses, neither asking the source; once that run's process is gone, the
    next evaluation marks it failed and pulls."""
    api.routes["/v1/events"] = CursorFeed(make_events(5))
    sources.write(http_source(api.url("/v1/events")))
    with dg.DagsterInstance.get() as instance:
        harness = make_harness(sources.directory, instance, Clock(T), tmp_path, "acme_audit")
        window = record_window_run(
            instance,
            harness.project.defs,
            "acme_audit",
            status=dg.DagsterRunStatus.STARTED,
            partition="2026-03-01",
            tags={"dagster/backfill": "abcdefgh", PROCESS_TAG: process_identity()},
        )
        held = harness.tick(None)
        assert held.run_requests == []
        assert held.skip_reason is not None
        assert held.skip_reason.skip_message == f"another pull of this source is in flight: run {window.run_id}"
        busy = cli("pull", "acme_audit")
        assert busy.exit_code == 1
        assert f"acme_audit: not pulled: another pull of this source is in flight: run {window.run_id}" in busy.output
        assert api.requests == []  # neither asked the source

        instance.add_run_tags(window.run_id, {PROCESS_TAG: dead_process_identity()})  # its process died
        harness.clock.now = T.replace(minute=5, second=1)
        freed = harness.tick(held.cursor)
        assert instance.get_run_by_id(window.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        (request,) = freed.run_requests
        assert harness.run(request).success and len(harness.rows()) == 5


@pytest.mark.parametrize("via", ["poller", "pullmode pull"])
def test_every_pool_of_the_code_location_has_its_limit_before_a_run_of_it_is_queued(
    via: str, home: Path, sources: SourceWriter, api: LoopbackServer, tmp_path: Path
) -> None:
    """Dagster's run queue would set a new pool's limit only after launching the queued runs it found
    in that pass: the first evaluation of any poller (or ``pullmode pull``) sets every source's,
    disabled ones too, so a backfill launched before any of their runs is still one at a time."""
    api.routes["/v1/events"] = CursorFeed([])
    sources.write(http_source(api.url("/v1/events")))
    sources.write(http_source(api.url("/v1/events"), name="paused", enabled=False))
    with dg.DagsterInstance.get() as instance:
        assert pool_limits(instance) == {}
        if via == "poller":
            make_harness(sources.directory, instance, Clock(T), tmp_path, "acme_audit").tick(None)
        else:
            assert cli("pull", "acme_audit").exit_code == 0
        assert pool_limits(instance) == {POOL: (1, True), "pullmode/paused": (1, True)}
        assert instance.get_runs() == []  # set before anything ran: nothing new, so nothing did


@pytest.mark.parametrize(("default_limit", "expected"), [(None, {}), (2, {POOL: (2, True)})])
def test_a_pool_gets_the_instance_default_and_none_where_the_instance_has_none(
    default_limit: int | None, expected: dict[str, tuple[int, bool]]
) -> None:
    overrides = {"concurrency": {"pools": {"default_limit": default_limit}}} if default_limit else {}
    with dg.instance_for_test(overrides=overrides) as instance:
        ensure_pool_limits(instance, ["acme_audit"])
        assert pool_limits(instance) == expected


# -- under the real daemon -------------------------------------------------------------------------


class WindowFeed:
    """An audit API that answers a window pull (``from``/``to``) with that window's events after
    ``delay`` seconds, and a poll (no window) with nothing, as slowly; it counts the requests it is
    answering at once, so two pulls of the source running side by side show as ``most == 2``."""

    def __init__(self, events: list[dict[str, Any]], delay: float):
        self.events = events
        self.delay = delay
        self.windows: list[str] = []
        self.most = 0
        self._now = 0
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            time.sleep(self.delay)
            start, end = request.arg("from"), request.arg("to")
            if start is None or end is None:
                return Response(200, {"data": [], "next_cursor": None})
            self.windows.append(start)
            lo, hi = datetime.fromisoformat(start), datetime.fromisoformat(end)
            data = [e for e in self.events if lo <= datetime.fromisoformat(e["created_at"]) < hi]
            return Response(200, {"data": data, "next_cursor": None})
        finally:
            with self._lock:
                self._now -= 1


def wait_until(done: Callable[[], bool], timeout: float, what: str, daemon: Any) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert daemon.poll() is None, f"dagster-daemon exited ({daemon.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.5)


def overlapping(records: list[dg.RunRecord]) -> list[tuple[str, str]]:
    """Runs (by id) whose start..end overlaps the run that started before it (a run still going ends
    at infinity): none when no two runs overlap at all."""
    spans = sorted((r.start_time or 0.0, r.end_time or float("inf"), r.dagster_run.run_id) for r in records)
    return [(a[2], b[2]) for a, b in itertools.pairwise(spans) if b[0] < a[1]]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_under_the_daemon_a_backfill_of_four_partitions_runs_its_windows_one_at_a_time(
    home: Path, sources: SourceWriter, api: LoopbackServer, tmp_path: Path
) -> None:
    """The asset backfill the UI launches (Dagster's implicit asset job: no pullmode tag), four daily
    windows, each pull taking 2 s at the source, beside the poller's own run: the run queue launches
    them one after another, so no two runs' start..end overlap, the source never sees two pulls at
    once, and every window holds its events."""
    days = [T0 + timedelta(days=d) for d in range(4)]
    events = [e for d, day in enumerate(days) for e in make_events(3, start=3 * d, t0=day)]
    feed = WindowFeed(events, delay=2.0)
    api.routes["/v1/events"] = feed
    window = {"from": "${{window.start}}", "to": "${{window.end}}"}
    # probe: false: the poller's first evaluation launches a poll run as well (nothing to pull), one
    # more run of the pool among the backfill's.
    sources.write(http_source(api.url("/v1/events"), startDate="2026-03-01", windowParams=window, probe=False))
    defs = build_definitions(sources.directory)
    partitions = [day.date().isoformat() for day in days]
    instance = dg.DagsterInstance.get()
    with running_daemon(tmp_path, {}) as (daemon, _):
        # The poller's first evaluation gives the pool its limit (and requests a poll run).
        wait_until(lambda: POOL in pool_limits(instance), 90, "pool limit from the poller", daemon)
        backfill_id = uuid.uuid4().hex[:8]
        instance.add_backfill(
            PartitionBackfill.from_asset_partitions(
                backfill_id=backfill_id,
                asset_graph=defs.resolve_asset_graph(),
                partition_names=partitions,
                asset_selection=[asset_key("acme_audit")],
                backfill_timestamp=time.time(),
                tags={},
                dynamic_partitions_store=instance,
                all_partitions=False,
                title=None,
                description=None,
                run_config=None,
            )
        )

        def finished() -> bool:
            backfill = instance.get_backfill(backfill_id)
            return backfill is not None and backfill.status.value.startswith(("COMPLETED", "FAILED", "CANCELED"))

        wait_until(finished, 180, "backfill to finish", daemon)
    backfill = instance.get_backfill(backfill_id)
    assert backfill is not None and backfill.status.value == "COMPLETED_SUCCESS", backfill
    records = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == partitions
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    assert all(r.dagster_run.job_name == "__ASSET_JOB" for r in records)
    # Any poller run too; one still queued when the daemon stopped (a cron tick came due meanwhile)
    # never started, so it overlaps nothing.
    ours = [r for r in instance.get_run_records() if POOL in run_pools(r.dagster_run) and r.start_time]
    assert overlapping(ours) == [], [(r.dagster_run.run_id, r.start_time, r.end_time) for r in ours]
    assert feed.most == 1 and len(feed.windows) == 4
    for partition in partitions:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key("acme_audit"), asset_partitions=[partition]), limit=1
        ).records
        assert record.asset_materialization.metadata["dagster/row_count"].value == 3  # type: ignore[union-attr]
