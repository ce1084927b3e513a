"""The pullmode command line: preview writes nothing, tail prints the newest events by event time (then each
new one once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.events.model import NormalizedEvent
from pullmode_dagster.engine.store import SqliteTraceStore, open_store

from .bounded import LineReader
from .conftest import SourceWriter
from .documents import http_source
from .fakes import CursorFeed, make_events
from .helpers import ev
from .pg import fresh_database


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", url)
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-cli-123456")
    return url


def test_preview_prints_the_first_page_and_writes_nothing(
    api: LoopbackServer, sources: SourceWriter, store_url: str, tmp_path: Path
) -> None:
    events = make_events(15)
    events[2]["created_at"] = "?"
    api.routes["/v1/events"] = CursorFeed(events, page_size=10)
    sources.write(http_source(api.url("/v1/events")))
    result = CliRunner().invoke(main, ["preview", "acme_audit"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("2026-03-01T00:00:00.000000Z  acme_audit  user0@acme.example  completion")
    assert lines[-1].startswith("REJECTED  page 1, record 3: event_timestamp is not ISO 8601 or epoch: '?'")
    assert "9 events, 1 rejected" in result.stderr and "a next page exists" in result.stderr
    assert len(api.requests) == 1
    assert not (tmp_path / "cli.db").exists() or SqliteTraceStore(tmp_path / "cli.db").count() == 0


def test_preview_json_and_unknown_source(api: LoopbackServer, sources: SourceWriter, store_url: str) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(2))
    sources.write(http_source(api.url("/v1/events")))
    result = CliRunner().invoke(main, ["preview", "acme_audit", "--json"])
    assert [json.loads(line)["source_event_id"] for line in result.stdout.splitlines()] == [
        "evt_00000",
        "evt_00001",
    ]
    missing = CliRunner().invoke(main, ["preview", "acme_audt"])
    assert missing.exit_code == 1
    assert "no source named 'acme_audt'" in missing.output and "did you mean 'acme_audit'?" in missing.output


def test_preview_refuses_a_source_only_for_its_own_problems(
    api: LoopbackServer, sources: SourceWriter, store_url: str
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(2))
    broken = sources.write(http_source(api.url("/v1/events"), name="other", schedule="every five minutes"))
    problem = f"{broken}: source 'other': schedule: not a valid cron expression: 'every five minutes'\n"
    for name in ("acme_audit", "other"):  # no source loaded at all: every problem, whichever the name
        result = CliRunner().invoke(main, ["preview", name])
        assert (result.exit_code, result.output) == (1, problem)
    sources.write(http_source(api.url("/v1/events")))
    ok = CliRunner().invoke(main, ["preview", "acme_audit", "--json"])
    assert ok.exit_code == 0, ok.output
    assert len(ok.stdout.splitlines()) == 2  # another file's problem does not stop this source
    refused = CliRunner().invoke(main, ["preview", "other"])
    assert (refused.exit_code, refused.output) == (1, problem)
    assert len(api.requests) == 1


def test_preview_failure_is_one_line_without_traceback_or_secret(
    api: LoopbackServer, sources: SourceWriter, store_url: str
) -> None:
    sources.write(http_source(api.url("/nowhere"), params={"k": "${{credentials.token}}"}))
    result = CliRunner().invoke(main, ["preview", "acme_audit"])
    assert result.exit_code == 1
    assert result.output.startswith("error: source 'acme_audit': page 1: HTTP 404 error from ")
    assert "Traceback" not in result.output and "tok-cli-123456" not in result.output


@pytest.fixture(params=["sqlite", "postgres"])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``$PULLMODE_TRACE_STORE_URL``: a new store on each backend."""
    with nullcontext(f"sqlite:///{tmp_path}/cli.db") if request.param == "sqlite" else fresh_database() as url:
        monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", url)
        yield url


def at(source: str, day: int, hour: int) -> NormalizedEvent:
    return ev(
        hour,
        source,
        source_event_id=f"{source}-{day}-{hour}",
        event_timestamp=f"2026-03-0{day}T{hour:02d}:00:00.000000Z",
        actor=f"u{hour}@x",
        target="m",
        tokens_input=3,
        tokens_output=4,
    )


def test_tail_shows_the_newest_events_by_event_time_with_source_filter_and_json(any_store_url: str) -> None:
    with open_store(any_store_url) as store:
        # A newest-first feed: its first page (today's events) is stored before its second (yesterday's).
        store.write_events([at("s", 2, h) for h in (12, 11, 10)], run_id="r")
        store.write_events([at("s", 1, h) for h in (23, 22)], run_id="r")
        store.write_events([at("other", 2, 11), at("other", 1, 9)], run_id="r")
    text = CliRunner().invoke(main, ["tail", "-n", "3", "--source", "s"])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["s-2-10", "s-2-11", "s-2-12"]
    assert lines[0].startswith("2026-03-02T10:00:00.000000Z  s  u10@x  act  m  $0.500000  tokens 3/4")
    as_json = CliRunner().invoke(main, ["tail", "-n", "3", "--json"])
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["source_event_id"] for r in rows] == ["s-2-11", "other-2-11", "s-2-12"]  # a tie: in stored order
    assert rows[0]["raw_payload"] == '{"i": 11}' and "id" not in rows[0]


LINE_TIMEOUT = 20.0
"""Seconds to wait for one line of ``tail --follow``: only reached on a failure (a line lands
within an --interval of its write)."""


def event_id(line: str) -> str:
    try:
        return json.loads(line)["source_event_id"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"not an event as NDJSON: {line!r}") from None


@pytest.mark.slow
def test_tail_follow_prints_new_rows_once_each(store_url: str, tmp_path: Path) -> None:
    stderr_path = tmp_path / "tail.stderr"
    with SqliteTraceStore(tmp_path / "cli.db") as store, stderr_path.open("w") as stderr:
        store.write_events([ev(1)], run_id="r")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pullmode_dagster.cli", "tail", "--follow", "--json", "--interval", "0.1"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ},
        )
        try:
            assert proc.stdout is not None
            out = LineReader(proc.stdout, lambda: f"exit code: {proc.poll()}; stderr:\n{stderr_path.read_text()}")

            def read(*expected: str) -> list[str]:
                """As many lines as ``expected`` names, each waited for (never a fixed sleep)."""
                return [event_id(out.next_line(LINE_TIMEOUT, f"the line of {name}")) for name in expected]

            seen = read("e1")
            store.write_events([ev(2), ev(3)], run_id="r")
            seen += read("e2", "e3")  # the follower has printed e3: whatever comes next is new to it
            store.write_events([ev(3), ev(4)], run_id="r")  # e3 is a duplicate: never stored twice
            seen += read("e4")
            store.write_events([ev(5)], run_id="r")  # a marker: a row printed twice would come before it
            seen += read("e5")
        finally:
            proc.kill()
            proc.wait(timeout=10)
    assert seen == ["e1", "e2", "e3", "e4", "e5"]
