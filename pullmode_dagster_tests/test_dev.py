"""``make dev`` (``pullmode demo --ui``) as a data engineer meets it (issue #21): it serves the demo's
sources and the project's own ``sources/`` in one code location, the dev process gets the sources'
credential variables (exported, or in a ``.env`` of the working directory, which ``dagster dev``
reads), it honours ``DAGSTER_CLI_DEV_PORT`` in what it prints and in alert links, the demo sources
start a week back, and the downstream asset follows the pulls under the daemon."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.demo.definitions import AUTOMATION_SENSOR, build_demo_definitions
from pullmode_dagster.demo.downstream import DAILY
from pullmode_dagster.demo.run import dev_environment, dev_url, project_source_dirs
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.demo.setup import demo_start, prepare_demo
from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import load_sources

from .bounded import LineReader
from .conftest import SourceWriter
from .documents import http_source
from .fakes import CursorFeed, make_events
from .helpers import free_port, install_quick_config, wait_for

REPO = Path(__file__).resolve().parents[1]
USAGE = dg.AssetKey(["ingestion", "demo_usage"])
COST = dg.AssetKey(["usage", "daily_cost_by_actor"])
TOKEN = "tok-dev-7777"


def test_the_sources_of_several_directories_load_as_one_and_a_name_stays_unique_across_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo, project = SourceWriter(tmp_path / "demo"), SourceWriter(tmp_path / "project")
    for writer in (demo, project):
        writer.directory.mkdir()
    demo.write(http_source("http://127.0.0.1:9/a", name="demo_feed"))
    project.write(http_source("http://127.0.0.1:9/b", name="acme_audit"))
    both = f"{demo.directory}{os.pathsep}{project.directory}"
    monkeypatch.setenv("PULLMODE_SOURCES_DIR", both)
    loaded = load_sources(adapters=ADAPTERS)
    assert (sorted(loaded.sources), loaded.problems) == (["acme_audit", "demo_feed"], [])
    assert loaded.sources["acme_audit"].file == project.directory / "acme_audit.yaml"
    ok = CliRunner().invoke(main, ["validate"])
    assert (ok.exit_code, ok.output) == (0, f"ok: 2 source(s) in {both}: acme_audit, demo_feed\n")

    project.write(http_source("http://127.0.0.1:9/c", name="demo_feed"), file="mine.yaml")
    clash = load_sources(adapters=ADAPTERS)
    assert sorted(clash.sources) == ["acme_audit"]
    assert [str(p) for p in clash.problems] == [
        f"{project.directory / 'mine.yaml'}: source 'demo_feed': name: duplicate name, already used by "
        f"{demo.directory / 'demo_feed.yaml'}"
    ]


def test_the_dev_environment_serves_both_directories_on_the_dev_port_with_the_users_variables(tmp_path: Path) -> None:
    demo, project, missing = tmp_path / "demo", tmp_path / "project", tmp_path / "missing"
    demo.mkdir()
    project.mkdir()
    assert project_source_dirs(f"{project}{os.pathsep}{missing}") == [project.resolve()]
    base = {"DAGSTER_CLI_DEV_PORT": "3123", "ACME_AUDIT_TOKEN": TOKEN, "DAGSTER_HOME": str(tmp_path)}
    env = dev_environment(base, sources=[demo, project], fallback_home=tmp_path / "home")
    assert env["PULLMODE_SOURCES_DIR"] == f"{demo}{os.pathsep}{project}"
    assert env["PULLMODE_UI_BASE_URL"] == "http://127.0.0.1:3123"  # the alerts' run links
    assert env["ACME_AUDIT_TOKEN"] == TOKEN  # a source's credential variable reaches dagster dev
    assert dev_url({}) == "http://127.0.0.1:3000"
    assert dev_url({"DAGSTER_CLI_DEV_HOST": "0.0.0.0", "DAGSTER_CLI_DEV_PORT": "8080"}) == "http://127.0.0.1:8080"
    own = dev_environment(
        {**base, "PULLMODE_UI_BASE_URL": "https://dagster.acme.example"}, sources=[demo], fallback_home=tmp_path
    )
    assert own["PULLMODE_UI_BASE_URL"] == "https://dagster.acme.example"


def test_the_demo_sources_and_the_downstream_asset_start_a_week_back(tmp_path: Path) -> None:
    directory = prepare_demo(tmp_path / "demo")
    start = demo_start()
    assert (datetime.now(UTC).date() - start).days == 7
    for path in sorted(directory.glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["startDate"] == start.isoformat(), path.name
    assert DAILY.get_first_partition_key() == start.isoformat()


def test_the_downstream_asset_follows_each_pull_of_todays_usage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its automation condition requests today's partition after a pull of any of today's usage hours
    (an earlier hour without a pull does not hold it back), once per pull; its sensor runs by default."""
    monkeypatch.setenv("PULLMODE_SOURCES_DIR", str(prepare_demo(tmp_path / "demo")))
    defs = build_demo_definitions()
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    now = datetime.now(UTC)
    today, hour = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m-%d-%H:00")
    cost = dg.AssetSelection.assets(COST)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(COST, partition=today))  # the demo's own run
        quiet = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(COST)
        )
        assert quiet.total_requested == 0
        instance.report_runless_asset_event(dg.AssetMaterialization(USAGE, partition=hour))  # a pull
        pulled = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=cost, cursor=quiet.cursor
        )
        assert pulled.get_requested_partitions(COST) == {today}
        again = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=cost, cursor=pulled.cursor
        )
        assert again.total_requested == 0


# -- make dev, for real ------------------------------------------------------------------------------


