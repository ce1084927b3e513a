"""The probe in the poller: a quiet source costs one request and no run; news, an unknown answer or
a failed probe launch the run as before; a 429 skips the tick; nothing it learns leaks a secret."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState

from pullmode_dagster.definitions import build_project
from pullmode_dagster.defs.names import SOURCE_TAG, poller_name
from pullmode_dagster.defs.resources import TraceStoreResource
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine import probe as probe_module
from pullmode_dagster.engine.adapters import PullContext
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.fetch.session import RetryPolicy
from pullmode_dagster.engine.probe import ProbeResult, probe_source
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter
from .connector_contract import VENDORS
from .dagster_helpers import (
    Clock,
    Harness,
    StaticCredentialsResource,
    committed,
    fast_resources,
    running_daemon,
    watermark_harness,
)
from .documents import S3_REGION, http_source, s3_source
from .fakes import CursorFeed, make_events
from .s3_helpers import S3Proxy, ndjson

T = datetime(2026, 3, 2, 10, 2, 30, tzinfo=UTC)
TOKEN = "tok-probe-7319-secret"
KEY = dg.AssetKey(["ingestion", "acme_audit"])


@pytest.fixture
def feed(api: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> CursorFeed:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", TOKEN)
    api.routes["/v1/events"] = feed = CursorFeed(make_events(12), page_size=10)
    return feed


@pytest.fixture
def harness(api: LoopbackServer, feed: CursorFeed, sources: SourceWriter, tmp_path: Path) -> Iterator[Harness]:
    with dg.instance_for_test() as instance:
        yield watermark_harness(api.url("/v1/events"), sources, instance, tmp_path, T)


def drained(harness: Harness) -> str:
    """Pull everything there is (the first tick has news), settle it, and return the sensor cursor."""
    first = harness.tick(None)
    assert harness.run(first.run_requests[0]).success
    harness.clock.now = T.replace(minute=3)
    settled = harness.tick(first.cursor)
    assert settled.run_requests == [] and committed(settled.cursor)["watermark"] == "2026-03-01T00:11:00.000000Z"
    return settled.cursor or ""


def test_a_quiet_tick_launches_no_run_and_records_a_runless_materialization(
    harness: Harness, api: LoopbackServer
) -> None:
    cursor = drained(harness)
    api.requests.clear()
    harness.clock.now = T.replace(minute=5, second=4)
    quiet = harness.tick(cursor)
    assert quiet.run_requests == [] and quiet.skip_reason is None
    assert len(api.requests) == 1 and api.requests[0].arg("created_after") == "2026-03-01T00:11:00.000000Z"
    (event,) = quiet.asset_events
    assert isinstance(event, dg.AssetMaterialization) and event.asset_key == KEY
    assert event.partition == "2026-03-02"
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["events_written"] == 0 and meta["poll"] == "quiet poll" and meta["requests"] == 1
    assert meta["dagster/row_count"] == 0  # the tick's day holds none of the 12 events (all on Mar 1)
    assert meta["cursor_after"] == committed(cursor) and meta["checked_at"] == "2026-03-02T10:05:04Z"
    assert isinstance(meta["probe_seconds"], float)
    state = PollPlanState.from_json(quiet.cursor)
    assert state.committed.to_dict() == committed(cursor) and state.in_flight is None
    assert state.last_tick == "2026-03-02T10:05:00Z"
    # The tick is served: the next evaluation waits for the next cron tick without asking again.
    harness.clock.now = T.replace(minute=6)
    waiting = harness.tick(quiet.cursor)
    assert waiting.skip_reason.skip_message == "waiting for the next tick at 2026-03-02T10:10:00Z"
    assert len(api.requests) == 1


def test_evaluations_as_the_code_server_makes_them_open_one_instance_in_all_and_none_for_a_quiet_one(
    harness: Harness, api: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon hands the code server an instance *ref* and a log key: Dagster would open an
    instance per evaluation for a sensor with resources, or one that writes to its tick log. The
    poller opens one per process, and a quiet poll writes no tick log."""
    cursor = drained(harness)
    opened: list[object] = []
    real = dg.DagsterInstance.from_ref
    monkeypatch.setattr(dg.DagsterInstance, "from_ref", staticmethod(lambda ref: opened.append(ref) or real(ref)))
    sensor = harness.project.defs.resolve_sensor_def(poller_name("acme_audit"))

    def evaluate(cursor: str | None) -> dg.SensorResult:
        ref = harness.instance.get_ref()
        with dg.SensorEvaluationContext(ref, cursor=cursor, log_key=["acme_audit", "tick"], sensor_name="p") as ctx:
            result = sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        return result

    api.requests.clear()
    for minute in (5, 6, 10, 15):  # three quiet polls and a wait for the next tick
        harness.clock.now = T.replace(minute=minute, second=4)
        result = evaluate(cursor)
        assert result.run_requests == []
        assert len(result.asset_events) == (0 if minute == 6 else 1)
        cursor = result.cursor or ""
    assert len(api.requests) == 3
    assert len(opened) == 1  # the first quiet poll asked about runs; the rest reused it


