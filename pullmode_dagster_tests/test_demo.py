"""`pullmode demo` works on a fresh machine: no servers, no credentials, a summary per source."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.engine.store import SqliteTraceStore


@pytest.mark.slow
def test_demo_pulls_every_demo_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PULLMODE_TRACE_STORE_URL", raising=False)
    result = CliRunner().invoke(main, ["demo", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert "demo_claude_activities: 720 written" in result.output
    assert "demo_copilot_transcripts: 288 written" in result.output
    assert "demo_usage: " in result.output and "10 rejected" in result.output
    with SqliteTraceStore(tmp_path / ".pullmode" / "trace_store.db") as store:
        assert store.count(source="demo_claude_activities") == 720
        assert store.count(source="demo_usage", rejected=True) == 10
        usage = store.tail(source="demo_usage", limit=1)[0]
        assert usage["cost_usd"] > 0 and usage["tokens_input"] > 0
    assert (tmp_path / ".pullmode/demo/secrets/demo_token").stat().st_mode & 0o077 == 0
