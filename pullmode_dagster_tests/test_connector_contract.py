"""The one-click connectors' shared contract, run over each vendor fake (connector_contract.VENDORS):
a wrong secret fails in one line without it, a cursor that does not fit is refused before anything is
sent, `pullmode validate` says where requests go, the CLI previews and pulls, the secret never leaves
its place, and Dagster's poll run and window run. What only one vendor does is in its own module."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.engine.adapters import ADAPTERS, PullContext
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .connector_contract import DAY2, FIXED, VENDORS, WRONG, Vendor, dig
from .dagster_helpers import Clock, cli, committed, make_harness
from .helpers import stored_ids
from .test_secrets import forms

Started = tuple[Vendor, Any]


@pytest.fixture(params=sorted(VENDORS))
def started(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Started]:
    """A vendor's fake, running with the secret its source reads."""
    vendor = VENDORS[request.param]
    with vendor.start(vendor.secret, monkeypatch) as api:
        yield vendor, api


def test_a_wrong_secret_is_one_line_naming_the_source_without_the_secret(
    started: Started, sources: Any, store: SqliteTraceStore, context: PullContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    v, api = started
    v.publish(api, 0, 5)
    v.apply(api, v.echo)
    monkeypatch.setenv(v.secret_env, WRONG)
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(v.source(api)), store=store, context=context)
    message = str(failed.value)
    assert message.startswith(f"source '{v.name}': " + v.text(v.refused, api)), message
    assert "\n" not in message and "Trace ID" not in message and WRONG not in message and v.secret not in message
    assert [r.path for r in v.seen(api)] == v.refused_paths  # not retried, and nothing sent after it
    assert failed.value.report.checkpoint == CursorState()


def test_a_quiet_pull_moves_nothing_and_the_next_reads_only_what_came_after_the_cursor(
    started: Started, sources: Any, store: SqliteTraceStore, context: PullContext
) -> None:
    v, api = started
    v.publish(api, 0, 25)
    source = sources.load(v.source(api))
    first = run_pull(source, store=store, context=context)
    for stop, expected, sent in zip((25, 40), v.next_pulls, v.next_sent, strict=True):
        v.publish(api, 25, stop)  # none, then 15
        v.clear(api)
        report = run_pull(source, store=store, start=first.cursor_after, context=context)
        assert {k: getattr(report, k) for k in expected} == expected and report.drained
        assert {arg: v.sent(api, arg) for arg in sent} == sent
        if stop == 25:
            assert report.cursor_after == first.cursor_after
            assert {k for r in v.data(api) for k in r.query} == v.query_keys
    cursor = report.cursor_after.to_dict()
    assert {path: dig(cursor, path) for path in v.next_cursor} == v.next_cursor
    assert stored_ids(store, v.name) == [v.event_id(i) for i in range(40)]