class SetUpStore(TraceStoreResource):
    """A store usable only between Dagster's setup and teardown (a pool, a client session)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        LIFECYCLE.append("setup")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        LIFECYCLE.append("teardown")

    def open(self) -> Any:
        assert LIFECYCLE and LIFECYCLE[-1] == "setup", "used outside its setup and teardown"
        return super().open()


LIFECYCLE: list[str] = []


@dg.resource(required_resource_keys={"vault"})
def vault_credentials(context: dg.InitResourceContext) -> StaticCredentialsResource:
    """Credentials that depend on another resource the user bound."""
    return StaticCredentialsResource(values={"acme_audit": {"token": context.resources.vault}})


def test_user_resources_with_a_lifecycle_or_a_dependency_serve_the_probe(
    api: LoopbackServer, feed: CursorFeed, sources: SourceWriter, tmp_path: Path
) -> None:
    """The pollers open the resources bound in the Definitions per evaluation, as Dagster does for a
    sensor that declares them: set up before the probe, torn down after; one that depends on another
    resource gets it."""
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))
    LIFECYCLE.clear()
    resources = {
        **fast_resources(tmp_path / "trace.db"),
        "trace_store": SetUpStore(url=f"sqlite:///{tmp_path / 'trace.db'}"),
        "credentials": vault_credentials,
        "vault": dg.ResourceDefinition.hardcoded_resource(TOKEN),
    }
    clock = Clock(T)
    with dg.instance_for_test() as instance:
        project = build_project(sources.directory, resources=resources, clock=clock)
        harness = Harness(project, instance, clock, tmp_path / "trace.db", "acme_audit")
        cursor = drained(harness)
        api.requests.clear()
        LIFECYCLE.clear()
        harness.clock.now = T.replace(minute=5, second=4)
        # As the code server evaluates it: a context with no resources of its own (the sensor takes none).
        sensor = project.defs.resolve_sensor_def(poller_name("acme_audit"))
        with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
            quiet = sensor(context)
    assert isinstance(quiet, dg.SensorResult)
    assert quiet.run_requests == [] and len(quiet.asset_events) == 1  # the probe answered: nothing new
    assert api.requests[0].headers.get("authorization") == f"Bearer {TOKEN}"
    assert LIFECYCLE == ["setup", "teardown"]  # one evaluation, set up once, torn down at its end


def test_new_data_launches_the_run_which_commits_after_success(harness: Harness, feed: CursorFeed) -> None:
    cursor = drained(harness)
    feed.events += make_events(2, start=12)
    harness.clock.now = T.replace(minute=5, second=4)
    tick = harness.tick(cursor)
    (request,) = tick.run_requests
    assert request.run_key == "acme_audit:2026-03-02T10:05:00Z"
    assert committed(tick.cursor) == committed(cursor)  # nothing committed at launch
    assert harness.run(request).success
    harness.clock.now = T.replace(minute=6)
    assert committed(harness.tick(tick.cursor).cursor)["watermark"] == "2026-03-01T00:13:00.000000Z"


def test_an_inclusive_watermark_returning_the_last_stored_event_is_quiet(
    harness: Harness, api: LoopbackServer, feed: CursorFeed
) -> None:
    cursor = drained(harness)

    def inclusive(request: Request) -> Response:  # created_after >= the bound: the last event again
        bound = datetime.fromisoformat(request.arg("created_after") or "1970-01-01T00:00:00Z")
        events = [e for e in feed.events if datetime.fromisoformat(e["created_at"]) >= bound]
        return Response(200, {"data": events, "next_cursor": None})

    api.routes["/v1/events"] = inclusive
    harness.clock.now = T.replace(minute=5, second=4)
    quiet = harness.tick(cursor)
    assert quiet.run_requests == [] and len(quiet.asset_events) == 1
    feed.events += make_events(1, start=12)  # the last stored event and a new one: news
    harness.clock.now = T.replace(minute=10, second=4)
    assert len(harness.tick(quiet.cursor).run_requests) == 1


@pytest.mark.parametrize("status", [500, 401])
def test_a_failed_probe_launches_the_run_which_reports_the_failure(
    harness: Harness, api: LoopbackServer, status: int, capfd: pytest.CaptureFixture[str]
) -> None:
    cursor = drained(harness)
    api.routes["/v1/events"] = lambda r: Response(status, {"error": f"nope, {TOKEN} is not welcome"})
    harness.clock.now = T.replace(minute=5, second=4)
    capfd.readouterr()
    tick = harness.tick(cursor)
    sensor_log = capfd.readouterr().err
    (request,) = tick.run_requests
    assert f"acme_audit: the probe failed (source 'acme_audit': page 1: HTTP {status}" in sensor_log
    result = harness.run(request)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"HTTP {status}" in failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
    # The token the server echoed is in no log line, cursor or metadata.
    assert TOKEN not in sensor_log and TOKEN not in (tick.cursor or "")
    if status == 401:
        assert '{"error": "nope, *** is not welcome"}' in sensor_log


def test_a_429_skips_the_tick_and_asks_again_when_the_source_says(
    harness: Harness, api: LoopbackServer, feed: CursorFeed
) -> None:
    cursor = drained(harness)
    api.routes["/v1/events"] = lambda r: Response(429, {"error": TOKEN}, headers={"Retry-After": "120"})
    api.requests.clear()
    harness.clock.now = T.replace(minute=5, second=4)
    throttled = harness.tick(cursor)
    assert throttled.run_requests == [] and throttled.asset_events == []
    reason = throttled.skip_reason.skip_message
    assert reason.startswith("the source is rate limiting (HTTP 429); asking again at 2026-03-02T10:07:04Z: ")
    assert TOKEN not in reason and TOKEN not in (throttled.cursor or "")
    state = PollPlanState.from_json(throttled.cursor)
    assert state.last_tick == "2026-03-02T10:00:00Z"  # the 10:05 tick stays due
    assert state.committed.to_dict() == committed(cursor)
    asked = len(api.requests)
    harness.clock.now = T.replace(minute=6)  # before the time it named: not asked again
    waiting = harness.tick(throttled.cursor)
    assert waiting.skip_reason.skip_message.endswith("asking again at 2026-03-02T10:07:04Z")
    assert len(api.requests) == asked
    api.routes["/v1/events"] = feed
    feed.events += make_events(1, start=12)
    harness.clock.now = T.replace(minute=7, second=10)  # the 10:05 tick is pulled, late but not lost
    (request,) = harness.tick(waiting.cursor).run_requests
    assert request.run_key == "acme_audit:2026-03-02T10:05:00Z"


def test_a_slow_vendor_is_bounded_and_the_run_is_launched(
    harness: Harness, api: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = drained(harness)
    gate = threading.Event()

    def stalls(request: Request) -> Response:
        gate.wait(30)
        return Response(200, {"data": [], "next_cursor": None})

    api.routes["/v1/events"] = stalls
    monkeypatch.setattr(probe_module, "DEFAULT_PROBE_TIMEOUT", 0.5)
    harness.clock.now = T.replace(minute=5, second=4)
    try:
        tick = harness.tick(cursor)
    finally:
        gate.set()
    assert len(tick.run_requests) == 1  # the run meets the slow vendor, with its own limits and logs


def test_a_source_that_opts_out_runs_on_every_tick_without_asking(
    api: LoopbackServer, feed: CursorFeed, sources: SourceWriter, tmp_path: Path
) -> None:
    with dg.instance_for_test() as instance:
        harness = watermark_harness(api.url("/v1/events"), sources, instance, tmp_path, T, probe=False)
        cursor = drained(harness)
        api.requests.clear()
        harness.clock.now = T.replace(minute=5, second=4)
        tick = harness.tick(cursor)
    assert len(tick.run_requests) == 1 and api.requests == []


def test_probe_source_for_http_polling(api: LoopbackServer, feed: CursorFeed, sources: SourceWriter) -> None:
    source = sources.load(
        http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"})
    )
    context = PullContext(retry=RetryPolicy(max_attempts=1))
    stored: set[str] = set()

    def known(ids: list[str]) -> set[str]:
        return stored & set(ids)

    fresh = probe_source(source, CursorState(), known_ids=known, context=context)
    assert (fresh.verdict, fresh.requests) == ("new", 1)
    stored.update(e["id"] for e in feed.events)
    page_one = probe_source(source, CursorState(), known_ids=known, context=context)
    assert page_one.verdict == "new"  # all stored, but a second page follows
    after = CursorState(watermark="2026-03-01T00:11:00.000000Z")
    assert probe_source(source, after, known_ids=known, context=context).verdict == "nothing_new"
    api.requests.clear()
    unfinished = CursorState(position={"page_cursor": "10"})
    assert probe_source(source, unfinished, known_ids=known, context=context).verdict == "new"
    assert api.requests == []  # an unfinished pagination is news without asking


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_known_ids_on_both_stores(kind: str, tmp_path: Path) -> None:
    from pullmode_dagster.engine.events.model import NormalizedEvent
    from pullmode_dagster.engine.store import open_store

    from .pg import fresh_database

    def check(url: str) -> None:
        with open_store(url) as store:
            events = [
                NormalizedEvent("acme", f"e{i}", "2026-03-01T00:00:00.000000Z", None, None, None, 0.0, 0, 0, "{}")
                for i in range(3)
            ]
            store.write_events(events, run_id="r1")
            assert store.known_ids("acme", ["e1", "e2", "e9", "e1"]) == {"e1", "e2"}
            assert store.known_ids("other", ["e1"]) == set()
            assert store.known_ids("acme", [f"x{i}" for i in range(1200)] + ["e0"]) == {"e0"}

    if kind == "sqlite":
        check(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        with fresh_database() as url:
            check(url)


# -- under the real dagster-daemon ----------------------------------------------------------------------

QUIET_SOURCES = ["quiet_a", "quiet_b", "quiet_c"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_under_the_daemon_quiet_sources_record_runless_polls_and_stay_fresh_and_the_busy_one_runs(
    home: Path, sources: SourceWriter, api: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three quiet sources and one with data, every minute, under ``dagster-daemon run``: the daemon
    records each quiet poll's runless materialization (run id empty, the tick's partition) and launches
    no run for them, which keeps them fresh; the busy source gets one run whose cursor is committed."""
    monkeypatch.setenv("ACME_AUDIT_TOKEN", TOKEN)
    busy = CursorFeed(make_events(3), page_size=10)
    api.routes["/v1/busy"] = busy
    for name in QUIET_SOURCES:
        api.routes[f"/v1/{name}"] = CursorFeed([], page_size=10)
    watermark = {"created_after": "${{cursor.watermark}}"}
    for name in [*QUIET_SOURCES, "busy"]:
        sources.write(http_source(api.url(f"/v1/{name}"), name=name, schedule="* * * * *", incrementalParams=watermark))
    env = {"FRESHNESS_DAEMON_INTERVAL_SECONDS": "2"}  # its 30 s default would only make the test wait
    instance = dg.DagsterInstance.get()
    quiet_keys = [dg.AssetKey(["ingestion", name]) for name in QUIET_SOURCES]

    def busy_committed() -> dict[str, object]:
        states = [s for s in instance.all_instigator_state() if s.name == poller_name("busy")]
        cursor = states[0].instigator_data.cursor if states and states[0].instigator_data else None  # type: ignore[union-attr]
        return committed(cursor)

    def settled() -> bool:
        freshness = instance.get_freshness_state_records(quiet_keys)
        return busy_committed().get("watermark") is not None and all(
            key in freshness and freshness[key].freshness_state == FreshnessState.PASS for key in quiet_keys
        )

    with running_daemon(tmp_path, env) as (_, output):
        # The first evaluation runs the busy source; the one 30 s later commits its cursor.
        ends = time.monotonic() + 150
        while not settled():
            output.next_line(max(0.0, ends - time.monotonic()), expecting="the busy cursor committed, all fresh")
    for name, key in zip(QUIET_SOURCES, quiet_keys, strict=True):
        assert instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_TAG: name})) == [], name
        records = instance.fetch_materializations(key, limit=10).records
        assert records, name
        for record in records:
            meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}  # type: ignore[union-attr]
            assert record.run_id == "" and meta["poll"] == "quiet poll" and meta["events_written"] == 0
            assert record.partition_key == str(meta["checked_at"])[:10]  # the tick's day
    (run,) = instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_TAG: "busy"}))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert busy_committed()["watermark"] == "2026-03-01T00:02:00.000000Z"


