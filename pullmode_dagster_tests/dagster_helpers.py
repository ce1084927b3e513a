"""Helpers for tests of the Dagster layer: a project over temp sources, a settable clock, and
running a poller's request the way the daemon's run worker would (in process, on the instance)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from pydantic import Field

from pullmode_dagster import definitions
from pullmode_dagster.definitions import Project, build_project
from pullmode_dagster.defs.names import SOURCE_TAG, job_name, poller_name
from pullmode_dagster.defs.resources import CredentialsResource, PullSettingsResource, TraceStoreResource
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.defs.translator import PullmodeTranslator
from pullmode_dagster.engine.declare.credentials import ResolvedCredentials
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.store import SqliteTraceStore

from .bounded import LineReader
from .helpers import REPO, StepClock

Clock = StepClock[datetime]
"""The wall clock a poller sensor reads, set by the test."""


def fast_resources(store_path: Path) -> dict[str, object]:
    return {
        "trace_store": TraceStoreResource(url=f"sqlite:///{store_path}"),
        "pull_settings": PullSettingsResource(max_attempts=2, backoff_initial_seconds=0.01, backoff_max_seconds=0.02),
    }


def evaluate_sensor(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None) -> Any:
    """One evaluation of sensor ``name`` as the daemon makes it: the instance, the stored cursor and
    the code location's resources (a sensor called directly gets only the resources it is handed)."""
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources) as ctx:
        return sensor(ctx)


@dataclass
class Harness:
    project: Project
    instance: dg.DagsterInstance
    clock: Clock
    store_path: Path
    source: str

    def tick(self, cursor: str | None) -> dg.SensorResult:
        """Evaluate the poller once, as the daemon does, with the stored cursor."""
        result = evaluate_sensor(self.project.defs, poller_name(self.source), self.instance, cursor)
        assert isinstance(result, dg.SensorResult)
        return result

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return self.project.defs.resolve_job_def(job_name(self.source)).execute_in_process(
            run_config=request.run_config,
            instance=self.instance,
            partition_key=request.partition_key,
            tags=request.tags,
            raise_on_error=False,
        )

    def rows(self) -> list[dict[str, Any]]:
        with SqliteTraceStore(self.store_path) as store:
            return store.tail(source=self.source, limit=10**6)


def record_run(
    instance: dg.DagsterInstance, defs: dg.Definitions, job: str, *, status: dg.DagsterRunStatus, tags: dict[str, str]
) -> dg.DagsterRun:
    """A run of ``job`` recorded on ``instance`` in ``status`` without executing it: what the poller
    sees of a run the daemon launched (still going, or ended some other way). Through the instance's own
    ``create_run_for_job``, with the job's real snapshot, not Dagster's private ``create_run_for_test``."""
    return instance.create_run_for_job(defs.resolve_job_def(job), status=status, tags=tags)


def record_window_run(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    source: str,
    *,
    status: dg.DagsterRunStatus,
    partition: str,
    tags: dict[str, str] | None = None,
) -> dg.DagsterRun:
    """A run of ``source``'s asset as the asset page or a backfill creates it, recorded without
    executing it: Dagster's implicit asset job, one partition, none of the poller's tags."""
    return instance.create_run_for_job(
        defs.resolve_implicit_global_asset_job_def(),
        asset_selection={dg.AssetKey(["ingestion", source])},
        status=status,
        tags={"dagster/partition": partition, **(tags or {})},
    )


def failed_runs(
    instance: dg.DagsterInstance, count: int, message: str = "page 1: HTTP 500", *, source: str = "acme_audit"
) -> list[str]:
    """Failed runs of ``source`` as the event log records them, without pulling: what the alert sensor
    reads (the first opens an incident; the others belong to it)."""
    run_ids = []
    for _ in range(count):
        run = instance.add_run(
            dg.DagsterRun(job_name=f"{source}_pull", run_id=str(uuid.uuid4()), tags={SOURCE_TAG: source})
        )
        instance.report_run_failed(run, message)
        run_ids.append(run.run_id)
    return run_ids


