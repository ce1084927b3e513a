"""Downstream assets: ``ingestion/<name>`` as an input, annotated ``pandas.DataFrame`` or
``pyarrow.Table``, receives the stored events of the partitions it depends on, on SQLite and on
Postgres; loading never changes what is stored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

import pullmode_dagster
from pullmode_dagster.definitions import build_project
from pullmode_dagster.defs.resources import PullSettingsResource, TraceStoreResource
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.store import open_store
from pullmode_dagster.engine.store.schema import arrow_schema

from .conftest import SourceWriter
from .dagster_helpers import Clock, Harness
from .documents import http_source
from .fakes import CursorFeed, make_events

KEY = dg.AssetKey(["ingestion", "acme_audit"])
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")


def pulled(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, **doc: Any
) -> Harness:
    """A source whose 90 events (one a minute from 2026-03-01 23:00) span two days, pulled once
    through its poller's run."""
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok")
    api.routes["/v1/events"] = CursorFeed(make_events(90, t0=datetime(2026, 3, 1, 23, 0, tzinfo=UTC)), page_size=25)
    sources.write(http_source(api.url("/v1/events"), **doc))
    resources = {
        "trace_store": TraceStoreResource(url=url),
        "pull_settings": PullSettingsResource(max_attempts=2, backoff_initial_seconds=0.01),
    }
    clock = Clock(datetime(2026, 3, 2, 9, tzinfo=UTC))
    project = build_project(sources.directory, resources=resources, clock=clock)
    harness = Harness(project, dg.DagsterInstance.ephemeral(), clock, tmp_path, "acme_audit")
    request = harness.tick(None).run_requests[0]
    assert harness.run(request).success
    return harness


def stored(url: str) -> list[dict[str, Any]]:
    with open_store(url) as store:
        return store.tail(source="acme_audit", limit=10**6)


