"""The UI's access model (README, "Running in production"; docs/ui-access.md): Dagster's open-source
webserver has no login, and ``dagster-webserver --read-only`` is what a viewer gets. Against real
webservers over a pulled source, through the GraphQL API (what the UI's buttons call, and what
anyone who reaches the port can call, no credentials asked): both show the metadata and the
poller's cursor; the plain one launches a pull, a backfill, sets the cursor (a rewind), starts and
stops the poller for anyone; the read-only one refuses each, and nothing changes in the instance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.definitions import build_project
from pullmode_dagster.defs.alerts import SENSOR_NAME
from pullmode_dagster.defs.names import job_name, poller_name
from pullmode_dagster.demo.server import LoopbackServer

from .conftest import SourceWriter
from .dagster_helpers import WORKSPACE, cli, evaluate_sensor
from .documents import http_source
from .fakes import CursorFeed, make_events
from .test_alerts import Receiver
from .ui_helpers import LOCATION, REPOSITORY, Webserver

SOURCE = "acme_audit"
REPO_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
SENSOR_SELECTOR = {**REPO_SELECTOR, "sensorName": poller_name(SOURCE)}

READ = """
query Read($sensor: SensorSelector!) {
  assetOrError(assetKey: {path: ["ingestion", "acme_audit"]}) {
    __typename
    ... on Asset { assetMaterializations(limit: 1) { metadataEntries { label } } }
  }
  sensorOrError(sensorSelector: $sensor) {
    __typename
    ... on Sensor { sensorState { id status typeSpecificData { ... on SensorData { lastCursor } } } }
  }
}
"""
ERROR = "__typename ... on PythonError { message } ... on UnauthorizedError { message }"
MUTATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "launch a pull": (
        f"mutation($p: ExecutionParams!) {{ launchRun(executionParams: $p) {{ {ERROR} }} }}",
        {"p": {"selector": {**REPO_SELECTOR, "jobName": job_name(SOURCE)}, "runConfigData": {}}},
    ),
    "backfill": (
        f"mutation($p: LaunchBackfillParams!) {{ launchPartitionBackfill(backfillParams: $p) {{ {ERROR} }} }}",
        {"p": {"assetSelection": [{"path": ["ingestion", SOURCE]}], "partitionNames": ["2026-03-01"]}},
    ),
    "rewind (Set cursor value)": (
        f'mutation($s: SensorSelector!) {{ setSensorCursor(sensorSelector: $s, cursor: "{{}}") {{ {ERROR} }} }}',
        {"s": SENSOR_SELECTOR},
    ),
    "start the poller": (
        f"mutation($s: SensorSelector!) {{ startSensor(sensorSelector: $s) {{ {ERROR} }} }}",
        {"s": SENSOR_SELECTOR},
    ),
    "reset the poller": (
        f"mutation($s: SensorSelector!) {{ resetSensor(sensorSelector: $s) {{ {ERROR} }} }}",
        {"s": SENSOR_SELECTOR},
    ),
}
STOP = f"mutation($id: String!) {{ stopSensor(id: $id) {{ {ERROR} }} }}"


OPEN = {
    "launch a pull": "LaunchRunSuccess",
    "backfill": "LaunchBackfillSuccess",
    "rewind (Set cursor value)": "Sensor",
    "start the poller": "Sensor",
    "reset the poller": "Sensor",
    "stop the poller": "StopSensorMutationResult",
}
"""What a webserver without ``--read-only`` answers anyone who asks."""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "as-shipped"])
def test_what_a_webserver_lets_anyone_who_reaches_it_do(
    read_only: bool,
    home: Path,
    api: LoopbackServer,
    sources: SourceWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-ui-access-5555")
    api.routes["/v1/events"] = CursorFeed(make_events(12), page_size=10)
    sources.write(http_source(api.url("/v1/events")))
    pulled = cli("pull", SOURCE)
    assert pulled.exit_code == 0, pulled.output
    with dg.DagsterInstance.get() as instance:
        cursor = SensorCursors(instance, WORKSPACE).get(poller_name(SOURCE))
        runs = len(instance.get_runs())
    assert cursor

    options = ("--read-only",) if read_only else ()
    with Webserver(cwd=tmp_path, env={}, options=options) as server:
        seen = server.graphql(READ, {"sensor": SENSOR_SELECTOR})
        labels = {e["label"] for e in seen["assetOrError"]["assetMaterializations"][0]["metadataEntries"]}
        assert {"events_written", "cursor_after"} <= labels  # a viewer reads the pulls' metadata
        assert seen["sensorOrError"]["sensorState"]["typeSpecificData"]["lastCursor"] == cursor
        answers = {}
        for action, (mutation, variables) in MUTATIONS.items():
            (answer,) = server.graphql(mutation, variables).values()
            answers[action] = answer["__typename"]
        (answer,) = server.graphql(STOP, {"id": seen["sensorOrError"]["sensorState"]["id"]}).values()
        answers["stop the poller"] = answer["__typename"]
    if not read_only:
        assert answers == OPEN  # no login, no role: whoever reaches the port
        return
    assert answers == dict.fromkeys(OPEN, "UnauthorizedError")

    with dg.DagsterInstance.get() as instance:
        assert SensorCursors(instance, WORKSPACE).get(poller_name(SOURCE)) == cursor
        assert len(instance.get_runs()) == runs
        assert instance.get_backfills() == []


LAUNCH = (
    "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { "
    f"{ERROR} ... on LaunchRunSuccess {{ run {{ runId }} }} }} }}"
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_launched_over_graphql_cannot_change_the_deployments_resources(
    home: Path, api: LoopbackServer, sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone who reaches the webserver may launch a run with any run config: Dagster accepts one that
    points the trace store elsewhere and shows event content (the values the code location binds are
    only defaults). The run worker refuses it before anything is pulled: no request to the vendor,
    nothing in the other database; the failure, and the alert it raises, name what the run tried to change."""
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-ui-access-5555")
    monkeypatch.setenv("PULLMODE_EVENT_CONTENT", "hidden")
    receiver = Receiver()
    api.routes["/hook"] = receiver
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", api.url("/hook"))
    api.routes["/v1/events"] = CursorFeed(make_events(3), page_size=10)
    sources.write(http_source(api.url("/v1/events")))
    # Runs start at once, without the daemon's queue (Dagster's default and the repository's dagster.yaml queue them).
    (home / "dagster.yaml").write_text(
        "storage:\n  sqlite:\n    base_dir: .pullmode/dagster\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    elsewhere = tmp_path / "elsewhere.db"
    run_config = {
        "resources": {
            "trace_store": {"config": {"url": f"sqlite:///{elsewhere}"}},
            "pull_settings": {"config": {"event_content": "shown"}},
        }
    }
    params = {
        "selector": {**REPO_SELECTOR, "jobName": job_name(SOURCE)},
        "runConfigData": run_config,
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "2026-03-01"}]},
    }
    with Webserver(cwd=tmp_path, env={}) as server:
        answer = server.graphql(LAUNCH, {"p": params})["launchRun"]
        assert answer["__typename"] == "LaunchRunSuccess", answer  # Dagster takes the override
        run_id = answer["run"]["runId"]
        with dg.DagsterInstance.get() as instance:
            deadline = time.monotonic() + 90
            while not (run := instance.get_run_by_id(run_id)) or not run.is_finished:
                assert time.monotonic() < deadline, f"the run did not end:\n{server.log_tail()}"
                time.sleep(0.5)
            assert run.run_config == run_config  # what the launcher asked for, as Dagster keeps it
            assert run.status == dg.DagsterRunStatus.FAILURE
            evaluate_sensor(build_project(sources.directory).defs, SENSOR_NAME, instance, None)
    # The failure, and the alert the attempt raises, name what the run tried to change (not the values).
    (alert,) = receiver.alerts
    changed = ("resources.trace_store.config.url", "resources.pull_settings.config.event_content")
    assert alert["kind"] == "failing" and all(field in alert["text"] for field in changed), alert
    assert "elsewhere" not in alert["text"]
    assert [r.path for r in api.requests] == ["/hook"] and not elsewhere.exists()  # no request to the vendor
