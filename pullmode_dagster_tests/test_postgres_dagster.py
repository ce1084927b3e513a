"""Dagster's own storage on Postgres (``deploy/dagster-postgres.yaml``), with the trace store there too:
a poller's committed cursor survives a restart (a new DagsterInstance), and the run and its
materialization are read back from Postgres."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from pullmode_dagster.cli.pull import pull_once
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.definitions import build_project
from pullmode_dagster.defs.names import poller_name
from pullmode_dagster.defs.pools import ensure_pool_limits
from pullmode_dagster.defs.resources import PullSettingsResource, TraceStoreResource
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.store import open_store

from .conftest import SourceWriter
from .dagster_helpers import Clock, evaluate_sensor
from .documents import http_source
from .fakes import CursorFeed, make_events
from .pg import connect, fresh_database

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"
PRODUCTION_CONFIG = REPO / "deploy" / "dagster-postgres.yaml"
ASSET = dg.AssetKey(["ingestion", "acme_audit"])


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def point_dagster_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment deploy/dagster-postgres.yaml reads, for the database at ``url``."""
    parts = urlsplit(url)
    monkeypatch.setenv("DAGSTER_PG_HOST", parts.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(parts.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", parts.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", parts.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", parts.path.lstrip("/"))


def instance_from(config: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """A new DagsterInstance (a process start) from ``config`` installed as ``home``/dagster.yaml,
    found the way the daemon and ``pullmode pull`` find it: ``$DAGSTER_HOME``."""
    home.mkdir(exist_ok=True)
    shutil.copy(config, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.get()


@pytest.mark.slow
def test_the_committed_cursor_and_the_materialization_survive_a_restart_on_postgres(
    pg_url: str, api: LoopbackServer, sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-pg-2222")
    point_dagster_at(pg_url, monkeypatch)
    api.routes["/v1/events"] = feed = CursorFeed(make_events(40), page_size=10)
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))
    resources = {
        "trace_store": TraceStoreResource(url=pg_url),
        "pull_settings": PullSettingsResource(max_attempts=2, backoff_initial_seconds=0.01, backoff_max_seconds=0.02),
    }
    later = Clock(datetime.now(UTC) + timedelta(minutes=10))  # past the next cron tick of the pull below
    project = build_project(sources.directory, resources=resources, clock=later)
    home = tmp_path / "dagster_home"

    # One poll cycle the way `pullmode pull` runs it: decide, run, settle, store the sensor cursor.
    with instance_from(PRODUCTION_CONFIG, home, monkeypatch) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        outcome = pull_once(
            pollers=project.pollers,
            defs=project.defs,
            instance=instance,
            cursors=SensorCursors(instance, WORKSPACE),
            name="acme_audit",
            echo=lambda line: None,
        )
        assert outcome.ok, outcome.message

    # A restart: a new instance from the same configuration reads everything back from Postgres.
    with instance_from(PRODUCTION_CONFIG, home, monkeypatch) as restarted:
        stored = SensorCursors(restarted, WORKSPACE).get(poller_name("acme_audit"))
        state = PollPlanState.from_json(stored)
        assert state.committed.to_dict() == {"v": 1, "watermark": "2026-03-01T00:39:00.000000Z"}
        assert state.in_flight is None
        assert state.last_pull is not None and state.last_pull["run_id"] == outcome.run_id
        run = restarted.get_run_by_id(outcome.run_id)  # type: ignore[arg-type]
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        event = restarted.get_latest_materialization_event(ASSET)
        assert event is not None and event.run_id == outcome.run_id
        metadata = event.asset_materialization.metadata  # type: ignore[union-attr]
        assert metadata["events_written"].value == 40
        assert metadata["dagster/row_count"].value == 0  # all 40 are dated Mar 1, not in the run's partition (today)
        assert metadata["cursor_after"].value == state.committed.to_dict()
        checks = {
            e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed  # type: ignore[union-attr]
            for e in restarted.all_logs(outcome.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)  # type: ignore[arg-type]
        }
        assert checks == {"normalized_schema": True, "unique_source_event_id": True}  # computed on the Postgres store

        # The daemon's next tick of the poller, on the restarted instance, pulls from that cursor
        # (something new upstream: its probe, asked from that cursor too, finds it).
        feed.events += make_events(1, start=40)
        result = evaluate_sensor(project.defs, poller_name("acme_audit"), restarted, stored)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.run_requests
        assert (
            '"watermark":"2026-03-01T00:39:00.000000Z"'
            in request.run_config["ops"]["ingestion__acme_audit"]["config"]["cursor"]
        )

    # And it is all in the Postgres database itself, next to the trace store's tables.
    with connect(pg_url) as conn:
        assert conn.execute("SELECT run_id, status FROM runs").fetchall() == [(outcome.run_id, "SUCCESS")]
        assert conn.execute(
            "SELECT partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND run_id = %s "
            "ORDER BY id",
            [outcome.run_id],
        ).fetchall() == [("2026-03-01",), (run.tags["dagster/partition"],)]  # the events' day, then the run's
    with open_store(pg_url) as store:
        assert store.count(source="acme_audit") == 40
        integrity = store.integrity(source="acme_audit", run_id=outcome.run_id)  # type: ignore[arg-type]
        assert (integrity.rows, integrity.duplicate_keys, integrity.invalid_rows) == (40, 0, 0)


@pytest.mark.parametrize(
    "config", [REPO / "dagster.yaml", *sorted((REPO / "deploy").glob("dagster*.yaml"))], ids=lambda p: p.name
)
def test_every_shipped_instance_config_loads_with_one_run_per_source(
    config: Path, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each source's pool holds one run at a time: the queue (dagster-daemon) enforces it per run,
    and the storage keeps the pools' limits (SQLite and Postgres alike)."""
    monkeypatch.chdir(tmp_path)  # dagster.yaml's relative SQLite paths land here
    point_dagster_at(pg_url, monkeypatch)
    with instance_from(config, tmp_path / "home", monkeypatch) as instance:
        instance.get_runs()  # the storage answers
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        pools = instance.get_concurrency_config().pool_config
        assert (pools.pool_granularity.value, pools.default_pool_limit) == ("run", 1)  # type: ignore[union-attr]
        assert ensure_pool_limits(instance, ["acme_audit"]) == ["pullmode/acme_audit"]
        (limit,) = instance.event_log_storage.get_pool_limits()
        assert (limit.name, limit.limit) == ("pullmode/acme_audit", 1)
