"""The poller sensor on a real DagsterInstance: it fires on cron ticks only, commits the cursor a
run reported only after that run succeeded, and never has two pulls of a source in flight."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from pullmode_dagster.defs.names import PULL_ID_TAG
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter
from .dagster_helpers import Clock, Harness, committed, make_harness, record_run
from .documents import http_source
from .fakes import CursorFeed, make_events

T = datetime(2026, 3, 2, 10, 2, 30, tzinfo=UTC)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def feed(api: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> CursorFeed:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-sensor-5555")
    feed = CursorFeed(make_events(40), page_size=10)
    api.routes["/v1/events"] = feed
    return feed


@pytest.fixture
def harness(
    api: LoopbackServer, feed: CursorFeed, sources: SourceWriter, instance: dg.DagsterInstance, tmp_path: Path
) -> Harness:
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))
    return make_harness(sources.directory, instance, Clock(T), tmp_path, "acme_audit")


def test_requests_on_a_cron_tick_and_not_between_ticks(harness: Harness, feed: CursorFeed) -> None:
    first = harness.tick(None)  # a new poller pulls at once, for the latest tick
    (request,) = first.run_requests
    assert request.run_key == "acme_audit:2026-03-02T10:00:00Z"
    assert request.partition_key == "2026-03-02"
    assert request.tags[PULL_ID_TAG] == request.run_key and request.tags["pullmode/mode"] == "poll"
    config = request.run_config["ops"]["ingestion__acme_audit"]["config"]
    assert config["poll"] is True and json.loads(config["cursor"]) == {"v": 1}
    assert harness.run(request).success

    harness.clock.now = T.replace(minute=4, second=59)  # no tick since 10:00
    between = harness.tick(first.cursor)
    assert (
        between.run_requests == []
        and between.skip_reason.skip_message == "waiting for the next tick at 2026-03-02T10:05:00Z"
    )

    harness.clock.now = T.replace(minute=5, second=7)
    feed.events += make_events(1, start=40)  # something new: the probe finds it, so the tick runs
    on_tick = harness.tick(between.cursor)
    assert [r.run_key for r in on_tick.run_requests] == ["acme_audit:2026-03-02T10:05:00Z"]


def test_cursor_holds_the_run_end_state_only_after_success(
    harness: Harness, instance: dg.DagsterInstance, feed: CursorFeed
) -> None:
    first = harness.tick(None)
    assert committed(first.cursor) == {"v": 1}  # requesting commits nothing
    result = harness.run(first.run_requests[0])
    assert result.success
    harness.clock.now = T.replace(minute=3)
    after = harness.tick(first.cursor)
    assert committed(after.cursor) == {"v": 1, "watermark": "2026-03-01T00:39:00.000000Z"}
    reported = instance.get_latest_materialization_event(dg.AssetKey(["ingestion", "acme_audit"]))
    assert reported.asset_materialization.metadata["cursor_after"].value == committed(after.cursor)
    assert PollPlanState.from_json(after.cursor).last_pull == {
        "pull_id": "acme_audit:2026-03-02T10:00:00Z",
        "run_id": result.run_id,
        "status": "SUCCESS",
    }
    # The next pull starts from the committed watermark (the probe asks from it too).
    feed.events += make_events(1, start=40)
    harness.clock.now = T.replace(minute=5, second=1)
    nxt = harness.tick(after.cursor)
    config = nxt.run_requests[0].run_config["ops"]["ingestion__acme_audit"]["config"]
    assert json.loads(config["cursor"])["watermark"] == "2026-03-01T00:39:00.000000Z"


def test_failed_run_commits_its_checkpoint_and_the_next_tick_resumes_there(harness: Harness, feed: CursorFeed) -> None:
    feed.fail_after_pages = 3  # the probe's page and pages 1-2 succeed, then the server returns 500
    first = harness.tick(None)
    failed = harness.run(first.run_requests[0])
    assert not failed.success
    assert len(harness.rows()) == 20
    harness.clock.now = T.replace(minute=3)
    after_failure = harness.tick(first.cursor)
    assert after_failure.run_requests == []
    # Exactly what a pull stopped by maxPagesPerRun after page 2 would have committed.
    checkpoint = {"v": 1, "page_cursor": "20", "high_water": "2026-03-01T00:19:00.000000Z"}
    assert committed(after_failure.cursor) == checkpoint
    assert PollPlanState.from_json(after_failure.cursor).last_pull["status"] == "FAILURE"  # type: ignore[index]

    feed.fail_after_pages = None
    served_before_retry = feed.served_pages
    harness.clock.now = T.replace(minute=5, second=2)
    retry = harness.tick(after_failure.cursor)
    config = retry.run_requests[0].run_config["ops"]["ingestion__acme_audit"]["config"]
    assert json.loads(config["cursor"]) == checkpoint
    assert harness.run(retry.run_requests[0]).success
    assert feed.served_pages - served_before_retry == 2  # pages 3 and 4 only: nothing re-read
    rows = harness.rows()
    assert sorted(r["source_event_id"] for r in rows) == [f"evt_{i:05d}" for i in range(40)]
    harness.clock.now = T.replace(minute=6)
    final = harness.tick(retry.cursor)
    assert committed(final.cursor)["watermark"] == "2026-03-01T00:39:00.000000Z"


def test_no_second_pull_while_one_is_in_flight_even_after_a_restart(
    harness: Harness, instance: dg.DagsterInstance, sources: SourceWriter, tmp_path: Path
) -> None:
    first = harness.tick(None)
    request = first.run_requests[0]
    record_run(instance, harness.project.defs, "acme_audit_pull", status=dg.DagsterRunStatus.STARTED, tags=request.tags)
    harness.clock.now = T.replace(minute=5, second=3)
    second = harness.tick(first.cursor)
    assert second.run_requests == []
    assert second.skip_reason.skip_message.startswith("pull acme_audit:2026-03-02T10:00:00Z in flight: run ")
    # A restart: new definitions, new sensor object, the cursor from storage.
    restarted = make_harness(sources.directory, instance, harness.clock, tmp_path, "acme_audit")
    assert restarted.tick(second.cursor).run_requests == []
    # Even a cursor rewound by hand mid-flight does not start a second pull.
    rewound = restarted.tick(json.dumps({"watermark": "2026-03-01T00:00:00Z"}))
    assert rewound.run_requests == [] and "another pull of this source is in flight" in rewound.skip_reason.skip_message


def test_a_requested_run_not_yet_created_is_requested_again_with_the_same_key(harness: Harness) -> None:
    first = harness.tick(None)
    harness.clock.now = T.replace(minute=9)
    again = harness.tick(first.cursor)
    assert [r.run_key for r in again.run_requests] == [first.run_requests[0].run_key]


def test_canceled_run_leaves_the_cursor(harness: Harness, instance: dg.DagsterInstance) -> None:
    first = harness.tick(None)
    record_run(
        instance,
        harness.project.defs,
        "acme_audit_pull",
        status=dg.DagsterRunStatus.CANCELED,
        tags=first.run_requests[0].tags,
    )
    harness.clock.now = T.replace(minute=3)
    after = harness.tick(first.cursor)
    assert committed(after.cursor) == {"v": 1}
    assert PollPlanState.from_json(after.cursor).in_flight is None


def test_rewinding_the_sensor_cursor_sets_the_committed_cursor(harness: Harness) -> None:
    result = harness.tick(json.dumps({"watermark": "2026-03-01T00:30:00+00:00"}))
    config = result.run_requests[0].run_config["ops"]["ingestion__acme_audit"]["config"]
    assert json.loads(config["cursor"]) == {"v": 1, "watermark": "2026-03-01T00:30:00.000000Z"}
    assert harness.run(result.run_requests[0]).success
    assert len(harness.rows()) == 9  # 00:31 .. 00:39


def test_a_malformed_sensor_cursor_is_a_clear_error(harness: Harness) -> None:
    with pytest.raises(Exception, match="source 'acme_audit': sensor cursor is not JSON"):
        harness.tick("{not json")


# Cursors set by hand (`dagster sensor cursor NAME_poller --set ...`) that no pull can start from.
BAD_HAND_SET_CURSORS = [
    ({"watermark": "0026-01-01"}, "cursor field 'watermark' is out of range (years 1000-9999 in UTC): '0026-01-01'"),
    (
        {"watermark": "9999-12-31T23:59:59-05:00"},
        "cursor field 'watermark' is out of range (years 1000-9999 in UTC): '9999-12-31T23:59:59-05:00'",
    ),
    (
        {"watermark": "0001-01-01T00:00:00+01:00"},
        "cursor field 'watermark' is out of range (years 1000-9999 in UTC): '0001-01-01T00:00:00+01:00'",
    ),
    (
        {"high_water": "0000-01-01"},
        "cursor field 'high_water' is out of range (years 1000-9999 in UTC): '0000-01-01'",
    ),
    (
        {"watermark": "2026-01-01T00:00:00+24:00"},
        "cursor field 'watermark' is not an ISO 8601 timestamp: '2026-01-01T00:00:00+24:00'",
    ),
]


@pytest.mark.parametrize(("cursor", "problem"), BAD_HAND_SET_CURSORS)
def test_a_bad_hand_set_cursor_fails_the_tick_with_one_line_naming_the_source_and_the_field(
    harness: Harness, cursor: dict[str, str], problem: str
) -> None:
    with pytest.raises(dg.DagsterInvariantViolationError) as info:
        harness.tick(json.dumps(cursor))
    assert str(info.value) == f"source 'acme_audit': {problem}"


def test_a_poll_materializes_each_partition_its_events_fall_in_with_their_counts(
    harness: Harness, feed: CursorFeed, instance: dg.DagsterInstance
) -> None:
    from datetime import timedelta

    # 2 events on Feb 27, 3 on Feb 28, 5 on Mar 1 (the run's own partition is Mar 2, the tick's day).
    days = [datetime(2026, 2, 27, tzinfo=UTC)] * 2 + [datetime(2026, 2, 28, tzinfo=UTC)] * 3
    days += [datetime(2026, 3, 1, tzinfo=UTC)] * 5
    feed.events = [
        {**e, "created_at": (day + timedelta(hours=i)).isoformat().replace("+00:00", "Z")}
        for i, (e, day) in enumerate(zip(make_events(10), days, strict=True))
    ]
    request = harness.tick(None).run_requests[0]
    result = harness.run(request)
    assert result.success
    key = dg.AssetKey(["ingestion", "acme_audit"])
    counts = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        counts[materialization.partition] = materialization.metadata["dagster/row_count"].value
    # Each day that holds events, with its count; the run's own partition (the tick's day) holds none.
    assert counts == {"2026-02-27": 2, "2026-02-28": 3, "2026-03-01": 5, "2026-03-02": 0}
    # The Partitions tab: days with data are materialized, a day without stays missing.
    assert instance.get_materialized_partitions(key) == {"2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"}


@pytest.mark.slow
def test_a_30_day_backfill_fills_each_window_and_leaves_the_cursor(harness: Harness, feed: CursorFeed) -> None:
    from datetime import timedelta

    # One event at noon on each of 30 days, Jan 31 .. Mar 1.
    noon = datetime(2026, 1, 31, 12, tzinfo=UTC)
    feed.events = [
        {**e, "created_at": (noon + timedelta(days=i)).isoformat().replace("+00:00", "Z")}
        for i, e in enumerate(make_events(30))
    ]
    first = harness.tick(None)
    assert harness.run(first.run_requests[0]).success
    harness.clock.now = T.replace(minute=3)
    settled = harness.tick(first.cursor)
    before = committed(settled.cursor)
    with SqliteTraceStore(harness.store_path) as store:
        store._conn.execute("DELETE FROM pulled_events")  # lost, say, to a restore: the backfill refills it
    job = harness.project.defs.resolve_job_def("acme_audit_pull")
    days = [(noon + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(30)]
    results = [
        job.execute_in_process(instance=harness.instance, partition_key=day, raise_on_error=False) for day in days
    ]
    assert all(r.success for r in results)
    # Each window run wrote its own day's event: one row each, all 30 back.
    assert [
        r.asset_materializations_for_node("ingestion__acme_audit")[-1].metadata["events_written"].value for r in results
    ] == [1] * 30
    assert sorted(r["source_event_id"] for r in harness.rows()) == [f"evt_{i:05d}" for i in range(30)]
    harness.clock.now = T.replace(minute=4)
    after = harness.tick(settled.cursor)
    assert committed(after.cursor) == before  # window runs never move the cursor
