"""``defs/sensor_state.py`` is the one module that reaches Dagster's private instigator-state API
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

from pullmode_dagster.defs.sensor_state import SensorCursors

from .conftest import SourceWriter, http_source
from .dagster_helpers import WORKSPACE


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