class Webhook:
    """Collects the alerts POSTed to it."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Response:
        self.alerts.append(request.json())
        return Response(200, {"ok": True})


def graphql(port: int, query: str) -> dict[str, Any]:
    response = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30.0, trust_env=False)
    body = response.json()
    assert response.status_code == 200 and not body.get("errors"), body
    return body["data"]


def answering(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2.0, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


WORKSPACE = """{ workspaceOrError { ... on Workspace { locationEntries { loadStatus locationOrLoadError {
  __typename ... on PythonError { message }
  ... on RepositoryLocation { repositories { sensors { name sensorState { status } }
                                             assetNodes { assetKey { path } } } } } } } } }"""
RUNS = """{ runsOrError(limit: 200) { ... on Runs { results { runId status tags { key value } } } } }"""


def runs(port: int) -> list[tuple[str, dict[str, str]]]:
    results = graphql(port, RUNS)["runsOrError"]["results"]
    return [(r["status"], {t["key"]: t["value"] for t in r["tags"]}) for r in results]


@contextmanager
def make_dev(cwd: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    """``make dev``'s command (``pullmode demo --ui``) in ``cwd``, in its own process group, stopped
    with everything it started (the demo's servers, dagster dev, its webserver, daemon and code
    servers) on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pullmode_dagster.cli", "demo", "--ui", "--port", "0"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process, LineReader(process.stdout, lambda: f"exit code {process.poll()}")  # type: ignore[arg-type]
    finally:
        for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
                process.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything of the group still there


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_make_dev_serves_the_demo_and_the_project_sources_with_their_credentials_on_the_dev_port(
    tmp_path: Path,
) -> None:
    """From a project's root (its dagster.yaml, its ``sources/``, a ``.env`` holding a source's token),
    ``pullmode demo --ui`` with ``DAGSTER_CLI_DEV_PORT`` set: it prints that address; the UI there
    shows the demo's sources, the project's and the downstream asset; the project source's poller
    pulls under the daemon with the token from ``.env``; a failing source's alert links to that port;
    and the downstream asset is materialized by its automation sensor after a pull."""
    install_quick_config(tmp_path)
    feed = CursorFeed(make_events(5), token=TOKEN)
    webhook = Webhook()
    with LoopbackServer({"/v1/events": feed, "/hook": webhook}) as api:
        api.routes["/v1/broken"] = lambda _: Response(500, {"error": "down"})
        project = SourceWriter(tmp_path / "sources")
        project.directory.mkdir()
        project.write(http_source(api.url("/v1/events"), schedule="* * * * *"))
        project.write(http_source(api.url("/v1/broken"), name="broken", schedule="* * * * *"))
        (tmp_path / ".env").write_text(f"ACME_AUDIT_TOKEN={TOKEN}\n")  # not in the environment below
        port = free_port()
        drop = {"DAGSTER_HOME", "PULLMODE_SOURCES_DIR", "PULLMODE_TRACE_STORE_URL", "PULLMODE_UI_BASE_URL"}
        env = {k: v for k, v in os.environ.items() if k not in drop and k != "ACME_AUDIT_TOKEN"}
        env.update(
            PYTHONPATH=str(REPO),
            DAGSTER_CLI_DEV_PORT=str(port),
            PULLMODE_ALERT_WEBHOOK_URL=api.url("/hook"),
            PULLMODE_MAX_ATTEMPTS="1",
            # The pollers, the alert sensor and the automation sensor every 5 s, not 30: the test waits for
            # a pull, an alert and an automated run, each one evaluation after the last.
            PULLMODE_SENSOR_INTERVAL_SECONDS="5",
        )
        with make_dev(tmp_path, env) as (process, output):
            announced = f"starting dagster dev on http://127.0.0.1:{port} "
            while not output.next_line(180, expecting=announced).startswith(announced):
                pass
            wait_for(lambda: answering(port), 120, "webserver on the dev port", process, interval=1.0)

            def loaded() -> dict[str, Any] | None:
                entries = graphql(port, WORKSPACE)["workspaceOrError"]["locationEntries"]
                repos = [e["locationOrLoadError"] for e in entries if e["loadStatus"] == "LOADED"]
                assert all(r["__typename"] == "RepositoryLocation" for r in repos), repos
                return repos[0]["repositories"][0] if repos else None

            repository = wait_for(loaded, 120, "the code location", process, interval=1.0)
            assets = {"/".join(a["assetKey"]["path"]) for a in repository["assetNodes"]}
            demo_assets = {f"ingestion/{path.stem}" for path in (REPO / "pullmode_dagster/demo/sources").glob("*.yaml")}
            assert assets == {*demo_assets, "ingestion/acme_audit", "ingestion/broken", "usage/daily_cost_by_actor"}
            sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
            assert sensors[AUTOMATION_SENSOR] == "RUNNING" and sensors["acme_audit_poller"] == "RUNNING"

            def succeeded(source: str) -> bool:
                return any(s == "SUCCESS" and t.get("pullmode/source") == source for s, t in runs(port))

            wait_for(lambda: succeeded("acme_audit"), 150, "a successful pull of acme_audit", process, interval=1.0)
            assert all(r.header("authorization") == f"Bearer {TOKEN}" for r in api.requests if r.path == "/v1/events")
            alert = wait_for(
                lambda: next((a for a in webhook.alerts if a.get("source") == "broken"), None),
                120,
                "the alert of the broken source",
                process,
                interval=1.0,
            )
            assert alert["run_url"].startswith(f"http://127.0.0.1:{port}/runs/"), alert

            def automated() -> bool:
                return any(s == "SUCCESS" and "dagster/from_automation_condition" in t for s, t in runs(port))

            wait_for(automated, 180, "daily_cost_by_actor materialized by its automation sensor", process, interval=1.0)
    assert json.dumps(webhook.alerts).count(TOKEN) == 0
