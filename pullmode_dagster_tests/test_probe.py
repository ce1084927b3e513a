"""The probe in the poller: a quiet source costs one request and no run; news, an unknown answer or
a failed probe launch the run as before; a 429 skips the tick; nothing it learns leaks a secret."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine import probe as probe_module
from pullmode_dagster.engine.adapters import PullContext
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.http import RetryPolicy
from pullmode_dagster.engine.probe import probe_source

from .conftest import SourceWriter, http_source
from .dagster_helpers import Harness, committed, watermark_harness
from .fakes import CursorFeed, make_events

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
    from pullmode_dagster.engine.events import NormalizedEvent
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