def test_the_deadline_stops_at_a_boundary_and_the_next_pulls_resume_there(
    started: Started, sources: Any, store: SqliteTraceStore, context: PullContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    v, api = started
    for target, value in v.patches.items():
        monkeypatch.setattr(target, value)
    for start in range(0, 30, 5):
        v.publish(api, start, start + 5)
    source = sources.load(v.source(api, pullDeadlineSeconds=v.deadline))
    now = [0.0]
    timed = replace(context, clock=lambda: now[0])

    def tick(page: Any, report: Any) -> None:
        now[0] += 1.0  # every page takes a second

    state, reports, drained = CursorState(), [], False
    while not drained and len(reports) < 10:
        now[0] = 0.0
        report = run_pull(source, store=store, start=state, context=timed, on_page=tick)
        assert report.stopped == "deadline" or report.drained
        reports.append({k: getattr(report, k) for k in v.deadline_reports[0]})
        state, drained = report.cursor_after, report.drained
    assert reports == v.deadline_reports  # never stopped inside a page (nor a file)
    assert stored_ids(store, v.name) == [v.event_id(i) for i in range(30)]
    assert {path: dig(state.to_dict(), path) for path in v.deadline_cursor} == v.deadline_cursor


def test_the_cursor_is_checked_before_anything_is_sent(
    started: Started, sources: Any, store: SqliteTraceStore, context: PullContext
) -> None:
    v, api = started
    source = sources.load(v.source(api))
    for doc, problem in v.bad_cursors:
        with pytest.raises(PullError) as failed:
            run_pull(source, store=store, start=CursorState.from_dict(doc), context=context)
        assert re.search(problem, str(failed.value)), (problem, str(failed.value))
    assert v.seen(api) == []


def test_validation_names_the_fixed_fields_the_credentials_a_list_and_a_bound(started: Started, sources: Any) -> None:
    v, api = started
    for field, value in FIXED.items():
        sources.write(v.source(api, name=f"fixed_{field.lower()}", **{field: value}))
    sources.write(v.source(api, name="no_key", credentials={"tenant_id": {"env": "A"}, "token": {"env": "X"}}))
    sources.write(v.source(api, name="one_type", **dict.fromkeys(v.lists, "just_one")))
    sources.write(v.source(api, name="beyond", **v.bound[0]))
    problems = "\n".join(load_sources(sources.directory, adapters=ADAPTERS).problems)
    built_in = "connector (URL, auth, paging and mapping are built in"
    said = [f"source 'fixed_{f.lower()}': {f}: fixed by the {v.adapter} {built_in}" for f in FIXED]
    said += [f"source 'no_key': {text}" for text in v.credential_problems]
    said += [f"source 'one_type': {f}: Input should be a valid list" for f in v.lists]  # not "valid tuple"
    assert [t for t in [*said, f"source 'beyond': {v.bound[1]}"] if t not in problems] == [], problems
    assert "valid tuple" not in problems and "example.com" not in problems and "just_one" not in problems


def test_validate_warns_when_the_endpoint_override_is_set(started: Started, sources: Any) -> None:
    v, api = started
    path = sources.write(v.source(api))
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 0, result.output
    assert v.text(v.override_warning, api, path=path) in result.output
    assert "ok: 1 source(s)" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("adapter", sorted(VENDORS))
def test_the_cli_previews_pulls_and_tails_and_the_secret_never_leaves_its_place(
    adapter: str,
    sources: Any,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v = VENDORS[adapter]
    canary = f"cnry~{adapter}.S3cret_5f4e3d2c1b0a+/=&9988"  # URL- and form-special
    with v.start(canary, monkeypatch) as api:
        v.publish(api, 0, 25)
        sources.write(v.source(api))
        v.apply(api, v.echo)
        monkeypatch.setenv(v.secret_env, WRONG)  # first a wrong secret: one line, nothing committed
        result = cli("pull", v.name)
        assert result.exit_code == 1 and "Traceback" not in result.output
        (line,) = [line for line in result.output.splitlines() if line.startswith(f"{v.name}: ")]
        assert line.startswith(f"{v.name}: FAILED: source '{v.name}': " + v.text(v.refused, api)), result.output
        assert line.endswith('; committed cursor {"v":1}')
        assert len(v.data(api)) == v.refused_data_requests  # the probe's, and the run's where the probe passes
        monkeypatch.setenv(v.secret_env, canary)
        output = result.output
        for args in (("validate",), ("preview", v.name, "--json"), ("preview", v.name)):
            result = cli(*args)
            assert result.exit_code == 0, result.output
            output += result.output
        assert [t for t in v.preview if t not in result.output] == [], result.output
        for n, (faults, texts) in enumerate(zip(v.faults, v.pulls, strict=True)):
            if n:
                v.publish(api, 25, 37)
                v.clear(api)
            v.apply(api, faults)
            pulled = cli("pull", v.name, "-v")
            assert pulled.exit_code == 0, pulled.output
            assert [t for t in texts if v.text(t, api) not in pulled.output] == [], pulled.output
            output += pulled.output
        assert {arg: v.sent(api, arg) for arg in v.sent_second} == v.sent_second
        assert v.calls(api, v.calls_second) == v.calls_second
        tail = cli("tail", "--source", v.name, "--json", "-n", "100")
        assert tail.exit_code == 0, tail.output
        rows = {r["source_event_id"]: r for r in map(json.loads, tail.output.splitlines())}
        assert sorted(rows) == [v.event_id(i) for i in range(37)]
        number, shown = v.tail_row
        assert tuple(rows[v.event_id(number)][k] for k in ("actor", "action", "target")) == shown
        v.apply(api, v.rotate)  # now the canary is refused, and echoed
        v.publish(api, 37, 40)
        failed = cli("pull", v.name, "-v")
        assert failed.exit_code == 1 and [t for t in v.rotated if t not in failed.output] == [], failed.output
        output += tail.output + failed.output
        assert v.credential(api) == {v.credential_form.format(canary)}  # sent where it belongs, every time
        assert not v.leaked(api, canary)
        hidden = " ".join(r.url + json.dumps(r.headers) + r.body.decode("latin-1") for r in v.blind(api)).lower()
    with SqliteTraceStore(tmp_path / "trace.db") as store:
        assert stored_ids(store, v.name) == [v.event_id(i) for i in range(37)]
    spellings = forms(canary)
    assert WRONG not in output and [s for s in spellings if s in hidden] == []
    assert [s for s in spellings if s in output.lower()] == [], output
    assert [s for s in spellings if s in caplog.text.lower()] == []
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes().decode("latin-1").lower()
            assert [s for s in spellings if s in data] == [], path


@pytest.mark.slow
def test_dagster_poll_run_then_a_window_run_that_keeps_the_cursor(
    started: Started, sources: Any, tmp_path: Path
) -> None:
    v, api = started
    v.publish(api, 0, 20)
    v.publish(api, 100, 104, at=DAY2)
    sources.write(v.source(api))
    with dg.instance_for_test() as instance:
        clock = Clock(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
        harness = make_harness(sources.directory, instance, clock, tmp_path, v.name)

        def metadata() -> dict[str, Any]:
            event = instance.get_latest_materialization_event(dg.AssetKey(["ingestion", v.name]))
            return {k: m.value for k, m in event.asset_materialization.metadata.items()}

        first = harness.tick(None)
        assert harness.run(first.run_requests[0]).success
        assert {k: metadata()[k] for k in v.dagster_first} == v.dagster_first
        after = harness.tick(first.cursor)
        cursor = committed(after.cursor)
        assert {path: dig(cursor, path) for path in v.dagster_cursor} == v.dagster_cursor
        assert v.calls(api, v.dagster_calls) == v.dagster_calls

        v.clear(api)
        job = harness.project.defs.resolve_job_def(f"{v.name}_pull")
        window = job.execute_in_process(instance=instance, partition_key="2026-03-02", raise_on_error=False)
        assert window.success
        md = metadata()
        assert md["mode"] == "window" and md["cursor_after"] == md["cursor_before"]
        assert (md["events_written"], md["duplicates_skipped"]) == (0, v.window_duplicates)
        assert {arg: v.sent(api, arg) for arg in v.window_sent} == v.window_sent
        assert committed(harness.tick(after.cursor).cursor) == cursor
