"""A source asset's run: metadata on every materialization, window re-pulls, clear failures, and
asset checks that can fail."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from pullmode_dagster.definitions import Project, build_project
from pullmode_dagster.defs.resources import PullSettingsResource, TraceStoreResource
from pullmode_dagster.demo.server import LoopbackServer, Response
from pullmode_dagster.engine.fetch.session import RetryPolicy
from pullmode_dagster.engine.store.sqlite import SCHEMA, SqliteTraceStore

from .conftest import SourceWriter
from .dagster_helpers import Clock, Harness, StaticCredentialsResource, committed, fast_resources, make_harness
from .documents import http_source
from .fakes import CursorFeed, make_events

TOKEN = "tok-asset-7777-secret"
KEY = dg.AssetKey(["ingestion", "acme_audit"])


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def harness(
    api: LoopbackServer,
    sources: SourceWriter,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Harness:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", TOKEN)
    events = make_events(30, t0=datetime(2026, 3, 1, 23, 45, tzinfo=UTC))  # 23:45 .. 00:14 next day
    events[3]["usage"]["input_tokens"] = -1
    api.routes["/v1/events"] = CursorFeed(events, page_size=10)
    sources.write(http_source(api.url("/v1/events"), params={"key": "${{credentials.token}}"}))
    return make_harness(
        sources.directory, instance, Clock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC)), tmp_path, "acme_audit"
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialization(instance: dg.DagsterInstance) -> dict[str, object]:
    event = instance.get_latest_materialization_event(KEY)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def pull_mar_1(project: Project, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The source's pull job, run for the 2026-03-01 partition."""
    return project.defs.resolve_job_def("acme_audit_pull").execute_in_process(
        instance=instance, partition_key="2026-03-01", raise_on_error=False
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The run failed: its step failure's message."""
    assert not result.success
    return next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message


def logs_without_the_token(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[dg.EventLogEntry]:
    """The run's log entries, none of which (message or Dagster event) holds the token."""
    logs = instance.all_logs(result.run_id)
    assert all(TOKEN not in (entry.message or "") for entry in logs)
    assert all(TOKEN not in str(entry.dagster_event) for entry in logs if entry.dagster_event)
    return logs


def test_poll_materialization_carries_the_pull_report(
    harness: Harness, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULLMODE_EVENT_CONTENT", "shown")  # the preview too (hidden by default: test_event_content.py)
    result = harness.run(harness.tick(None).run_requests[0])
    assert result.success
    md = materialization(instance)
    # 15 of the 29 events are dated in the run's partition (Mar 2): its row count; the poll wrote 29.
    assert (md["dagster/row_count"], md["events_written"], md["events_in_this_partition"]) == (15, 29, 15)
    assert (md["duplicates_skipped"], md["rejected"], md["pages"], md["requests"]) == (0, 1, 3, 3)
    assert md["bytes"] > 5000 and md["mode"] == "poll" and md["drained"] is True
    # Only what means something for the source: an HTTP feed reads no files (an S3 source's count is
    # in test_s3_polling.py); the column schema and table are the asset's, not each record's.
    assert "files" not in md and "dagster/column_schema" not in md and "dagster/table_name" not in md
    assert md["cursor_before"] == {"v": 1}
    assert md["cursor_after"] == {"v": 1, "watermark": "2026-03-02T00:14:00.000000Z"}
    assert md["newest_event_timestamp"] == "2026-03-02T00:14:00.000000Z"
    assert 8 * 3600 < md["lag_seconds"] < 10**9
    preview = md["preview"]
    assert [r.data["source_event_id"] for r in preview.records] == [f"evt_{i:05d}" for i in (0, 1, 2, 4, 5)]
    types = {c.name: c.type for c in preview.schema.columns}  # from the store's column schema, not the names
    assert types["event_timestamp"] == "datetime" and types["cost_usd"] == "float" and types["tokens_input"] == "int"
    assert types["actor"] == "string"
    checks = {name: e.passed for name, e in evaluations(result).items()}
    assert checks == {"normalized_schema": True, "unique_source_event_id": True}
    everything = json.dumps({k: str(v) for k, v in md.items()})
    assert TOKEN not in everything


def test_manual_materialization_repulls_the_partition_window_and_keeps_the_cursor(
    harness: Harness, instance: dg.DagsterInstance
) -> None:
    first = harness.tick(None)
    job = harness.project.defs.resolve_job_def("acme_audit_pull")
    result = job.execute_in_process(instance=instance, partition_key="2026-03-02", raise_on_error=False)
    assert result.success
    md = materialization(instance)
    assert md["mode"] == "window" and md["events_written"] == 15 and md["outside_window"] == 14
    assert md["cursor_after"] == md["cursor_before"] == {"v": 1}
    assert sorted(r["event_timestamp"][:10] for r in harness.rows()) == ["2026-03-02"] * 15
    # The poller ignores runs it did not request: its committed cursor does not move.
    after = harness.tick(first.cursor)
    assert committed(after.cursor) == {"v": 1}


def test_a_failed_pull_fails_the_run_with_a_clear_message_and_no_secret(
    harness: Harness, api: LoopbackServer, instance: dg.DagsterInstance
) -> None:
    api.routes["/v1/events"] = lambda r: Response(403, {"error": f"key {r.arg('key')} lacks scope"})
    result = harness.run(harness.tick(None).run_requests[0])
    message = failure_message(result)
    assert "source 'acme_audit': page 1: HTTP 403 error from http://127.0.0.1:" in message
    assert "lacks scope" in message and TOKEN not in message
    logs_without_the_token(instance, result)


def test_checks_fail_on_a_store_table_without_the_unique_key(harness: Harness) -> None:
    legacy = SCHEMA.replace("    UNIQUE (source_name, source_event_id)\n", "    CHECK (1)\n")
    conn = sqlite3.connect(harness.store_path)
    conn.executescript(legacy)
    conn.execute(
        "INSERT INTO pulled_events (source_name, source_event_id, event_timestamp, raw_payload, pulled_at, "
        "tokens_input) VALUES ('acme_audit', 'evt_00000', '2026-03-01 23:45', 'not json', 'x', -5)"
    )
    conn.commit()
    conn.close()
    result = harness.run(harness.tick(None).run_requests[0])
    checks = evaluations(result)
    assert checks["unique_source_event_id"].passed is False
    assert checks["unique_source_event_id"].metadata["duplicate_keys"].value == 1
    assert checks["normalized_schema"].passed is True  # the bad row is not one this run wrote


def test_normalized_schema_check_fails_on_a_row_the_run_wrote_badly(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULLMODE_EVENT_CONTENT", "masked")  # event ids are named unless content is hidden
    # A store trigger corrupts what the run writes: the check must notice.
    conn = sqlite3.connect(harness.store_path)
    conn.executescript(SCHEMA)
    conn.execute(
        "CREATE TRIGGER corrupt AFTER INSERT ON pulled_events WHEN NEW.source_event_id = 'evt_00007' "
        "BEGIN UPDATE pulled_events SET cost_usd = -1 WHERE id = NEW.id; END"
    )
    conn.commit()
    conn.close()
    result = harness.run(harness.tick(None).run_requests[0])
    evaluation = evaluations(result)["normalized_schema"]
    assert evaluation.passed is False
    assert evaluation.metadata["invalid_examples"].value == "evt_00007"


def test_credentials_resource_is_swappable(
    api: LoopbackServer,
    sources: SourceWriter,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACME_AUDIT_TOKEN", raising=False)
    feed = CursorFeed(make_events(3), token="tok-from-the-resource")
    api.routes["/v1/events"] = feed
    sources.write(http_source(api.url("/v1/events")))
    resources = {
        **fast_resources(tmp_path / "swap.db"),
        "credentials": StaticCredentialsResource(values={"acme_audit": {"token": "tok-from-the-resource"}}),
    }
    project = build_project(sources.directory, resources=resources)
    assert pull_mar_1(project, instance).success
    assert [r.header("authorization") for r in api.requests] == ["Bearer tok-from-the-resource"]


class LeakyStore(TraceStoreResource):
    """A store whose driver fails with the source's secret in its message, as a careless one may."""

    def open(self) -> SqliteTraceStore:
        raise RuntimeError(f"cannot connect: key={os.environ['ACME_AUDIT_TOKEN']} refused")


def test_an_unexpected_error_is_redacted_with_the_credentials_the_run_resolved(
    api: LoopbackServer,
    sources: SourceWriter,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", TOKEN)
    sources.write(http_source(api.url("/v1/events")))
    resources = {**fast_resources(tmp_path / "leaky.db"), "trace_store": LeakyStore(url=f"sqlite:///{tmp_path}/x.db")}
    project = build_project(sources.directory, resources=resources)
    result = pull_mar_1(project, instance)
    message = failure_message(result)
    assert "source 'acme_audit': unexpected RuntimeError: cannot connect: key=*** refused" in message
    logs = logs_without_the_token(instance, result)
    assert any("Traceback" in (entry.message or "") and "key=***" in entry.message for entry in logs)


def test_retry_settings_from_the_environment_are_bound_as_env_vars_and_used_by_the_run(
    api: LoopbackServer,
    sources: SourceWriter,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The UI names every variable the retry policy reads (the backoffs too: text fields, as Dagster
    has no float source), and the run's pull retries as they say."""
    monkeypatch.setenv("ACME_AUDIT_TOKEN", TOKEN)
    monkeypatch.setenv("PULLMODE_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("PULLMODE_BACKOFF_INITIAL_SECONDS", " 0.01 ")
    monkeypatch.setenv("PULLMODE_BACKOFF_MAX_SECONDS", "0.02")
    api.routes["/v1/events"] = lambda r: Response(503, {"error": "down"})
    sources.write(http_source(api.url("/v1/events")))
    store = TraceStoreResource(url=f"sqlite:///{tmp_path / 'env.db'}")
    project = build_project(sources.directory, resources={"trace_store": store})
    settings = project.defs.resources["pull_settings"]
    assert isinstance(settings, PullSettingsResource)
    assert settings.max_attempts == dg.EnvVar.int("PULLMODE_MAX_ATTEMPTS")
    for value, name in [
        (settings.backoff_initial_seconds, "PULLMODE_BACKOFF_INITIAL_SECONDS"),
        (settings.backoff_max_seconds, "PULLMODE_BACKOFF_MAX_SECONDS"),
    ]:
        assert isinstance(value, dg.EnvVar) and value.env_var_name == name
    resolved = settings.process_config_and_initialize()
    assert resolved.retry_policy() == RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.02)

    assert failure_message(pull_mar_1(project, instance)).strip().endswith("gave up after 3 attempts")
    assert len(api.requests) == 3


def test_pull_settings_given_in_python_win_and_the_rest_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULLMODE_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("PULLMODE_BACKOFF_INITIAL_SECONDS", "4")
    monkeypatch.delenv("PULLMODE_BACKOFF_MAX_SECONDS", raising=False)
    settings = PullSettingsResource(max_attempts=2, backoff_initial_seconds=0.01)
    assert settings.backoff_initial_seconds == "0.01"
    assert settings.retry_policy() == RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=30.0)
    # 0 given in Python counts as unset, as it always has: the variable, else the default.
    unset = PullSettingsResource(max_attempts=0, backoff_initial_seconds=0, backoff_max_seconds=0.0)
    assert unset.retry_policy() == RetryPolicy(max_attempts=9, backoff_initial=4.0, backoff_max=30.0)


def test_the_checks_run_alone_on_what_is_stored_and_catch_a_row_corrupted_behind_our_back(
    harness: Harness, instance: dg.DagsterInstance, api: LoopbackServer
) -> None:
    assert harness.run(harness.tick(None).run_requests[0]).success
    served = len(api.requests)
    # What the UI launches for "Execute" on the checks alone: the asset job with the checks
    # selected and no asset, for one partition.
    checks = {dg.AssetCheckKey(KEY, "normalized_schema"), dg.AssetCheckKey(KEY, "unique_source_event_id")}
    job = harness.project.defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=checks
    )

    def checks_alone(partition: str) -> dict[str, dg.AssetCheckEvaluation]:
        result = job.execute_in_process(instance=instance, tags={"dagster/partition": partition}, raise_on_error=False)
        assert result.success
        assert result.get_asset_materialization_events() == []  # no pull, nothing materialized
        return {e.check_name: e for e in result.get_asset_check_evaluations()}

    good = checks_alone("2026-03-01")  # the events dated 23:45 .. 23:59, less evt_00003 (rejected)
    assert good["normalized_schema"].passed and good["unique_source_event_id"].passed
    assert good["normalized_schema"].metadata["rows_checked"].value == 14
    assert len(api.requests) == served  # the checks alone never call the source

    with sqlite3.connect(harness.store_path) as conn:
        conn.execute("UPDATE pulled_events SET cost_usd = -1 WHERE source_event_id = 'evt_00002'")
    bad = checks_alone("2026-03-01")
    assert not bad["normalized_schema"].passed and bad["unique_source_event_id"].passed
    # The deployment's default keeps event content out of Dagster: the count, not which event.
    assert bad["normalized_schema"].metadata["invalid_rows"].value == 1
    assert bad["normalized_schema"].metadata["invalid_examples"].value == (
        "withheld (eventContent: hidden); the trace store has the rows"
    )
    assert bad["normalized_schema"].description == "1 of 14 rows break the normalized shape"
    other_day = checks_alone("2026-03-02")  # the corrupted row is dated Mar 1: Mar 2 is clean
    assert other_day["normalized_schema"].passed
    assert other_day["normalized_schema"].metadata["rows_checked"].value == 15
