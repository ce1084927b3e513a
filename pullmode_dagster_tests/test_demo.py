"""`pullmode demo` works on a fresh machine: no servers, no credentials; one poll cycle per demo
source through Dagster, a summary per source, and the cursors committed in the instance."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

import pullmode_dagster.demo
from pullmode_dagster.cli import main
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.engine.store import SqliteTraceStore

DEMO_SOURCE_FILES = sorted((Path(pullmode_dagster.demo.__file__).parent / "sources").glob("*.yaml"))


@pytest.mark.slow
def test_demo_pulls_every_demo_source_through_dagster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PULLMODE_TRACE_STORE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("PULLMODE_SOURCES_DIR", "unused")  # the demo points it at its own sources
    result = CliRunner().invoke(main, ["demo", "--port", "0"])
    assert result.exit_code == 0, result.output
    # The one-click connectors, against the demo's fakes of the vendors' documented APIs.
    assert "demo_claude_activities: 720 written, 0 duplicates skipped, 0 rejected, 1 pages" in result.output
    assert "demo_copilot_transcripts: 288 written, 0 duplicates skipped, 0 rejected, 3 pages" in result.output
    assert "demo_openai_exports: 360 written, 0 duplicates skipped, 1 rejected, 6 files" in result.output
    assert "demo_usage_reports: 100 written" in result.output
    rejected = int(re.search(r"demo_usage: \d+ written, 0 duplicates skipped, (\d+) rejected", result.output)[1])
    assert rejected >= 9  # one usage record in 97 has no timestamp; how many fall in the last day varies
    with SqliteTraceStore(tmp_path / ".pullmode" / "trace_store.db") as store:
        assert store.count(source="demo_claude_activities") == 720
        assert store.count(source="demo_usage", rejected=True) == rejected
        usage = store.tail(source="demo_usage", limit=1)[0]
        assert usage["cost_usd"] > 0 and usage["tokens_input"] > 0
        # The downstream asset, materialized for today from what was just pulled.
        cost = re.search(r"usage/daily_cost_by_actor (\S+): (\d+) events, (\d+) actors", result.output)
        assert cost, result.output
        day = [r for r in store.tail(source="demo_usage", limit=10**6) if r["event_timestamp"].startswith(cost[1])]
        assert int(cost[2]) == len(day) > 0
        assert int(cost[3]) == len({r["actor"] for r in day})
    assert (tmp_path / ".pullmode/demo/secrets/demo_token").stat().st_mode & 0o077 == 0

    home = tmp_path / ".pullmode/demo/dagster_home"
    with monkeypatch.context() as env:
        env.setenv("DAGSTER_HOME", str(home))  # the demo's instance, found the way Dagster finds one
        instance = dg.DagsterInstance.get()
    with instance:
        state = PollPlanState.from_json(SensorCursors(instance, None).get("demo_claude_activities_poller"))
        assert state.committed.watermark is not None and state.in_flight is None
        assert sorted(r.job_name for r in instance.get_runs()) == sorted(
            [f"{path.stem}_pull" for path in DEMO_SOURCE_FILES] + ["daily_cost_by_actor"]
        )
        exports = PollPlanState.from_json(SensorCursors(instance, None).get("demo_openai_exports_poller"))
        assert exports.committed.position.get("after_key") is not None and exports.committed.position.get(
            "after_key"
        ).endswith("part-0001.ndjson.gz")

    again = CliRunner().invoke(main, ["demo", "--port", "0"])
    assert again.exit_code == 0, again.output
    assert "demo_claude_activities: 720 written" not in again.output  # resumed from the watermark
