"""``cli/sensor_state.py`` is the module that reaches Dagster's private instigator-state API
(no public Python API reads or writes a sensor's cursor). This test pins it to Dagster's own public
command, ``dagster sensor cursor``: if an upgrade changes how the daemon addresses sensor state, it
fails here, loudly, instead of ``pullmode pull`` silently writing a cursor the daemon never reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

# Private on purpose, as in test_pull_command.py: only a loaded workspace shows the selector Dagster
# keys a sensor's state by.
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.defs.alerts import SENSOR_NAME
from pullmode_dagster.defs.names import LOCATION_NAME
from pullmode_dagster.demo.run import demo_workspace

from .conftest import SourceWriter
from .dagster_helpers import WORKSPACE
from .documents import http_source


def dagster_sensor_cursor(home: Path, sources: Path, *args: str) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PULLMODE_SOURCES_DIR": str(sources)}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "sensor", "cursor", "acme_audit_poller", "-w", str(WORKSPACE), *args],
        cwd=WORKSPACE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]


@pytest.mark.slow
def test_pullmode_reads_and_writes_the_cursor_dagster_itself_addresses(sources: SourceWriter, tmp_path: Path) -> None:
    sources.write(http_source("https://api.acme.example/v1/events"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster_sensor_cursor(home, sources.directory, "--set", '{"watermark": "2026-02-01T00:00:00Z"}')
    with dg.DagsterInstance.from_config(str(home)) as instance:
        cursors = SensorCursors(instance, WORKSPACE)
        assert cursors.get("acme_audit_poller") == '{"watermark": "2026-02-01T00:00:00Z"}'
        # The production workspace reaches a standing code server over gRPC: the same sensor state.
        standing = SensorCursors(instance, WORKSPACE.parent / "deploy" / "workspace.yaml")
        assert standing.get("acme_audit_poller") == '{"watermark": "2026-02-01T00:00:00Z"}'
        cursors.set("acme_audit_poller", '{"watermark": "2026-03-01T00:00:00Z"}')
    dagster_sensor_cursor(home, sources.directory, "--delete")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert SensorCursors(instance, WORKSPACE).get("acme_audit_poller") is None


@pytest.mark.slow
def test_make_demo_make_dev_and_dagster_dev_address_one_sensor_state(
    sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make dev` serves the demo's workspace file; `make demo` writes through it; `pullmode pull` and
    `pullmode rewind` through ./workspace.yaml, `--workspace`, or the module when there is no file;
    `dagster dev` from the repository root reads workspace.yaml; the daemon in production reads
    deploy/workspace.yaml. One location name: one cursor for each poller and for the alert sensor."""
    # The demo's code location needs demo_usage (its downstream asset reads it).
    sources.write(http_source("https://api.acme.example/v1/events", name="demo_usage"))
    demo = demo_workspace(tmp_path / "demo")
    monkeypatch.chdir(tmp_path)  # no workspace.yaml here: the module's fallback origin
    with dg.instance_for_test() as instance:
        with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(demo)])) as process:
            repo = process.create_request_context().get_code_location(LOCATION_NAME).get_repository("__repository__")
            poller, alerts = repo.get_sensor("demo_usage_poller"), repo.get_sensor(SENSOR_NAME)
        for workspace in (demo, WORKSPACE, WORKSPACE.parent / "deploy" / "workspace.yaml", None):
            cursors = SensorCursors(instance, workspace)
            assert cursors._ids("demo_usage_poller")[1] == poller.selector_id, workspace
            assert cursors._ids(SENSOR_NAME)[1] == alerts.selector_id, workspace
        SensorCursors(instance, None).set("demo_usage_poller", '{"watermark": "2026-02-01T00:00:00Z"}')
        state = instance.get_instigator_state(poller.get_remote_origin_id(), poller.selector_id)
        assert state is not None and state.instigator_data.cursor == '{"watermark": "2026-02-01T00:00:00Z"}'  # type: ignore[union-attr]
