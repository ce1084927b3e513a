"""The data engineer's loop in the Dagster UI, end to end: the demo's sources and fake vendors (as
``pullmode demo`` lays them out), one ``pullmode pull --all``, then ``dagster-webserver`` on the
repository's ``workspace.yaml``. Its GraphQL API must show every demo source as a partitioned asset
(from a week back) with its freshness policy, its poller (holding the cursor the pull committed) and
both checks; headless Chromium must render the asset page and its Partitions tab (screenshots are
kept for a person to look at: ``.pullmode/ui-screenshots/`` or ``$PULLMODE_SCREENSHOT_DIR``); and a
backfill launched through the webserver, with ``dagster-daemon`` running, must run its windows one
at a time.

Loopback only. Chromium missing: skipped locally, a failure in CI (``CI=true``), where ``.ci/run``
installs it."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pullmode_dagster.cli.pull import summarize
from pullmode_dagster.demo.setup import demo_start

from .dagster_helpers import running_daemon
from .ui_helpers import (
    PNG_SIGNATURE,
    Chromium,
    DemoLayout,
    Webserver,
    demo_environment,
    find_chromium,
    png_size,
    require_chromium,
    screenshot_dir,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHECKS = {"normalized_schema", "unique_source_event_id"}
ALERTS_SENSOR = "pullmode_failure_alerts"
MINUTE = 60


@dataclass(frozen=True)
class Expected:
    partitioning: str
    warn_seconds: int
    fail_seconds: int


# From the demo sources' YAML and the README's freshness rule (warn after two cron intervals, fail
# after three; at least 10 and 15 minutes).
DEMO_SOURCES = {
    "demo_claude_activities": Expected("daily", 10 * MINUTE, 15 * MINUTE),  # * * * * *
    "demo_copilot_transcripts": Expected("daily", 10 * MINUTE, 15 * MINUTE),  # */2 * * * *
    "demo_openai_exports": Expected("daily", 10 * MINUTE, 15 * MINUTE),  # */5 * * * *
    "demo_usage": Expected("hourly", 10 * MINUTE, 15 * MINUTE),  # * * * * *, partitioning: hourly
    "demo_usage_reports": Expected("daily", 120 * MINUTE, 180 * MINUTE),  # 0 * * * *
}
FORMATS = {"daily": "%Y-%m-%d", "hourly": "%Y-%m-%d-%H:%M"}


def first_key(partitioning: str) -> str:
    """The first partition: the demo sources' ``startDate``, a week back (not every window since a
    fixed date, nearly all "missing")."""
    day = demo_start().isoformat()
    return day if partitioning == "daily" else f"{day}-00:00"


REPOSITORY_QUERY = """
query PullmodeRepository {
  repositoryOrError(repositorySelector: {repositoryLocationName: "pullmode", repositoryName: "__repository__"}) {
    __typename
    ... on PythonError { message }
    ... on Repository {
      sensors {
        name
        targets { pipelineName }
        sensorState { status typeSpecificData { __typename ... on SensorData { lastCursor } } }
      }
      assetNodes {
        assetKey { path }
        groupName
        isPartitioned
        jobNames
        partitionDefinition { type fmt description }
        first: partitionKeyConnection(limit: 1, ascending: true) { results }
        last: partitionKeyConnection(limit: 1, ascending: false) { results }
        partitionStats { numPartitions numMaterialized numFailed }
        internalFreshnessPolicy {
          __typename
          ... on TimeWindowFreshnessPolicy { warnWindowSeconds failWindowSeconds }
        }
        assetChecksOrError {
          __typename
          ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
        }
      }
    }
  }
}
"""


@dataclass
class UI:
    demo: DemoLayout
    server: Webserver


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """Requested before ``ui`` so that, without Chromium, the screenshot test skips (or fails, in
    CI) before the servers start."""
    return Chromium(require_chromium(), tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="module")
def chromium_if_installed(tmp_path_factory: pytest.TempPathFactory) -> Chromium | None:
    """Chromium when there is one (in CI there is), for tests whose subject is not the screenshot."""
    binary = find_chromium()
    return Chromium(binary, tmp_path_factory.mktemp("chromium-profile-2")) if binary else None


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    root = tmp_path_factory.mktemp("ui_e2e")
    with demo_environment(root) as demo, Webserver(cwd=root, env=demo.env) as server:
        yield UI(demo, server)


def partition_count(partitioning: str, first: str, last: str) -> int:
    fmt = FORMATS[partitioning]
    span = datetime.strptime(last, fmt).replace(tzinfo=UTC) - datetime.strptime(first, fmt).replace(tzinfo=UTC)
    step = 3600 if partitioning == "hourly" else 86400
    return int(span.total_seconds()) // step + 1


def current_partitions(partitioning: str, *moments: datetime) -> set[str]:
    """The key of the partition in progress at each moment (the newest one, ``end_offset=1``)."""
    starts = (m.replace(minute=0, second=0, microsecond=0) for m in moments)
    return {start.strftime(FORMATS[partitioning]) for start in starts}


def test_graphql_shows_every_demo_source_with_partitions_freshness_pollers_and_checks(ui: UI) -> None:
    outcomes = {o.source: o for o in ui.demo.outcomes}
    assert sorted(outcomes) == sorted(DEMO_SOURCES), ui.demo.log
    assert all(o.ok for o in outcomes.values()), "\n".join(summarize(o) for o in outcomes.values())

    before = datetime.now(UTC)
    data = ui.server.graphql(REPOSITORY_QUERY)["repositoryOrError"]
    after = datetime.now(UTC)
    assert data["__typename"] == "Repository", data

    assets = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert sorted(k for k in assets if k.startswith("ingestion/")) == [f"ingestion/{n}" for n in sorted(DEMO_SOURCES)]
    sensors = {sensor["name"]: sensor for sensor in data["sensors"]}
    assert sorted(sensors) == sorted([*(f"{n}_poller" for n in DEMO_SOURCES), ALERTS_SENSOR])

    for name, expected in DEMO_SOURCES.items():
        node = assets[f"ingestion/{name}"]
        where = f"ingestion/{name}"
        assert node["groupName"] == "ingestion_sources", where
        assert f"{name}_pull" in node["jobNames"], where

        # Partitions: time windows from startDate through the one in progress; the pull's events
        # materialized some of them (the Partitions tab shows data), none failed.
        assert node["isPartitioned"], where
        definition = node["partitionDefinition"]
        assert definition["type"] == "TIME_WINDOW", where
        assert definition["fmt"] == FORMATS[expected.partitioning], where
        assert definition["description"].startswith(expected.partitioning.capitalize()), (where, definition)
        first, last = node["first"]["results"], node["last"]["results"]
        assert first == [first_key(expected.partitioning)], (where, first)
        assert last and last[0] in current_partitions(expected.partitioning, before, after), (where, last)
        stats = node["partitionStats"]
        assert stats["numPartitions"] == partition_count(expected.partitioning, first[0], last[0]), (where, stats)
        assert stats["numPartitions"] <= (8 * 24 + 1 if expected.partitioning == "hourly" else 8), (where, stats)
        assert stats["numMaterialized"] >= 1 and stats["numFailed"] == 0, (where, stats)

        # Freshness: the time-window policy derived from the cron.
        assert node["internalFreshnessPolicy"] == {
            "__typename": "TimeWindowFreshnessPolicy",
            "warnWindowSeconds": expected.warn_seconds,
            "failWindowSeconds": expected.fail_seconds,
        }, where

        # Both checks, and both passed on the pull's materialization.
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", (where, checks)
        assert {c["name"] for c in checks["checks"]} == CHECKS, where
        for check in checks["checks"]:
            execution = check["executionForLatestMaterialization"]
            assert execution is not None and execution["status"] == "SUCCEEDED", (where, check)

        # The poller: running, targets the source's job, and holds the cursor the pull committed.
        poller = sensors[f"{name}_poller"]
        assert [t["pipelineName"] for t in poller["targets"]] == [f"{name}_pull"], where
        assert poller["sensorState"]["status"] == "RUNNING", where
        cursor = poller["sensorState"]["typeSpecificData"]["lastCursor"]
        assert cursor is not None, f"{name}_poller has no cursor: the pull's commit is not where the UI looks"
        assert json.loads(cursor)["committed"] == json.loads(outcomes[name].cursor or "null"), where

    alerts = sensors[ALERTS_SENSOR]
    assert alerts["sensorState"]["status"] == "RUNNING"
    assert alerts["targets"] == []


# Texts the SPA renders only once it has loaded the asset from GraphQL (not a spinner or an error).
PAGES = {
    "asset": ("/assets/ingestion/demo_usage", ["demo_usage_poller", "ingestion_sources", "Latest materialization"]),
    "partitions": ("/assets/ingestion/demo_usage?view=partitions", ["Partitions Selected", "Materialized ("]),
}
MIN_PNG_BYTES = 20_000  # a blank 1400x1000 page is a few KB; the rendered asset pages are ~100 KB and more


def test_asset_page_and_partitions_tab_render_in_chromium(chromium: Chromium, ui: UI, tmp_path: Path) -> None:
    keep = screenshot_dir()
    keep.mkdir(parents=True, exist_ok=True)
    for view, (path, expected) in PAGES.items():
        url = ui.server.url + path
        dom, budget = chromium.rendered(url, expected)
        for error in ("Something went wrong", "PythonError", "Unexpected GraphQL error"):
            assert error not in dom, f"{url}: {error!r} in the page"
        png = chromium.screenshot(url, tmp_path / f"demo_usage-{view}.png", budget_ms=budget)
        assert png.exists(), f"chromium wrote no screenshot of {url}"
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        assert png_size(png) == (1400, 1000)
        assert png.stat().st_size > MIN_PNG_BYTES, f"{png}: {png.stat().st_size} bytes, a blank page?"
        shutil.copy(png, keep / png.name)


# What the asset page sends when a data engineer selects partitions and clicks "Launch backfill".
LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on Error { message }
  }
}
"""
POOL = "pullmode/demo_usage"
POOL_RUNS = """
query PoolRuns($pool: String!) {
  runsOrError(limit: 500) {
    __typename
    ... on Runs { results { runId jobName status startTime endTime allPools tags { key value } } }
  }
  instance { concurrencyLimit(concurrencyKey: $pool) { slotCount } }
}
"""
DONE = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


