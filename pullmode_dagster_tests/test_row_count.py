"""``dagster/row_count`` is what a partition holds after a poll, not what the poll wrote: on both
stores, after a pull and after a pull that finds nothing new; and a pull touching many partitions
records each of them as materialized, with its own stored count."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pullmode_dagster.definitions import build_project
from pullmode_dagster.defs.assets import partition_row_count
from pullmode_dagster.defs.resources import PullSettingsResource, TraceStoreResource
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.events.model import NormalizedEvent
from pullmode_dagster.engine.store import open_store

from .conftest import SourceWriter
from .dagster_helpers import Clock, Harness
from .documents import http_source
from .fakes import CursorFeed, make_events

KEY = dg.AssetKey(["ingestion", "acme_audit"])
T = datetime(2026, 3, 2, 10, 2, 30, tzinfo=UTC)  # the tick's partition (daily) is 2026-03-02


def harness_on(url: str, sources: SourceWriter) -> Harness:
    """The poller and the asset of the sources written, on the trace store at ``url``."""
    clock = Clock(T)
    resources = {
        "trace_store": TraceStoreResource(url=url),
        "pull_settings": PullSettingsResource(max_attempts=2, backoff_initial_seconds=0.01, backoff_max_seconds=0.02),
    }
    project = build_project(sources.directory, resources=resources, clock=clock)
    return Harness(project, dg.DagsterInstance.ephemeral(), clock, Path("unused"), "acme_audit")


def materializations(result: dg.ExecuteInProcessResult) -> dict[str | None, dict[str, Any]]:
    """Each partition's materialization metadata in one run, values unwrapped."""
    out: dict[str | None, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        m = event.step_materialization_data.materialization
        out[m.partition] = {k: v.value for k, v in m.metadata.items()}
    return out


def test_row_count_is_the_partitions_stored_events_after_a_pull_and_after_a_quiet_one(
    store_url: str, api: LoopbackServer, sources: SourceWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok")
    # 30 events on Mar 1, 10 on Mar 2 (the tick's partition).
    events = make_events(30) + make_events(10, start=30, t0=datetime(2026, 3, 2, tzinfo=UTC))
    api.routes["/v1/events"] = CursorFeed(events, page_size=10)
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))
    harness = harness_on(store_url, sources)
    clock = harness.clock

    first = harness.tick(None)
    result = harness.run(first.run_requests[0])
    assert result.success
    recorded = materializations(result)
    own, other = recorded["2026-03-02"], recorded["2026-03-01"]
    assert (own["dagster/row_count"], own["events_written"], own["events_in_this_partition"]) == (10, 40, 10)
    assert (other["dagster/row_count"], other["events_written"]) == (30, 30)

    clock.now = T + timedelta(minutes=5)  # the next tick: nothing new upstream
    second = harness.tick(first.cursor)
    assert second.run_requests == []  # the probe found nothing new: a quiet poll, no run
    (quiet,) = second.asset_events  # one runless materialization, of the tick's partition only
    assert isinstance(quiet, dg.AssetMaterialization) and quiet.partition == "2026-03-02"
    values = {k: getattr(v, "value", v) for k, v in quiet.metadata.items()}
    assert (values["dagster/row_count"], values["events_written"]) == (10, 0)
    harness.instance.report_runless_asset_event(quiet)  # what the daemon does with it
    latest = harness.instance.get_latest_materialization_event(KEY)
    assert latest is not None and latest.asset_materialization.metadata["dagster/row_count"].value == 10  # type: ignore[union-attr]

    # The function the poller's runless record uses says the same, from the store.
    source = load_sources(sources.directory, adapters=ADAPTERS).sources["acme_audit"]
    with open_store(store_url) as store:
        assert partition_row_count(store, source, "2026-03-02") == 10
        assert partition_row_count(store, source, "2026-03-01") == 30
        assert partition_row_count(store, source, "2026-03-03") == 0


def test_partition_row_count_counts_the_partitions_window_only(store_url: str, sources: SourceWriter) -> None:
    source = sources.load(http_source("https://api.example.com/v1/events", partitioning="hourly"))
    base = NormalizedEvent("acme_audit", "e", "", "a", "act", "t", 0.0, 0, 0, "{}", None)
    stamps = [
        "2026-03-01T09:59:59.999999Z",  # the hour before
        "2026-03-01T10:00:00.000000Z",  # the hour's first instant: in
        "2026-03-01T10:59:59.999999Z",  # its last: in
        "2026-03-01T11:00:00.000000Z",  # the next hour's first
    ]
    other = replace(base, source_name="other", source_event_id="o", event_timestamp=stamps[1])
    with open_store(store_url) as store:
        events = [replace(base, source_event_id=f"e{i}", event_timestamp=s) for i, s in enumerate(stamps)]
        store.write_events([*events, other], run_id="r")
        assert partition_row_count(store, source, "2026-03-01-10:00") == 2
        assert partition_row_count(store, source, "2026-03-01-09:00") == 1
        assert partition_row_count(store, source, "2026-03-01-12:00") == 0


def test_a_pull_touching_many_partitions_shows_each_materialized_with_its_stored_count(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok")
    # One event at noon on each of 60 days (Jan 1 .. Mar 1), a history the first poll backfills.
    noon = datetime(2026, 1, 1, 12, tzinfo=UTC)
    days = [(noon + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(60)]
    events = [e for i in range(60) for e in make_events(1, start=i, t0=noon + timedelta(days=i) - timedelta(minutes=i))]
    api.routes["/v1/events"] = CursorFeed(events, page_size=25)
    sources.write(http_source(api.url("/v1/events")))
    url = f"sqlite:///{tmp_path}/trace.db"
    harness = harness_on(url, sources)
    # Already stored before the poll, by another pull: a second event on the first day.
    source = load_sources(sources.directory, adapters=ADAPTERS).sources["acme_audit"]
    earlier = NormalizedEvent("acme_audit", "old", "2026-01-01T01:00:00.000000Z", None, None, None, 0.0, 0, 0, "{}")
    with open_store(url) as store:
        store.write_events([earlier], run_id="before")
    result = harness.run(harness.tick(None).run_requests[0])
    assert result.success
    recorded = materializations(result)
    assert harness.instance.get_materialized_partitions(KEY) == {*days, "2026-03-02"}
    assert recorded["2026-01-01"]["dagster/row_count"] == 2 and recorded["2026-01-01"]["events_written"] == 1
    assert all(recorded[d]["dagster/row_count"] == 1 for d in days[1:])
    with open_store(url) as store:
        assert all(partition_row_count(store, source, d) == recorded[d]["dagster/row_count"] for d in days)