def run_downstream(
    harness: Harness, asset: dg.AssetsDefinition, partition_key: str | None = None
) -> dg.ExecuteInProcessResult:
    """Merged into the code location's Definitions as a project would, then materialized alone."""
    defs = dg.Definitions.merge(
        harness.project.defs,
        dg.Definitions(assets=[asset], jobs=[dg.define_asset_job("downstream", selection=[asset.key])]),
    )
    return defs.resolve_job_def("downstream").execute_in_process(
        instance=harness.instance, partition_key=partition_key, raise_on_error=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("partitioning", ["hourly", "daily"])
def test_daily_asset_receives_its_day_as_a_dataframe(
    api: LoopbackServer,
    sources: SourceWriter,
    tmp_path: Path,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    partitioning: str,
) -> None:
    harness = pulled(api, sources, tmp_path, store_url, monkeypatch, partitioning=partitioning)
    before = stored(store_url)
    assert len(before) == 90
    received: dict[str, pd.DataFrame] = {}

    @dg.asset(key=["usage", "daily_cost"], partitions_def=DAILY, ins={"events": dg.AssetIn(KEY)})
    def daily_cost(events: pd.DataFrame) -> dg.MaterializeResult:
        received["events"] = events
        return dg.MaterializeResult(metadata={"cost": float(events["cost_usd"].sum())})

    assert run_downstream(harness, daily_cost, "2026-03-02").success
    frame = received["events"]
    # 2026-03-02 holds the events from minute 60 on (23:00 + 60 min = 00:00).
    expected = [r for r in before if r["event_timestamp"].startswith("2026-03-02")]
    assert len(expected) == 30
    assert list(frame["source_event_id"]) == [r["source_event_id"] for r in expected]
    assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(frame["pulled_at"].dtype) == "datetime64[us, UTC]"
    assert frame["event_timestamp"].iloc[0] == pd.Timestamp("2026-03-02T00:00:00Z")
    assert frame["tokens_input"].dtype == "int64" and frame["tokens_output"].dtype == "int64"
    assert frame["cost_usd"].dtype == "float64"
    assert pd.api.types.is_string_dtype(frame["raw_payload"])
    assert list(frame["tokens_input"]) == [r["tokens_input"] for r in expected]
    assert list(frame["raw_payload"]) == [r["raw_payload"] for r in expected]
    assert frame["cost_usd"].sum() == pytest.approx(0.25 * 30)
    assert stored(store_url) == before  # loading changed nothing


@pytest.mark.slow
def test_unpartitioned_asset_receives_every_event_as_an_arrow_table(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = pulled(api, sources, tmp_path, store_url, monkeypatch, partitioning="hourly")
    before = stored(store_url)
    received: dict[str, pa.Table] = {}

    @dg.asset(key=["usage", "all_events"], ins={"events": dg.AssetIn(KEY)})
    def all_events(events: pa.Table) -> None:
        received["events"] = events

    assert run_downstream(harness, all_events).success
    table = received["events"]
    assert isinstance(table, pa.Table)
    assert table.schema == arrow_schema()
    assert table.num_rows == 90
    assert table.column("source_event_id").to_pylist() == sorted(r["source_event_id"] for r in before)
    assert table.column("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.column("organization_id").to_pylist() == ["org_42"] * 90
    assert stored(store_url) == before


def test_batches_are_bounded_and_ordered(store_url: str) -> None:
    from pullmode_dagster.engine.events.model import NormalizedEvent

    events = [
        NormalizedEvent(
            "s", f"e{i:03d}", f"2026-03-01T10:{59 - i % 60:02d}:00.000000Z", None, None, None, 0.5, i, 1, "{}"
        )
        for i in range(120)
    ]
    with open_store(store_url) as store:
        store.write_events(events, run_id="r")
        batches = list(store.event_batches(source="s", batch_rows=50))
        window = list(
            store.event_batches(
                source="s", start=datetime(2026, 3, 1, 10, 30, tzinfo=UTC), end=datetime(2026, 3, 1, 10, 31, tzinfo=UTC)
            )
        )
    assert [b.num_rows for b in batches] == [50, 50, 20]
    stamps = pa.Table.from_batches(batches).column("event_timestamp").to_pylist()
    assert stamps == sorted(stamps)
    assert sum(b.num_rows for b in window) == 2  # minute 30: e029 and e089


@pytest.mark.slow
def test_an_input_of_another_type_fails_clearly(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = pulled(api, sources, tmp_path, f"sqlite:///{tmp_path / 'trace.db'}", monkeypatch)

    @dg.asset(key=["usage", "wrong"], ins={"events": dg.AssetIn(KEY)})
    def wrong(events: list) -> None:  # type: ignore[type-arg]
        raise AssertionError("not reached")

    result = run_downstream(harness, wrong)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = str(failure.step_failure_data.user_failure_data.description)  # type: ignore[union-attr]
    assert "annotate it pandas.DataFrame or pyarrow.Table" in text and "ingestion/acme_audit" in text


def test_build_definitions_is_exported_at_the_package_root() -> None:
    from pullmode_dagster.definitions import build_definitions

    assert pullmode_dagster.build_definitions is build_definitions


def test_the_demo_code_location_adds_daily_cost_by_actor_below_demo_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    from pullmode_dagster.demo import definitions as demo

    monkeypatch.setenv("PULLMODE_SOURCES_DIR", str(Path(demo.__file__).parent / "sources"))
    graph = demo.build_demo_definitions().resolve_asset_graph()
    cost = dg.AssetKey(["usage", "daily_cost_by_actor"])
    assert graph.get(cost).parent_keys == {dg.AssetKey(["ingestion", "demo_usage"])}
    assert graph.get(dg.AssetKey(["ingestion", "demo_usage"])).child_keys == {cost}


def test_cost_by_actor_groups_and_orders() -> None:
    from pullmode_dagster.demo.downstream import cost_by_actor

    events = pd.DataFrame(
        {
            "source_event_id": ["a", "b", "c", "d"],
            "actor": ["ana", None, "bo", "ana"],
            "cost_usd": [0.5, 0.1, 0.75, 0.5],
            "tokens_input": [1, 2, 3, 4],
            "tokens_output": [10, 20, 30, 40],
        }
    )
    table = cost_by_actor(events)
    assert table.to_dict("records") == [
        {"actor": "ana", "events": 2, "cost_usd": 1.0, "tokens_input": 5, "tokens_output": 50},
        {"actor": "bo", "events": 1, "cost_usd": 0.75, "tokens_input": 3, "tokens_output": 30},
        {"actor": "(none)", "events": 1, "cost_usd": 0.1, "tokens_input": 2, "tokens_output": 20},
    ]