@pytest.mark.timeout(300)
def test_a_backfill_launched_through_the_webserver_runs_its_windows_one_at_a_time(
    ui: UI, tmp_path: Path, chromium_if_installed: Chromium | None
) -> None:
    """Four hourly windows of demo_usage, launched through the webserver as the asset page does
    (Dagster's implicit asset job: no pullmode tag on the runs), with dagster-daemon running the queue
    and the pollers: the backfill succeeds, and no two runs of the source (the backfill's, and any
    the poller launched meanwhile) overlap in time, as the runs' records in the UI show."""
    hour = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    partitions = [(hour + timedelta(hours=h)).strftime(FORMATS["hourly"]) for h in range(4)]
    params = {"assetSelection": [{"path": ["ingestion", "demo_usage"]}], "partitionNames": partitions}
    with running_daemon(ui.demo.root, ui.demo.env) as (daemon, _):
        launched = ui.server.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        deadline = time.monotonic() + 240
        while (status := ui.server.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]).get(
            "status"
        ) not in DONE:
            assert daemon.poll() is None, f"dagster-daemon exited ({daemon.returncode})"
            assert time.monotonic() < deadline, f"backfill {backfill_id} not done in time: {status}"
            time.sleep(1.0)
    assert status["status"] == "COMPLETED_SUCCESS", status

    data = ui.server.graphql(POOL_RUNS, {"pool": POOL})
    assert data["instance"]["concurrencyLimit"]["slotCount"] == 1
    runs = [r for r in data["runsOrError"]["results"] if POOL in (r["allPools"] or [])]
    tags = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]} for r in runs}
    windows = [r for r in runs if tags[r["runId"]].get("dagster/backfill") == backfill_id]
    assert sorted(tags[r["runId"]]["dagster/partition"] for r in windows) == partitions
    assert all(r["status"] == "SUCCESS" and r["jobName"] == "__ASSET_JOB" for r in windows), windows
    assert all("pullmode/source" not in tags[r["runId"]] for r in windows)  # the tag limit would not see them
    # A run the poller queued that never started (the daemon stopped first) overlaps nothing.
    spans = sorted((r["startTime"], r["endTime"] or float("inf"), r["runId"]) for r in runs if r["startTime"])
    overlaps = [(a[2], b[2]) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert overlaps == [], spans

    if chromium_if_installed is not None:  # the backfill's page, for a person to look at
        url = f"{ui.server.url}/runs/b/{backfill_id}?tab=runs"
        dom, budget = chromium_if_installed.rendered(url, [backfill_id])
        assert "Something went wrong" not in dom and "PythonError" not in dom
        png = chromium_if_installed.screenshot(url, tmp_path / "demo_usage-backfill.png", budget_ms=budget)
        keep = screenshot_dir()
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, keep / png.name)
