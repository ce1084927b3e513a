"""The UI's access model (README, "Running in production"; docs/ui-access.md): Dagster's open-source
webserver has no login, and ``dagster-webserver --read-only`` is what a viewer gets. Against real
webservers over a pulled source, through the GraphQL API (what the UI's buttons call, and what
anyone who reaches the port can call, no credentials asked): both show the metadata and the
poller's cursor; the plain one launches a pull, a backfill, sets the cursor (a rewind), starts and
stops the poller for anyone; the read-only one refuses each, and nothing changes in the instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pullmode_dagster.defs.names import job_name, poller_name
from pullmode_dagster.defs.sensor_state import SensorCursors
from pullmode_dagster.demo.server import LoopbackServer

from .conftest import SourceWriter, http_source
from .dagster_helpers import WORKSPACE, cli
from .fakes import CursorFeed, make_events
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
