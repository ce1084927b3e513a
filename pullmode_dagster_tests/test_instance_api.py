"""``defs/instance_api.py``: each instance call outside Dagster's public API, pinned against a real
instance, so an upgrade of Dagster that changes one fails here by name rather than in a sensor."""

from collections.abc import Iterator

import dagster as dg
import pytest

from pullmode_dagster.defs import instance_api

KEY = dg.AssetKey(["ingestion", "seam"])


@dg.op
def pulls_then_fails(context: dg.OpExecutionContext) -> None:
    context.log_event(dg.AssetMaterialization(KEY, metadata={"events_written": 3}))
    context.log_event(dg.AssetObservation(KEY, metadata={"checkpoint": {"n": 1}}))
    raise dg.Failure(description="source 'seam': boom")


@dg.job
def seam_job() -> None:
    pulls_then_fails()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        yield instance


def test_a_runs_events_are_read_by_type_in_order(instance: dg.DagsterInstance) -> None:
    assert instance_api.newest_event_id(instance) is None
    run_id = seam_job.execute_in_process(instance=instance, raise_on_error=False).run_id
    (materialization,) = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert materialization.event_log_entry.asset_materialization.metadata["events_written"].value == 3  # type: ignore[union-attr]
    (observation,) = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.ASSET_OBSERVATION)
    assert observation.storage_id > materialization.storage_id
    (step,) = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.STEP_FAILURE)
    assert step.event_log_entry.dagster_event.step_failure_data.user_failure_data.description == "source 'seam': boom"  # type: ignore[union-attr]
    (ended,) = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.RUN_FAILURE)
    assert ended.event_log_entry.run_id == run_id
    # The bound the alert sensor reads status changes up to: the run's failure is the newest of them.
    (status,) = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=5).records
    assert instance_api.newest_event_id(instance) == status.storage_id
    assert instance_api.run_records_of_type(instance, "no-such-run", dg.DagsterEventType.RUN_FAILURE) == []


def test_a_run_is_tagged_and_failed_from_outside(instance: dg.DagsterInstance) -> None:
    run = instance.create_run_for_job(seam_job, status=dg.DagsterRunStatus.STARTED, tags={})
    instance_api.add_run_tags(instance, run.run_id, {"pullmode/process": "host:1:2:3:4"})
    instance_api.report_run_failed(instance, run, "pullmode: the process is gone")
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and after.status == dg.DagsterRunStatus.FAILURE
    assert after.tags["pullmode/process"] == "host:1:2:3:4"
    (failure,) = instance_api.run_records_of_type(instance, run.run_id, dg.DagsterEventType.RUN_FAILURE)
    assert failure.event_log_entry.message == "pullmode: the process is gone"


def test_the_key_value_store_round_trips(instance: dg.DagsterInstance) -> None:
    assert instance_api.read_value(instance, "pullmode_test/state") is None
    instance_api.write_value(instance, "pullmode_test/state", '{"seen": 7}')
    instance_api.write_value(instance, "pullmode_test/other", "x")
    assert instance_api.read_value(instance, "pullmode_test/state") == '{"seen": 7}'


def test_a_pool_gets_the_default_limit(instance: dg.DagsterInstance) -> None:
    assert instance_api.default_pool_limit(instance) == 1
    assert instance_api.limited_pools(instance) == set()
    instance_api.limit_pool_to_default(instance, "pullmode/seam")
    assert instance_api.limited_pools(instance) == {"pullmode/seam"}
    with dg.instance_for_test() as unlimited:
        assert instance_api.default_pool_limit(unlimited) is None


def test_freshness_states_leave_out_an_asset_never_evaluated(instance: dg.DagsterInstance) -> None:
    assert dict(instance_api.freshness_states(instance, [KEY])) == {}


def test_the_sensor_timeout_is_dagsters_default_or_what_its_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS", raising=False)
    assert instance_api.sensor_timeout_seconds() == 60
    monkeypatch.setenv("DAGSTER_GRPC_TIMEOUT_SECONDS", "90")
    assert instance_api.sensor_timeout_seconds() == 90
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "7")
    assert instance_api.sensor_timeout_seconds() == 7


def test_built_resources_are_read_as_the_objects_a_run_gets() -> None:
    """An S3Resource attaches its boto3 client to a context; the poller needs the resource."""
    from dagster_aws.s3 import S3Resource

    bound = {"s3": S3Resource(region_name="eu-west-1"), "n": dg.ResourceDefinition.hardcoded_resource(3)}
    with dg.build_resources(bound) as built:
        assert not isinstance(built.s3, S3Resource)  # what Dagster attaches, the reason for the seam
        objects = instance_api.resource_objects(built)
    assert isinstance(objects["s3"], S3Resource) and objects["s3"].region_name == "eu-west-1" and objects["n"] == 3
