"""The Definitions built from the sources directory: names, partitions, descriptions, tags, and
what happens to a bad source file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from pullmode_dagster import definitions
from pullmode_dagster.definitions import build_definitions, build_project
from pullmode_dagster.defs.resources import TraceStoreResource
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.errors import ConfigError
from pullmode_dagster.engine.store import EVENT_COLUMNS

from .conftest import SourceWriter
from .dagster_helpers import fail_source_asset
from .documents import http_source

URL = "https://audit.acme.example/v1/events?api_version=2"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-never-shown-4242")
    return "tok-never-shown-4242"


def test_each_source_is_an_asset_a_job_and_a_poller(sources: SourceWriter, secret: str) -> None:
    sources.write(http_source(URL, owner="platform-team", description="Acme audit log"))
    sources.write(
        http_source(
            URL,
            name="hourly_usage",
            partitioning="hourly",
            startDate="2026-02-03T04:00:00",
            enabled=False,
            owner="finops@acme.example",
        )
    )
    defs = build_definitions(sources.directory)
    key = dg.AssetKey(["ingestion", "acme_audit"])
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}[key]
    assert spec.group_name == "ingestion_sources"
    assert spec.kinds == {"http"}
    assert spec.tags["pullmode/owner"] == "platform-team" and spec.tags["pullmode/organization"] == "org_42"
    assert spec.owners == ["team:platform-team"]
    assert "Acme audit log" in spec.description and "https://audit.acme.example/v1/events" in spec.description
    assert "environment variable ACME_AUDIT_TOKEN" in spec.description
    assert secret not in spec.description and "api_version" not in spec.description

    daily = defs.resolve_assets_def(key).partitions_def
    assert isinstance(daily, dg.DailyPartitionsDefinition)
    assert daily.get_first_partition_key() == "2026-01-01"
    hourly = defs.resolve_assets_def(dg.AssetKey(["ingestion", "hourly_usage"])).partitions_def
    assert isinstance(hourly, dg.HourlyPartitionsDefinition)
    assert hourly.get_first_partition_key() == "2026-02-03-04:00"
    # The day (hour) in progress is a partition, on either side of midnight UTC: "now" is Dagster's
    # partition-loading time, fixed here, not the wall clock.
    for now, day, hour in [
        (datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC), "2026-03-01", "2026-03-01-23:00"),
        (datetime(2026, 3, 2, 0, 0, tzinfo=UTC), "2026-03-02", "2026-03-02-00:00"),
    ]:
        with dg.partition_loading_context(effective_dt=now):
            assert (daily.get_last_partition_key(), hourly.get_last_partition_key()) == (day, hour), now

    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {"acme_audit_poller", "hourly_usage_poller", "pullmode_failure_alerts"}
    assert sensors["pullmode_failure_alerts"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["acme_audit_poller"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["hourly_usage_poller"].default_status == dg.DefaultSensorStatus.STOPPED
    jobs = {job.name: job for job in defs.jobs}
    assert set(jobs) == {"acme_audit_pull", "hourly_usage_pull"}
    assets = [defs.resolve_assets_def(k) for k in defs.resolve_all_asset_keys()]
    assert jobs["acme_audit_pull"].selection.resolve(assets) == {key}  # one pull materializes its own asset
    job = defs.resolve_job_def("acme_audit_pull")
    assert job.tags == {"pullmode/source": "acme_audit"} and job.partitions_def == daily
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}[key]
    # Freshness from the cron (*/5): warn after 2 intervals, fail after 3, at least 10 and 15 minutes.
    every_five_minutes = dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=10)
    )
    assert spec.freshness_policy == every_five_minutes
    hourly_spec = {s.key: s for s in defs.resolve_all_asset_specs()}[dg.AssetKey(["ingestion", "hourly_usage"])]
    assert hourly_spec.freshness_policy == every_five_minutes  # the same cron, though hourly partitions
    checks = {c.name for c in defs.resolve_assets_def(key).check_specs}
    assert checks == {"normalized_schema", "unique_source_event_id"}
    # HTTP sources only: no `s3` resource, so the code location never imports dagster-aws and boto3.
    assert set(defs.resources) >= {"credentials", "trace_store", "pull_settings", "pullmode_events"}
    assert "s3" not in defs.resources


def test_each_asset_describes_its_rows_columns_and_source_file(
    sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sources.write(http_source(URL))
    sources.write(http_source(URL, name="other"))
    monkeypatch.chdir(tmp_path)  # a relative sources directory: the reference is absolute all the same
    defs = build_definitions(sources.directory.relative_to(tmp_path))
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}[dg.AssetKey(["ingestion", "acme_audit"])]
    schema = spec.metadata["dagster/column_schema"]
    assert isinstance(schema, dg.TableSchema)
    # The trace store's one column list, in order, typed, with what each column holds.
    columns = {c.name: c for c in schema.columns}
    assert tuple(columns) == EVENT_COLUMNS
    assert (columns["event_timestamp"].type, columns["cost_usd"].type, columns["tokens_input"].type) == (
        "datetime",
        "float",
        "int",
    )
    assert columns["raw_payload"].type == "json" and columns["actor"].type == "string"
    assert "UTC" in columns["event_timestamp"].description
    assert columns["actor"].constraints.nullable and not columns["source_event_id"].constraints.nullable
    assert columns["source_event_id"].constraints.unique and not columns["actor"].constraints.unique
    # Its rows: one table for every source, filtered to this one (a name of its own for each asset).
    assert spec.metadata["dagster/table_name"] == "pulled_events WHERE source_name = 'acme_audit'"
    other = {s.key: s for s in defs.resolve_all_asset_specs()}[dg.AssetKey(["ingestion", "other"])]
    assert other.metadata["dagster/table_name"] == "pulled_events WHERE source_name = 'other'"
    [reference] = spec.metadata["dagster/code_references"].code_references
    assert isinstance(reference, dg.LocalFileCodeReference)
    assert (reference.file_path, reference.label) == (str(path.resolve()), "source file")
    assert Path(reference.file_path).is_absolute()


def test_a_bad_file_is_left_out_and_its_problems_are_shown(sources: SourceWriter, tmp_path: Path) -> None:
    sources.write(http_source(URL))
    sources.write(http_source(URL, name="broken_feed", schedule="every minute"))
    defs = build_definitions(
        sources.directory, resources={"trace_store": TraceStoreResource(url=f"sqlite:///{tmp_path}/t.db")}
    )
    assert {s.name for s in defs.sensors} == {"acme_audit_poller", "pullmode_failure_alerts"}
    placeholder = dg.AssetKey(["ingestion", "broken_feed"])
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}[placeholder]
    assert spec.tags["pullmode/status"] == "invalid"
    assert "This source file did not load" in spec.description
    assert "schedule: not a valid cron expression: 'every minute'" in spec.description
    result = dg.materialize([defs.resolve_assets_def(placeholder)], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "not a valid cron expression" in failure.step_failure_data.error.message


def test_an_empty_directory_loads_with_no_assets(sources: SourceWriter) -> None:
    defs = build_definitions(sources.directory)
    assert list(defs.resolve_all_asset_keys()) == []
    assert [s.name for s in defs.sensors] == ["pullmode_failure_alerts"]  # alerts wait for the first source


def test_partitions_start_at_the_utc_day_or_hour_of_start_date(sources: SourceWriter) -> None:
    """An offset moves startDate to another UTC day; an hour that does not start on the hour is the
    partition that holds it (Dagster would start at the next hour, leaving the first events out)."""
    sources.write(http_source(URL, startDate="2026-03-01T02:00:00+05:00"))
    sources.write(http_source(URL, name="hourly", partitioning="hourly", startDate="2026-03-01T02:00:00+05:00"))
    sources.write(http_source(URL, name="half_past", partitioning="hourly", startDate="2026-03-01T10:30:00Z"))
    defs = build_definitions(sources.directory)
    first = {
        name: defs.resolve_assets_def(dg.AssetKey(["ingestion", name])).partitions_def.get_first_partition_key()  # type: ignore[union-attr]
        for name in ("acme_audit", "hourly", "half_past")
    }
    assert first == {"acme_audit": "2026-02-28", "hourly": "2026-02-28-21:00", "half_past": "2026-03-01-10:00"}


def _fails_to_build(monkeypatch: pytest.MonkeyPatch, how: str) -> str:
    """Make source ``broken``'s definitions fail, the way ``how`` says; the error text expected."""
    if how == "raises while built":
        fail_source_asset(monkeypatch, "broken", ValueError("time data '26-01-01' does not match format '%Y-%m-%d'"))
        return "(ValueError: time data '26-01-01' does not match format '%Y-%m-%d')"
    real_sensor = definitions.build_poller_sensor

    def build_poller_sensor(source: SourceConfig, *args: object, **kwargs: object) -> dg.SensorDefinition:
        if source.name == "broken":  # Dagster finds it only when it resolves the whole location
            return dg.SensorDefinition(name="broken_poller", evaluation_fn=lambda _: None, job_name="no_such_job")
        return real_sensor(source, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(definitions, "build_poller_sensor", build_poller_sensor)
    return "no_such_job"


@pytest.mark.parametrize("how", ["raises while built", "fails when Dagster resolves"])
def test_a_source_whose_definitions_fail_is_a_placeholder_and_the_others_load(
    sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    for name in ("acme_audit", "broken", "zeta_feed"):
        sources.write(http_source(URL, name=name))
    expected = _fails_to_build(monkeypatch, how)
    project = build_project(
        sources.directory, resources={"trace_store": TraceStoreResource(url=f"sqlite:///{tmp_path}/t.db")}
    )
    defs = project.defs
    defs.get_repository_def()  # what loading the code location does: it loads
    assert {s.name for s in defs.sensors} == {"acme_audit_poller", "zeta_feed_poller", "pullmode_failure_alerts"}
    assert {j.name for j in defs.jobs} == {"acme_audit_pull", "zeta_feed_pull"}
    assert set(project.pollers) == {"acme_audit", "zeta_feed"}
    specs = {s.key.path[-1]: s for s in defs.resolve_all_asset_specs()}
    assert set(specs) == {"acme_audit", "broken", "zeta_feed"}
    placeholder = specs["broken"]
    assert placeholder.tags["pullmode/status"] == "invalid"
    problem = f"{sources.directory / 'broken.yaml'}: source 'broken': its Dagster definitions could not be built ("
    assert problem in placeholder.description and expected in placeholder.description
    assert [str(p) for p in project.sources.problems] == [placeholder.metadata["problems"]]
    result = dg.materialize([defs.resolve_assets_def(placeholder.key)], raise_on_error=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert problem in failure.step_failure_data.error.message
    with pytest.raises(ConfigError) as refused:  # pullmode pull broken: its problem, not "no source named"
        project.sources.get("broken")
    assert refused.value.problems == project.sources.problems
