"""The translator: how a source becomes its asset's AssetSpec (key, group, owners, tags, blocking
checks), as dagster-dlt's and dagster-sling's translators shape theirs. The defaults are today's
assets; a project's own translator moves the asset, and the poller, job, checks, quiet polls,
``pullmode pull`` and downstream loads follow it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from pullmode_dagster import PullmodeTranslator
from pullmode_dagster.cli.pull import pull_once
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.definitions import build_definitions, build_project
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.store.sqlite import SCHEMA

from .conftest import SourceWriter
from .dagster_helpers import WORKSPACE, Clock, Harness, committed, fast_resources
from .documents import http_source
from .fakes import CursorFeed, make_events

DEFAULT = dg.AssetKey(["ingestion", "acme_audit"])
RAW = dg.AssetKey(["raw", "acme_audit_events"])
T = datetime(2026, 3, 2, 10, 2, 30, tzinfo=UTC)


class TeamTranslator(PullmodeTranslator):
    """A project's own: a key whose last part is not the source's name, its own group, owners and
    tags (replacing the defaults), and blocking checks for one source."""

    def get_asset_key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey(["raw", f"{name}_events"])

    def get_asset_spec(self, source: SourceConfig) -> dg.AssetSpec:
        spec = super().get_asset_spec(source)
        return spec.replace_attributes(
            group_name="raw_events", owners=["data-eng@acme.example"], tags={"tier": "bronze"}
        )

    def get_checks_blocking(self, source: SourceConfig) -> bool:
        return source.name == "acme_audit"


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-translator-5150")


def specs(defs: dg.Definitions) -> dict[dg.AssetKey, dg.AssetSpec]:
    return {s.key: s for s in defs.resolve_all_asset_specs()}


def check_blocking(defs: dg.Definitions, key: dg.AssetKey) -> dict[str, bool]:
    return {c.name: c.blocking for c in defs.resolve_assets_def(key).check_specs}


def test_the_default_translator_is_todays_asset_and_its_fields_move_it(sources: SourceWriter) -> None:
    sources.write(http_source("https://audit.acme.example/v1/events", owner="platform-team"))
    sources.write({"name": "broken", "adapter": "http_polling"})  # a placeholder follows the translator too
    default = build_definitions(sources.directory)
    spec = specs(default)[DEFAULT]
    assert specs(build_definitions(sources.directory, translator=PullmodeTranslator()))[DEFAULT] == spec
    assert (spec.group_name, spec.owners, spec.automation_condition) == (
        "ingestion_sources",
        ["team:platform-team"],
        None,
    )
    assert spec.tags == {
        "pullmode/source": "acme_audit",
        "pullmode/adapter": "http_polling",
        "pullmode/owner": "platform-team",
        "pullmode/organization": "org_42",
        "dagster/kind/http": "",
    }
    assert check_blocking(default, DEFAULT) == {"normalized_schema": False, "unique_source_event_id": False}
    assert set(specs(default)) == {DEFAULT, dg.AssetKey(["ingestion", "broken"])}

    moved = build_definitions(
        sources.directory,
        translator=PullmodeTranslator(key_prefix=["raw", "ai"], group_name="raw", blocking_checks=True),
    )
    key = dg.AssetKey(["raw", "ai", "acme_audit"])
    assert {k: s.group_name for k, s in specs(moved).items()} == {
        key: "raw",
        dg.AssetKey(["raw", "ai", "broken"]): "raw",
    }
    assert check_blocking(moved, key) == {"normalized_schema": True, "unique_source_event_id": True}
    assert moved.resolve_job_def("acme_audit_pull").asset_layer.selected_asset_keys == {key}
    one = build_definitions(sources.directory, translator=PullmodeTranslator(key_prefix="raw"))
    assert dg.AssetKey(["raw", "acme_audit"]) in specs(one)


@pytest.fixture
def harness(api: LoopbackServer, sources: SourceWriter, tmp_path: Path) -> Iterator[Harness]:
    api.routes["/v1/events"] = CursorFeed(make_events(12), page_size=10)
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))
    clock = Clock(T)
    project = build_project(
        sources.directory, resources=fast_resources(tmp_path / "trace.db"), clock=clock, translator=TeamTranslator()
    )
    with dg.instance_for_test() as instance:
        yield Harness(project, instance, clock, tmp_path / "trace.db", "acme_audit")


def test_a_subclass_reshapes_the_asset_and_everything_follows_its_key(
    harness: Harness, api: LoopbackServer, tmp_path: Path
) -> None:
    defs, instance = harness.project.defs, harness.instance
    spec = specs(defs)[RAW]
    assert DEFAULT not in specs(defs)
    assert (spec.group_name, spec.owners) == ("raw_events", ["data-eng@acme.example"])
    # The translator's tags replace the defaults (the kind stays a kind); the source tag is the
    # wiring's and always kept.
    assert spec.tags == {"tier": "bronze", "pullmode/source": "acme_audit", "dagster/kind/http": ""}
    assert check_blocking(defs, RAW) == {"normalized_schema": True, "unique_source_event_id": True}
    assert defs.resolve_job_def("acme_audit_pull").asset_layer.selected_asset_keys == {RAW}

    # The poller's run materializes the translated key, with its checks.
    first = harness.tick(None)
    result = harness.run(first.run_requests[0])
    assert result.success
    assert {(e.asset_key, e.check_name, e.passed) for e in result.get_asset_check_evaluations()} == {
        (RAW, "normalized_schema", True),
        (RAW, "unique_source_event_id", True),
    }
    materialization = instance.get_latest_materialization_event(RAW).asset_materialization
    assert materialization.metadata["events_written"].value == 12
    assert instance.get_latest_materialization_event(DEFAULT) is None
    # Its cursor commits, and a quiet poll's runless record goes to the translated key too.
    harness.clock.now = T.replace(minute=3)
    settled = harness.tick(first.cursor)
    assert committed(settled.cursor)["watermark"] == "2026-03-01T00:11:00.000000Z"
    harness.clock.now = T.replace(minute=5, second=4)
    quiet = harness.tick(settled.cursor)
    assert quiet.run_requests == [] and [e.asset_key for e in quiet.asset_events] == [RAW]

    # `pullmode pull`'s path reads the run's report under the translated key.
    cursors = SensorCursors(instance, WORKSPACE)  # empty: the pull starts over, and dedup skips all 12
    outcome = pull_once(
        pollers=harness.project.pollers, defs=defs, instance=instance, cursors=cursors, name="acme_audit"
    )
    assert outcome.ok and outcome.metadata is not None
    assert (outcome.metadata["events_written"], outcome.metadata["duplicates_skipped"]) == (0, 12)

    # A downstream asset of the translated key receives the source's events (found by its tag).
    @dg.asset(ins={"events": dg.AssetIn(key=RAW)})
    def event_count(events: pa.Table) -> int:
        return events.num_rows

    run = with_downstream(defs, event_count, [event_count.key]).execute_in_process(instance=instance)
    assert run.output_for_node("event_count") == 12


def with_downstream(defs: dg.Definitions, asset: dg.AssetsDefinition, selection: list[dg.AssetKey]) -> dg.JobDefinition:
    """``defs`` with ``asset`` merged in, as a project would, and a job of ``selection``."""
    merged = dg.Definitions.merge(defs, dg.Definitions(assets=[asset], jobs=[dg.define_asset_job("j", selection)]))
    return merged.resolve_job_def("j")


@pytest.mark.parametrize("blocking", [True, False])
def test_blocking_checks_keep_downstream_assets_from_running_on_a_failed_check(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Path, blocking: bool
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(30, t0=datetime(2026, 3, 1, 23, 45, tzinfo=UTC)))
    sources.write(http_source(api.url("/v1/events")))
    store = tmp_path / "trace.db"
    # A store trigger corrupts a row the run writes: normalized_schema fails (an ERROR check).
    with sqlite3.connect(store) as conn:
        conn.executescript(SCHEMA)
        conn.execute(
            "CREATE TRIGGER corrupt AFTER INSERT ON pulled_events WHEN NEW.source_event_id = 'evt_00020' "
            "BEGIN UPDATE pulled_events SET cost_usd = -1 WHERE id = NEW.id; END"
        )
    translator = PullmodeTranslator(blocking_checks=blocking)
    defs = build_definitions(sources.directory, resources=fast_resources(store), translator=translator)
    partitions = defs.resolve_assets_def(DEFAULT).partitions_def

    @dg.asset(ins={"events": dg.AssetIn(key=DEFAULT)}, partitions_def=partitions)
    def day_count(events: pa.Table) -> int:
        return events.num_rows

    with dg.instance_for_test() as instance:
        job = with_downstream(defs, day_count, [DEFAULT, day_count.key])
        result = job.execute_in_process(instance=instance, partition_key="2026-03-02", raise_on_error=False)
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"normalized_schema": False, "unique_source_event_id": True}
        assert instance.get_latest_materialization_event(DEFAULT) is not None  # the pull's events are stored
        downstream = instance.get_latest_materialization_event(day_count.key)
    if blocking:
        assert not result.success and downstream is None
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "blocking asset check failed" in failure.step_failure_data.error.message
    else:
        assert result.success and result.output_for_node("day_count") == 15


def test_the_alert_sensor_finds_a_translated_source_by_its_asset_key() -> None:
    """A run launched from the asset page carries no source tag, only the asset it selected; with a
    translator that moved the key, the alerts still know which source it pulled (and link the asset
    where it is)."""
    from pullmode_dagster.defs.changes import SourceKeys, _asset_link, _source_of

    keys = SourceKeys({"acme_audit": dg.AssetKey(["raw", "acme_audit_events"])})
    ui_run = dg.DagsterRun(
        job_name="__ASSET_JOB", asset_selection=frozenset({dg.AssetKey(["raw", "acme_audit_events"])})
    )
    assert _source_of(ui_run, keys) == "acme_audit"
    assert _source_of(ui_run, SourceKeys()) is None  # without the map the moved key is nobody's
    default_run = dg.DagsterRun(
        job_name="__ASSET_JOB", asset_selection=frozenset({dg.AssetKey(["ingestion", "other"])})
    )
    assert _source_of(default_run, keys) == "other"
    url, link = _asset_link(keys.key("acme_audit"))
    assert url.endswith("/assets/raw/acme_audit_events") and link.endswith("|raw/acme_audit_events>")