# -- the other adapters' probes, against their loopback fakes --------------------------------------------


@pytest.mark.parametrize("adapter", sorted(VENDORS))
def test_the_vendor_probes_see_nothing_new_after_a_pull_and_news_after_one_more_event(
    adapter: str, sources: SourceWriter, store: SqliteTraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = VENDORS[adapter]
    context = PullContext(retry=RetryPolicy(max_attempts=1))
    with vendor.start(vendor.secret, monkeypatch) as api:
        vendor.publish(api, 0, 3)
        source = sources.load(vendor.source(api))

        def known(ids: list[str]) -> set[str]:
            return store.known_ids(source.name, ids)

        assert probe_source(source, CursorState(), known_ids=known, context=context).verdict == "new"
        pulled = run_pull(source, store=store, context=context)
        assert pulled.written == 3 and pulled.drained
        quiet = probe_source(source, pulled.cursor_after, known_ids=known, context=context)
        assert (quiet.verdict, quiet.reason) == ("nothing_new", None) and quiet.requests >= 1
        vendor.publish(api, 3, 4)
        assert probe_source(source, pulled.cursor_after, known_ids=known, context=context).verdict == "new"
        assert run_pull(source, store=store, start=pulled.cursor_after, context=context).written == 1


# -- s3_polling, through moto -----------------------------------------------------------------------------


def test_the_poller_probes_an_s3_source_through_the_bound_s3_resource(
    s3: Any, moto_url: str, sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster hands a sensor an S3Resource's boto3 client, not the resource: the poller takes the
    resource itself, as a run does, so an S3 source's quiet poll is a probe (no run), and the bound
    resource's endpoint and region serve it."""
    from dagster_aws.s3 import S3Resource

    monkeypatch.setenv("DROP_KEY_ID", "AKIAFIRSTKEY0001")
    monkeypatch.setenv("DROP_SECRET", "first-secret-value-0001")
    sources.write(s3_source("unused", endpointUrl=None, region=None))
    resources = {
        **fast_resources(tmp_path / "trace.db"),
        "s3": S3Resource(endpoint_url=moto_url, region_name=S3_REGION),
    }
    clock = Clock(T)
    with dg.instance_for_test() as instance:
        project = build_project(sources.directory, resources=resources, clock=clock)
        harness = Harness(project, instance, clock, tmp_path / "trace.db", "audit_drop")
        quiet = harness.tick(None)
        assert quiet.run_requests == [] and len(quiet.asset_events) == 1  # the probe answered: an empty prefix
        s3.put_object(Bucket="audit-drops", Key="audit/1.ndjson", Body=ndjson(make_events(2)))
        clock.now = T.replace(minute=10, second=4)
        (request,) = harness.tick(quiet.cursor).run_requests
        assert harness.run(request).success and len(harness.rows()) == 2


def test_the_s3_probe_nothing_new_a_new_key_folder_markers_and_access_denied(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, proxy: tuple[S3Proxy, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROP_KEY_ID", "AKIAFIRSTKEY0001")
    monkeypatch.setenv("DROP_SECRET", "first-secret-value-0001")
    recorder, endpoint = proxy
    context = PullContext(retry=RetryPolicy(max_attempts=1))
    source = sources.load(s3_source(endpoint))

    def known(ids: list[str]) -> set[str]:
        return store.known_ids(source.name, ids)

    def ask(start: CursorState) -> ProbeResult:
        return probe_source(source, start, known_ids=known, context=context)

    assert ask(CursorState()).verdict == "nothing_new"  # an empty prefix
    s3.put_object(Bucket="audit-drops", Key="audit/1.ndjson", Body=ndjson(make_events(2)))
    s3.put_object(Bucket="audit-drops", Key="other/x.ndjson", Body=ndjson(make_events(1, start=9)))  # not its prefix
    assert ask(CursorState()).verdict == "new"
    pulled = run_pull(source, store=store, context=context)
    assert pulled.cursor_after.position.get("after_key") == "audit/1.ndjson"
    assert (ask(pulled.cursor_after).verdict, ask(pulled.cursor_after).requests) == ("nothing_new", 1)
    # Folder markers after the cursor's key are asked past: still nothing new, one request each.
    s3.put_object(Bucket="audit-drops", Key="audit/2/", Body=b"")
    s3.put_object(Bucket="audit-drops", Key="audit/3/", Body=b"")
    past_markers = ask(pulled.cursor_after)
    assert (past_markers.verdict, past_markers.requests) == ("nothing_new", 3)
    s3.put_object(Bucket="audit-drops", Key="audit/3/4.ndjson", Body=ndjson(make_events(1, start=2)))
    assert ask(pulled.cursor_after).verdict == "new"
    recorder.denied.add("")  # the bucket's listing (its path holds no key): AccessDenied
    denied = ask(pulled.cursor_after)
    assert denied.verdict == "failed" and denied.reason is not None
    assert "cannot list s3://audit-drops/audit/" in denied.reason and "AccessDenied (HTTP 403)" in denied.reason
    assert "first-secret-value-0001" not in denied.reason
