"""`pullmode pull` and the code location as `dagster dev` loads it from workspace.yaml."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

# Private on purpose, like cli/sensor_state.py: no public API loads a workspace's remote sensors, whose
# origin ids the sensor cursors are keyed by; this test is what fails loudly when Dagster changes them.
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from pullmode_dagster.cli import main
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.definitions import build_definitions
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer, Response

from .conftest import SourceWriter
from .dagster_helpers import fail_source_asset, record_run
from .documents import http_source
from .fakes import CursorFeed, make_events
from .test_poller_sensor import BAD_HAND_SET_CURSORS

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME with the repository's dagster.yaml, and a trace store, in a temp directory."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.chdir(tmp_path)  # dagster.yaml's relative storage paths land here
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/trace.db")
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-cli-pull-8888")
    return home


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.get() as inst:
        yield inst


def stored(instance: dg.DagsterInstance, sensor: str = "acme_audit_poller") -> PollPlanState:
    return PollPlanState.from_json(SensorCursors(instance, WORKSPACE).get(sensor))


def pull(*args: str) -> object:
    return CliRunner().invoke(main, ["pull", *args, "--workspace", str(WORKSPACE)])


@pytest.mark.slow
def test_pull_commits_only_after_success(
    api: LoopbackServer, sources: SourceWriter, instance: dg.DagsterInstance
) -> None:
    feed = CursorFeed(make_events(40), page_size=10)
    api.routes["/v1/events"] = feed
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))

    first = pull("acme_audit")
    assert first.exit_code == 0, first.output
    assert "acme_audit: 40 written, 0 duplicates skipped, 0 rejected, 4 pages" in first.output
    assert stored(instance).committed.watermark == "2026-03-01T00:39:00.000000Z"
    assert stored(instance).in_flight is None

    routes = dict(api.routes)
    api.routes["/v1/events"] = lambda r: Response(401, {"error": "expired"})
    failed = pull("acme_audit")
    assert failed.exit_code == 1
    assert "acme_audit: FAILED: source 'acme_audit': page 1: HTTP 401 error from " in failed.output
    assert "tok-cli-pull-8888" not in failed.output
    assert stored(instance).committed.watermark == "2026-03-01T00:39:00.000000Z"

    api.routes.update(routes)
    feed.events += make_events(3, start=40)
    api.requests.clear()
    again = pull("acme_audit")
    assert again.exit_code == 0 and "acme_audit: 3 written, 0 duplicates skipped" in again.output
    # The probe's request, then the run's: both from the committed watermark.
    assert [r.arg("created_after") for r in api.requests] == ["2026-03-01T00:39:00.000000Z"] * 2
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"pullmode/source": "acme_audit"}))
    assert [r.status for r in runs] == [
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.SUCCESS,
    ]


@pytest.mark.slow
def test_pull_refuses_while_a_pull_is_in_flight_and_all_skips_disabled(
    api: LoopbackServer, sources: SourceWriter, instance: dg.DagsterInstance
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(5))
    sources.write(http_source(api.url("/v1/events")))
    sources.write(http_source(api.url("/v1/events"), name="paused", enabled=False))
    record_run(
        instance,
        build_definitions(sources.directory),
        "acme_audit_pull",
        status=dg.DagsterRunStatus.STARTED,
        tags={"pullmode/source": "acme_audit", "pullmode/mode": "poll", "pullmode/pull_id": "acme_audit:x"},
    )
    busy = pull("--all")
    assert busy.exit_code == 1
    assert "paused: disabled, not pulled" in busy.output
    assert "acme_audit: not pulled: another pull of this source is in flight" in busy.output
    unknown = pull("acme_audt")
    assert unknown.exit_code == 1 and "did you mean 'acme_audit'?" in unknown.output


@pytest.mark.slow
def test_workspace_loads_like_dagster_dev_and_pull_addresses_the_same_sensor_state(
    api: LoopbackServer, sources: SourceWriter, instance: dg.DagsterInstance
) -> None:
    sources.write(http_source(api.url("/v1/events")))
    sources.write(http_source(api.url("/v1/events"), name="broken", schedule="nope"))
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(WORKSPACE)])) as process:
        location = process.create_request_context().get_code_location("pullmode")
        repo = location.get_repository("__repository__")
        keys = {tuple(node.asset_key.path) for node in repo.get_asset_node_snaps()}
        assert keys == {("ingestion", "acme_audit"), ("ingestion", "broken")}
        checks = {(tuple(c.asset_key.path), c.name) for c in repo.get_asset_check_node_snaps()}
        assert checks == {
            (("ingestion", "acme_audit"), "normalized_schema"),
            (("ingestion", "acme_audit"), "unique_source_event_id"),
        }
        sensor = repo.get_sensor("acme_audit_poller")
        assert {s.name for s in repo.get_sensors()} == {"acme_audit_poller", "pullmode_failure_alerts"}
        cursors = SensorCursors(instance, WORKSPACE)
        origin, selector_id = cursors._ids("acme_audit_poller")
        assert (origin.get_id(), selector_id) == (sensor.get_remote_origin_id(), sensor.selector_id)
        cursors.set("acme_audit_poller", json.dumps({"watermark": "2026-03-01T00:00:00Z"}))
        state = instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
        assert json.loads(state.instigator_data.cursor) == {"watermark": "2026-03-01T00:00:00Z"}


@pytest.mark.slow
def test_one_sources_typo_or_broken_definitions_do_not_stop_another_sources_pull(
    api: LoopbackServer, sources: SourceWriter, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """startDate 0026-01-01 made building the partitions raise, which took every source down
    ("unexpected ValueError"); now it is a bad file, and a source whose definitions raise for any
    other reason is left out the same way."""
    api.routes["/v1/events"] = CursorFeed(make_events(3))
    sources.write(http_source(api.url("/v1/events")))
    typo = sources.write(http_source(api.url("/v1/events"), name="typo_feed", startDate="0026-01-01"))
    broken = sources.write(http_source(api.url("/v1/events"), name="broken"))
    fail_source_asset(monkeypatch, "broken", RuntimeError("injected"))
    result = pull("acme_audit")
    assert result.exit_code == 0, result.output
    assert "acme_audit: 3 written, 0 duplicates skipped, 0 rejected, 1 pages" in result.output
    assert stored(instance).committed.watermark == "2026-03-01T00:02:00.000000Z"
    for name, problem in [
        ("typo_feed", f"{typo}: source 'typo_feed': startDate: out of range"),
        ("broken", f"{broken}: source 'broken': its Dagster definitions could not be built (RuntimeError: injected)"),
    ]:
        refused = pull(name)
        assert refused.exit_code == 1 and refused.output.startswith(problem), refused.output


@pytest.mark.slow
def test_a_bad_hand_set_cursor_refuses_its_source_in_one_line_and_pull_all_pulls_the_others(
    api: LoopbackServer, sources: SourceWriter, instance: dg.DagsterInstance
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(3))
    sources.write(http_source(api.url("/v1/events")))
    sources.write(http_source(api.url("/v1/events"), name="cust"))
    cursors = SensorCursors(instance, WORKSPACE)
    for n, (cursor, problem) in enumerate(BAD_HAND_SET_CURSORS):
        cursors.set("acme_audit_poller", json.dumps(cursor))
        result = pull("--all")
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert f"acme_audit: not pulled: {problem}" in lines, result.output
        # The other source is pulled all the same: its events the first time, a quiet poll after.
        expected = "cust: 3 written, " if n == 0 else "cust: nothing new (1 request, "
        assert any(line.startswith(expected) for line in lines), result.output
        assert len(lines) == 2, result.output
        assert cursors.get("acme_audit_poller") == json.dumps(cursor)  # refused, left as it was set


@pytest.mark.slow
def test_pull_with_nothing_new_records_a_quiet_poll_and_always_run_runs(
    api: LoopbackServer, sources: SourceWriter, instance: dg.DagsterInstance
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(5), page_size=10)
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))
    assert pull("acme_audit").exit_code == 0
    committed = stored(instance).committed
    api.requests.clear()

    quiet = pull("acme_audit")
    assert quiet.exit_code == 0, quiet.output
    (line,) = quiet.output.splitlines()
    assert line.startswith("acme_audit: nothing new (1 request, ") and line.endswith(" s); recorded a quiet poll")
    assert len(api.requests) == 1 and stored(instance).committed == committed
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"pullmode/source": "acme_audit"}))
    assert len(runs) == 1  # the first pull's only
    record = instance.fetch_materializations(dg.AssetKey(["ingestion", "acme_audit"]), limit=1).records[0]
    meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}  # type: ignore[union-attr]
    assert record.run_id == "" and meta["poll"] == "quiet poll" and meta["events_written"] == 0
    assert meta["cursor_after"] == committed.to_dict()

    api.requests.clear()
    forced = pull("acme_audit", "--always-run")
    assert forced.exit_code == 0 and "acme_audit: 0 written" in forced.output
    assert len(api.requests) == 1  # the run's request only: no probe
    assert len(instance.get_runs(filters=dg.RunsFilter(tags={"pullmode/source": "acme_audit"}))) == 2


def test_a_dagster_home_that_is_not_a_directory_is_named_with_its_fix(
    sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was "error: unexpected FileNotFoundError". Refused, as Dagster's own commands refuse it, not
    created: a typo would open a new, empty instance where every poller starts from the beginning."""
    sources.write(http_source("https://api.acme.example/v1/events"))
    file = tmp_path / "a_file"
    file.write_text("")
    for home, what in ((tmp_path / "no_such_home", "does not exist"), (file, "is not a directory")):
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        for command in (["pull", "acme_audit"], ["rewind", "acme_audit", "--cursor", "{}"]):
            result = CliRunner().invoke(main, command)
            assert result.exit_code == 1
            assert result.output == (
                f"error: DAGSTER_HOME={home} {what}: point it at the directory holding the instance's dagster.yaml "
                f"(mkdir -p {home} to start a new instance there), or unset it to use ./dagster.yaml from the "
                "repository root\n"
            )
    assert not (tmp_path / "no_such_home").exists()