def failing_sources(instance: dg.DagsterInstance, count: int) -> list[str]:
    """One failed run of each of ``count`` sources (``source_1`` ...): ``count`` incidents, so
    ``count`` alerts to deliver."""
    return [failed_runs(instance, 1, source=f"source_{i}")[0] for i in range(1, count + 1)]


def committed(cursor: str | None) -> dict[str, Any]:
    return PollPlanState.from_json(cursor).committed.to_dict()


def make_harness(sources_dir: Path, instance: dg.DagsterInstance, clock: Clock, tmp: Path, source: str) -> Harness:
    store_path = tmp / "trace.db"
    project = build_project(sources_dir, resources=fast_resources(store_path), clock=clock)
    return Harness(project, instance, clock, store_path, source)


WORKSPACE = REPO / "workspace.yaml"


def cli(*args: str) -> Any:
    """The pullmode command in process; ``pull`` addresses the repository's workspace, as the
    daemon would."""
    from click.testing import CliRunner

    from pullmode_dagster.cli import main

    extra = ["--workspace", str(WORKSPACE)] if args[0] == "pull" else []
    return CliRunner().invoke(main, [*args, *extra])


def fail_source_asset(monkeypatch: pytest.MonkeyPatch, name: str, error: Exception) -> None:
    """Building source ``name``'s asset raises ``error`` (the others build as usual): a failure
    injected where a bad ``startDate`` once raised while the code location loaded."""
    real = definitions.build_source_asset

    def build_source_asset(source: SourceConfig, translator: PullmodeTranslator) -> dg.AssetsDefinition:
        if source.name == name:
            raise error
        return real(source, translator)

    monkeypatch.setattr(definitions, "build_source_asset", build_source_asset)


def watermark_harness(
    url: str, sources: Any, instance: dg.DagsterInstance, tmp: Path, now: datetime, **overrides: Any
) -> Harness:
    """The ``acme_audit`` http_polling source at ``url`` with a ``created_after`` watermark filter."""
    from .documents import http_source

    sources.write(http_source(url, incrementalParams={"created_after": "${{cursor.watermark}}"}, **overrides))
    return make_harness(sources.directory, instance, Clock(now), tmp, "acme_audit")


QUICK_DAEMON = """
import sys
import dagster._daemon.controller as controller
import dagster._daemon.sensor as sensor
from dagster._daemon.cli import main

controller.DEFAULT_DAEMON_INTERVAL_SECONDS = 2  # the backfill daemon's loop (30 s)
sensor.MIN_INTERVAL_LOOP_TIME = 1  # the sensor daemon's loop (5 s): a 5 s interval is then 5 s, not 10
sys.argv[0] = "dagster-daemon"
main()
"""
"""``dagster-daemon`` with its loops a few seconds apart: the tests wait for what they assert, not ticks."""
QUICK_DAEMON_ENV = {"PULLMODE_SENSOR_INTERVAL_SECONDS": "5", "FRESHNESS_DAEMON_INTERVAL_SECONDS": "2"}
"""The pollers' and the alert sensor's interval (30 s) and the freshness daemon's (30 s), for the tests."""


@contextmanager
def running_daemon(
    tmp: Path, env: dict[str, str], describe: Any = None
) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    """``dagster-daemon run`` over this repository's code location (a workspace file in ``tmp``, the
    working directory), with ``os.environ`` plus ``env``; yields it and its output read line by line
    (``describe``: more context for a failed wait). Stopped, its whole process group, on the way out."""
    workspace = tmp / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: pullmode_dagster.definitions\n"
        "      location_name: pullmode\n"
    )
    daemon = subprocess.Popen(
        [sys.executable, "-c", QUICK_DAEMON, "run", "-w", str(workspace)],
        cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(REPO), **QUICK_DAEMON_ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        more = describe or (lambda: "")
        assert daemon.stdout is not None
        yield daemon, LineReader(daemon.stdout, lambda: f"exit code {daemon.poll()}; {more()}")
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(60)


class StaticCredentialsResource(CredentialsResource):
    """Fixed secrets per source (``{source: {key: value}}``) instead of the environment's."""

    values: dict[str, dict[str, str]] = Field(default_factory=dict)

    def resolve(self, source: SourceConfig) -> ResolvedCredentials:
        return ResolvedCredentials(self.values.get(source.name, {}))
