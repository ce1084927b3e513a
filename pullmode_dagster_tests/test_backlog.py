"""A backlog drains at full speed: a poll that stops at ``maxPagesPerRun`` with more to pull makes
the poller pull on at its next evaluation instead of waiting for the next cron tick, while a quiet
source still waits for its tick."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer

from .conftest import SourceWriter
from .dagster_helpers import Clock, Harness, make_harness
from .documents import http_source
from .fakes import CursorFeed, make_events


@pytest.fixture
def harness(api: LoopbackServer, sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok")
    api.routes["/v1/events"] = CursorFeed(make_events(55), page_size=10)
    sources.write(http_source(api.url("/v1/events"), maxPagesPerRun=2, schedule="0 * * * *"))
    clock = Clock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    return make_harness(sources.directory, dg.DagsterInstance.ephemeral(), clock, tmp_path, "acme_audit")


@pytest.mark.slow
def test_a_backlog_is_pulled_on_at_each_evaluation_until_drained(harness: Harness) -> None:
    cursor: str | None = None
    pulls: list[str] = []
    for _ in range(6):  # the clock never reaches the next cron tick (10:00)
        result = harness.tick(cursor)
        cursor = result.cursor
        if not result.run_requests:
            break
        request = result.run_requests[0]
        pulls.append(request.run_key or "")
        assert harness.run(request).success
    # 55 events, 20 a pull: the 09:00 tick, then two pulls on, the last one drains.
    assert len(pulls) == 3
    assert pulls[0] == "acme_audit:2026-03-02T09:00:00Z"
    assert all(p.startswith("acme_audit:backlog:") for p in pulls[1:])
    assert len(harness.rows()) == 55
    settled = harness.tick(cursor)  # settles the draining pull
    state = PollPlanState.from_json(settled.cursor)
    assert not settled.run_requests and not state.more_to_pull
    assert settled.skip_reason is not None
    assert "waiting for the next tick at 2026-03-02T10:00:00Z" in settled.skip_reason.skip_message


@pytest.mark.slow
def test_a_failed_pull_does_not_pull_on_before_the_next_tick(harness: Harness, api: LoopbackServer) -> None:
    first = harness.tick(None)
    assert harness.run(first.run_requests[0]).success  # 20 of 55: more to pull
    feed = api.routes["/v1/events"]
    assert isinstance(feed, CursorFeed)
    on = harness.tick(first.cursor)
    assert on.run_requests and (on.run_requests[0].run_key or "").startswith("acme_audit:backlog:")
    feed.fail_after_pages = feed.served_pages  # the backlog pull fails
    assert not harness.run(on.run_requests[0]).success
    after = harness.tick(on.cursor)
    assert not after.run_requests
    assert not PollPlanState.from_json(after.cursor).more_to_pull
    assert after.skip_reason is not None and "waiting for the next tick" in after.skip_reason.skip_message


def test_more_to_pull_round_trips_in_the_sensor_cursor() -> None:
    state = PollPlanState(more_to_pull=True)
    assert '"more_to_pull":true' in state.to_json()
    assert PollPlanState.from_json(state.to_json()).more_to_pull is True
    assert "more_to_pull" not in PollPlanState().to_json()


@pytest.mark.parametrize(("cap", "pages", "drained"), [(None, 120, True), (10, 10, False)])
def test_a_default_source_drains_a_120_page_backlog_in_one_run_and_max_pages_per_run_still_caps(
    api: LoopbackServer,
    sources: SourceWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cap: int | None,
    pages: int,
    drained: bool,
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok")
    api.routes["/v1/events"] = CursorFeed(make_events(1200), page_size=10)  # 120 pages
    sources.write(http_source(api.url("/v1/events"), maxPagesPerRun=cap, schedule="0 * * * *"))
    clock = Clock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    harness = make_harness(sources.directory, dg.DagsterInstance.ephemeral(), clock, tmp_path, "acme_audit")
    first = harness.tick(None)
    result = harness.run(first.run_requests[0])
    assert result.success
    metadata = result.asset_materializations_for_node("ingestion__acme_audit")[-1].metadata
    assert (metadata["pages"].value, metadata["drained"].value) == (pages, drained)
    assert len(harness.rows()) == pages * 10
    after = harness.tick(first.cursor)  # settles the run
    # Drained: nothing until the next tick. Capped: the next pull is requested at once.
    backlog = [r.run_key for r in after.run_requests if (r.run_key or "").startswith("acme_audit:backlog:")]
    assert (len(after.run_requests), len(backlog)) == ((0, 0) if drained else (1, 1))
