"""`openai_compliance` against the fake Logs Platform (demo/vendors/openai.py): one stream per event
type, file downloads through a redirect to a signed URL on another origin, streamed JSONL, per-stream
positions, window re-pulls, the vendor's event type names and scopes, the mapping per type, digests,
validation. What every one-click connector shares (a wrong key, cursors that do not fit, the CLI, the
canary, Dagster) is test_connector_contract.py's."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.demo.vendors.openai import (
    ORG_ID,
    WORKSPACE_ID,
    ComplianceLogsAPI,
    LogFile,
    app_auth_log_record,
    auth_log_record,
    codex_log_record,
    conversation_message_record,
    costs_record,
    iso,
    jsonl,
)
from pullmode_dagster.engine.adapters import ADAPTERS, PullContext, Window
from pullmode_dagster.engine.adapters import openai_compliance as oai
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.probe import probe_source
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter
from .connector_contract import OPENAI_KEY as KEY
from .connector_contract import OPENAI_NAME as NAME
from .connector_contract import T0, openai_logs, openai_source
from .helpers import stored_ids


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[ComplianceLogsAPI]:
    with openai_logs(KEY, monkeypatch) as api:
        yield api


def auth(i: int, minutes: int, *, email: str | None = None) -> dict[str, Any]:
    return auth_log_record(f"auth_{i:03d}", T0 + timedelta(minutes=minutes), email=email or f"user{i % 3}@acme.example")


def codex(i: int, minutes: int, **fields: Any) -> dict[str, Any]:
    return codex_log_record(f"codex_{i}", T0 + timedelta(minutes=minutes), email=f"user{i}@acme.example", **fields)


def auth_files(vendor: ComplianceLogsAPI, count: int, per_file: int) -> list[LogFile]:
    """`count` AUTH_LOG files of `per_file` events each, file n ending at hour n + 1."""
    return [
        vendor.add_file(
            "AUTH_LOG",
            [auth(per_file * n + i, per_file * n + i) for i in range(per_file)],
            end_time=T0 + timedelta(hours=n + 1),
        )
        for n in range(count)
    ]


def seed(vendor: ComplianceLogsAPI) -> dict[str, list[LogFile]]:
    """Two AUTH_LOG files sharing one event (auth_003), one CODEX_LOG file: 10 distinct events."""
    a1 = vendor.add_file("AUTH_LOG", [auth(i, 10 * i) for i in range(4)], end_time=T0 + timedelta(hours=1))
    a2 = vendor.add_file("AUTH_LOG", [auth(i, 10 * i) for i in range(3, 7)], end_time=T0 + timedelta(hours=2))
    c1 = vendor.add_file("CODEX_LOG", [codex(i, i) for i in range(3)], end_time=T0 + timedelta(hours=1))
    return {"AUTH_LOG": [a1, a2], "CODEX_LOG": [c1]}


def streams(state: CursorState) -> dict[str, Any]:
    return dict(state.position.get("streams", {}))


# -- the engine ----------------------------------------------------------------------------------


def test_first_pull_reads_every_event_once_across_streams_without_sending_the_key_to_the_signed_host(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    files = seed(vendor)
    report = run_pull(sources.load(openai_source()), store=store, context=context)

    assert (report.written, report.duplicates, report.rejected, report.files) == (10, 1, 0, 3)
    assert report.drained and stored_ids(store, NAME) == [f"auth_{i:03d}" for i in range(7)] + [
        f"codex_{i}" for i in range(3)
    ]
    assert streams(report.cursor_after) == {
        "AUTH_LOG": {"after": "2026-03-01T02:00:00Z", "done": [files["AUTH_LOG"][1].id]},
        "CODEX_LOG": {"after": "2026-03-01T01:00:00Z", "done": [files["CODEX_LOG"][0].id]},
    }
    # First pull: each stream lists from startDate, on the workspaces path.
    for event_type in ("AUTH_LOG", "CODEX_LOG"):
        (listing,) = vendor.listings(event_type)
        assert listing.path == f"/v1/compliance/workspaces/{WORKSPACE_ID}/logs"
        assert (listing.arg("after"), listing.arg("limit")) == ("2026-01-01T00:00:00Z", "100")
    assert vendor.downloads() == [f.id for f in (*files["AUTH_LOG"], *files["CODEX_LOG"])]
    # The key went to every API request, and never to the signed-URL host on the other port.
    assert all(r.header("authorization") == f"Bearer {KEY}" for r in vendor.api.requests)
    assert len(vendor.storage.requests) == 3 and vendor.storage.port != vendor.api.port
    assert not vendor.storage_saw_authorization
    assert all(KEY not in r.url and KEY not in json.dumps(r.headers) for r in vendor.storage.requests)

    rows = {r["source_event_id"]: r for r in store.tail(source=NAME, limit=100)}
    assert (rows["auth_001"]["actor"], rows["auth_001"]["action"], rows["auth_001"]["target"]) == (
        "user1@acme.example",
        "login",
        None,
    )
    assert rows["auth_001"]["event_timestamp"] == "2026-03-01T00:10:00.000000Z"
    # A CODEX_LOG row keeps its verb (event_type), its model and its token counts.
    codex_row = rows["codex_2"]
    assert [codex_row[k] for k in ("actor", "action", "target", "tokens_input", "tokens_output")] == [
        "user2@acme.example",
        "task.completed",
        "gpt-5-codex",
        1200,
        340,
    ]
    assert json.loads(codex_row["raw_payload"])["event_details"]["surface"] == "cli"


def test_second_pull_lists_from_each_streams_last_end_time_and_downloads_only_new_files(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    seed(vendor)
    source = sources.load(openai_source())
    first = run_pull(source, store=store, context=context)
    vendor.api.requests.clear()

    quiet = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (quiet.written, quiet.files, quiet.requests) == (0, 0, 2)  # one listing per stream, no download
    assert quiet.cursor_after == first.cursor_after and vendor.downloads() == []

    new_auth = vendor.add_file("AUTH_LOG", [auth(i, 10 * i) for i in range(7, 9)], end_time=T0 + timedelta(hours=3))
    new_codex = vendor.add_file("CODEX_LOG", [codex(9, 65)], end_time=T0 + timedelta(hours=2))
    vendor.api.requests.clear()
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (second.written, second.duplicates, second.files) == (3, 0, 2)
    assert [r.arg("after") for r in vendor.listings("AUTH_LOG")] == ["2026-03-01T02:00:00Z"]
    assert [r.arg("after") for r in vendor.listings("CODEX_LOG")] == ["2026-03-01T01:00:00Z"]
    assert vendor.downloads() == [new_auth.id, new_codex.id]  # the boundary files listed again are skipped
    assert streams(second.cursor_after) == {
        "AUTH_LOG": {"after": "2026-03-01T03:00:00Z", "done": [new_auth.id]},
        "CODEX_LOG": {"after": "2026-03-01T02:00:00Z", "done": [new_codex.id]},
    }


def test_paging_by_last_end_time_the_run_budget_and_resume_read_each_file_once(
    vendor: ComplianceLogsAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oai, "LIST_LIMIT", 2)
    files = auth_files(vendor, 5, 1)
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"], maxPagesPerRun=2))
    first = run_pull(source, store=store, context=context)
    # Listing 1 (after startDate) holds files 0-1; listing 2 (after file 1's end) returns file 1 again.
    assert [r.arg("after") for r in vendor.listings()] == ["2026-01-01T00:00:00Z", "2026-03-01T02:00:00Z"]
    assert (first.written, first.drained) == (3, False)
    assert streams(first.cursor_after) == {"AUTH_LOG": {"after": "2026-03-01T03:00:00Z", "done": [files[2].id]}}
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (second.written, second.duplicates, second.drained) == (2, 0, True)
    assert vendor.downloads() == [f.id for f in files]
    assert stored_ids(store, NAME) == [f"auth_{i:03d}" for i in range(5)]


def test_file_entries_without_end_time_or_file_name_still_read_each_file_once(
    vendor: ComplianceLogsAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oai, "LIST_LIMIT", 2)
    vendor.omit_fields = {"end_time", "file_name"}
    files = auth_files(vendor, 5, 1)
    files[4].body = b'{"event_id": "cut'
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    first = run_pull(source, store=store, context=context)
    assert (first.written, first.rejected, first.drained) == (4, 1, True)
    assert vendor.downloads() == [f.id for f in files]
    rows = store._conn.execute("SELECT location FROM pulled_events_rejected").fetchall()
    assert rows == [(f"AUTH_LOG file {files[4].id} line 1",)]
    # The last listing page's files are all remembered: without end_time, any of them may come back.
    assert streams(first.cursor_after) == {
        "AUTH_LOG": {"after": "2026-03-01T05:00:00Z", "done": [files[3].id, files[4].id]},
    }
    new = vendor.add_file("AUTH_LOG", [auth(9, 9)], end_time=T0 + timedelta(hours=9))
    vendor.api.requests.clear()
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (second.written, vendor.downloads()) == (1, [new.id])


def test_checkpoints_never_run_ahead_of_the_stored_events_and_a_failed_pull_resumes_at_the_file(
    vendor: ComplianceLogsAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oai, "RECORDS_PER_PAGE", 2)
    files = auth_files(vendor, 4, 5)
    vendor.fail_downloads.add(files[2].id)
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    pages: list[tuple[bool, int, dict[str, Any]]] = []
    checkpoints: list[tuple[CursorState, set[str]]] = []

    def check(state: CursorState) -> None:
        checkpoints.append((state, set(stored_ids(store, NAME))))

    with pytest.raises(PullError) as failed:
        run_pull(
            source,
            store=store,
            context=context,
            batch_size=3,
            on_page=lambda page, report: pages.append((page.boundary, len(page.records), page.resume)),
            on_checkpoint=check,
        )
    # Files stream in pages of 2 records: pages inside a file keep the position before it. The last
    # page handed on before the failure is no place to stop: a pull stopping there at its deadline
    # would drop the failure.
    assert [(b, n) for b, n, _ in pages] == [(False, 2), (False, 2), (True, 1), (False, 2), (False, 2), (False, 1)]
    start = {"streams": {"AUTH_LOG": {"after": "2026-01-01T00:00:00Z"}}}
    assert pages[0][2] == pages[1][2] == start
    assert pages[2][2] == {"streams": {"AUTH_LOG": {"after": "2026-01-01T00:00:00Z", "done": [files[0].id]}}}
    # Every checkpoint marks as done only files whose every event was already stored.
    by_file = {f.id: {f"auth_{5 * n + i:03d}" for i in range(5)} for n, f in enumerate(files)}
    assert checkpoints
    for state, stored in checkpoints:
        for file_id in streams(state)["AUTH_LOG"].get("done", []):
            assert by_file[file_id] <= stored
    report = failed.value.report
    assert "source 'chatgpt_compliance': AUTH_LOG file " in str(failed.value) and "HTTP 500" in str(failed.value)
    assert streams(report.checkpoint) == {
        "AUTH_LOG": {"after": "2026-01-01T00:00:00Z", "done": [files[0].id, files[1].id]}
    }
    assert report.written == 10

    vendor.fail_downloads.clear()
    vendor.api.requests.clear()
    resumed = run_pull(source, store=store, start=report.checkpoint, context=context)
    assert vendor.downloads() == [files[2].id, files[3].id]
    assert (resumed.written, resumed.duplicates, resumed.drained) == (10, 0, True)
    assert streams(resumed.cursor_after) == {"AUTH_LOG": {"after": "2026-03-01T04:00:00Z", "done": [files[3].id]}}


def test_the_deadline_reached_before_the_next_file_is_requested_stops_cleanly_after_the_file_read(
    vendor: ComplianceLogsAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The deadline passes while a page inside the first file is stored: the second file's download is
    # then never requested, and the first file's last page is where the pull stops (no failure).
    monkeypatch.setattr(oai, "RECORDS_PER_PAGE", 2)
    files = auth_files(vendor, 2, 5)
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"], pullDeadlineSeconds=60))
    now = [0.0]

    def second_page_passes_the_deadline(page: Any, report: Any) -> None:
        if report.pages == 2:
            now[0] += 61

    report = run_pull(
        source, store=store, context=replace(context, clock=lambda: now[0]), on_page=second_page_passes_the_deadline
    )
    assert (report.stopped, report.files, report.written) == ("deadline", 1, 5)
    assert vendor.downloads() == [files[0].id]
    assert streams(report.cursor_after) == {"AUTH_LOG": {"after": "2026-01-01T00:00:00Z", "done": [files[0].id]}}


def test_window_repull_reads_the_files_overlapping_the_window_and_keeps_the_cursor(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    day2 = T0 + timedelta(days=1)
    hours = [12, 24, 36, 48, 60]  # files end at day 1 12:00, day 2 00:00, 12:00, day 3 00:00, 12:00
    files = [
        vendor.add_file(
            "AUTH_LOG",
            [auth(100 * n + i, 60 * (h - 12) + 60 * i) for i in range(12)],  # one event an hour before the end
            end_time=T0 + timedelta(hours=h),
        )
        for n, h in enumerate(hours)
    ]
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    start = CursorState.from_dict({"streams": {"AUTH_LOG": {"after": "2026-03-03T12:00:00Z", "done": [files[4].id]}}})
    report = run_pull(source, store=store, start=start, window=Window(day2, day2 + timedelta(days=1)), context=context)

    assert [r.arg("after") for r in vendor.listings()] == ["2026-03-02T00:00:00Z"]
    # The file ending at the window start is listed (inclusive); the one ending past the window is not read.
    assert vendor.downloads() == [f.id for f in files[1:4]]
    assert (report.written, report.outside_window) == (24, 12)
    assert {r["event_timestamp"][:10] for r in store.tail(source=NAME, limit=100)} == {"2026-03-02"}
    assert report.cursor_after == start


def test_an_org_id_selects_the_organizations_path(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.add_file("AUTH_LOG", [auth(1, 1)], end_time=T0 + timedelta(hours=1), principal=ORG_ID)
    vendor.add_file("AUTH_LOG", [auth(2, 2)], end_time=T0 + timedelta(hours=1))  # the workspace's, not read
    source = sources.load(openai_source(workspaceId=ORG_ID, eventTypes=["AUTH_LOG"]))
    assert "organizations org-AcmeCompliance0001" in source.describe()
    report = run_pull(source, store=store, context=context)
    assert report.written == 1 and stored_ids(store, NAME) == ["auth_001"]
    assert {r.path.rsplit("/logs", 1)[0] for r in vendor.api.requests} == {f"/v1/compliance/organizations/{ORG_ID}"}
    assert not vendor.storage_saw_authorization


def test_the_vendors_type_names_are_requested_an_old_name_goes_on_and_an_unknown_type_passes_through(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.event_types.add("NEW_KIND_LOG")  # a type the vendor added after this connector was written
    messages = vendor.add_file(
        "CONVERSATION_MESSAGE",
        [
            conversation_message_record(f"msg_{i}", T0 + timedelta(minutes=i), email="ann@acme.example")
            for i in range(2)
        ],
        end_time=T0 + timedelta(hours=1),
    )
    newer = vendor.add_file(
        "NEW_KIND_LOG",
        [{"event_id": "new_1", "timestamp": "2026-03-01T00:30:00Z", "type": "NEW_KIND_LOG", "action": "made"}],
        end_time=T0 + timedelta(hours=1),
    )
    source = sources.load(openai_source(eventTypes=["CONVERSATION_MESSAGE_LOG", "NEW_KIND_LOG"]))
    # A cursor written when the stream was still called CONVERSATION_MESSAGE_LOG: its position goes on.
    start = CursorState.from_dict({"streams": {"CONVERSATION_MESSAGE_LOG": {"after": "2026-02-20T00:00:00Z"}}})
    report = run_pull(source, store=store, start=start, context=context)

    assert (report.written, report.rejected) == (3, 0)
    assert [(r.arg("event_type"), r.arg("after")) for r in vendor.listings()] == [
        ("CONVERSATION_MESSAGE", "2026-02-20T00:00:00Z"),
        ("NEW_KIND_LOG", "2026-01-01T00:00:00Z"),
    ]
    assert streams(report.cursor_after) == {
        "CONVERSATION_MESSAGE": {"after": "2026-03-01T01:00:00Z", "done": [messages.id]},
        "NEW_KIND_LOG": {"after": "2026-03-01T01:00:00Z", "done": [newer.id]},
    }
    rows = {r["source_event_id"]: r for r in store.tail(source=NAME, limit=10)}
    assert (rows["msg_1"]["actor"], rows["msg_1"]["action"]) == ("ann@acme.example", "CONVERSATION_MESSAGE")
    assert rows["new_1"]["action"] == "made"  # the general rules: a top-level verb


def test_each_types_verb_is_the_rows_action(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    hour = T0 + timedelta(hours=1)
    vendor.add_file("AUTH_LOG", [auth_log_record("au", T0, email="a@acme.example", action="logout")], end_time=hour)
    vendor.add_file(
        "APP_AUTH_LOG", [app_auth_log_record("ap", T0, email="a@acme.example", action="app.revoked")], end_time=hour
    )
    vendor.add_file("CODEX_LOG", [codex(1, 1, verb="task.created", input_tokens=10, output_tokens=0)], end_time=hour)
    source = sources.load(openai_source(eventTypes=["AUTH_LOG", "APP_AUTH_LOG", "CODEX_LOG"]))
    assert run_pull(source, store=store, context=context).written == 3
    rows = {r["source_event_id"]: r for r in store.tail(source=NAME, limit=10)}
    assert {k: (r["action"], r["target"], r["tokens_input"]) for k, r in rows.items()} == {
        "au": ("logout", None, 0),
        "ap": ("app.revoked", None, 0),
        "codex_1": ("task.created", "gpt-5-codex", 10),
    }


def test_costs_is_read_at_organization_scope_with_dollars_only_where_the_record_states_them(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    with pytest.raises(ValueError, match="only under organizations"):
        vendor.add_file("COSTS", [], end_time=T0, principal=WORKSPACE_ID)  # the fake keeps to the vendor's scopes
    vendor.add_file(
        "COSTS",
        [
            costs_record("cost_credits", T0, email="ann@acme.example", credits=4),
            costs_record("cost_usd", T0, email="bob@acme.example", credits=4, usd=0.16, model="gpt-5-codex"),
        ],
        end_time=T0 + timedelta(hours=4),
    )
    source = sources.load(openai_source(workspaceId=ORG_ID, eventTypes=["COSTS"]))
    report = run_pull(source, store=store, context=context)
    assert report.written == 2
    (listing,) = vendor.listings("COSTS")
    assert listing.path == f"/v1/compliance/organizations/{ORG_ID}/logs"
    rows = {r["source_event_id"]: r for r in store.tail(source=NAME, limit=10)}
    assert (rows["cost_credits"]["cost_usd"], rows["cost_usd"]["cost_usd"]) == (0.0, 0.16)  # credits are not dollars
    assert (rows["cost_usd"]["action"], rows["cost_usd"]["target"]) == ("COSTS", "gpt-5-codex")
    assert json.loads(rows["cost_credits"]["raw_payload"])["billing"] == [{"unit": "credits", "amount": 4}]


def test_a_download_whose_digest_does_not_match_is_tried_again_and_nothing_of_it_is_stored_before(
    vendor: ComplianceLogsAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    sleeps: list[float],
) -> None:
    vendor.omit_fields = set()  # the entries carry file_size and file_sha256
    files = auth_files(vendor, 2, 2)
    vendor.damaged_downloads[files[1].id] = 1  # the first download of file 2 arrives without its last line
    report = run_pull(sources.load(openai_source(eventTypes=["AUTH_LOG"])), store=store, context=context)
    assert (report.written, report.files, report.drained) == (4, 2, True)
    assert stored_ids(store, NAME) == [f"auth_{i:03d}" for i in range(4)]
    assert vendor.downloads() == [files[0].id, files[1].id, files[1].id]  # asked again: a fresh signed URL
    assert len(sleeps) == 1  # one wait of the retry policy
    assert not vendor.storage_saw_authorization


def test_a_download_whose_digest_never_matches_fails_the_pull_naming_the_file(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.omit_fields = set()
    files = auth_files(vendor, 2, 2)
    vendor.damaged_downloads[files[1].id] = 99
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(openai_source(eventTypes=["AUTH_LOG"])), store=store, context=context)
    message = str(failed.value)
    assert message == (
        f"source 'chatgpt_compliance': AUTH_LOG file {files[1].file_name}: the file's SHA-256 does not match the "
        f"listing's file_sha256 ({len(jsonl([auth(2, 2)]))} bytes received) from "
        f"{vendor.base_url}/workspaces/{WORKSPACE_ID}/logs/{files[1].id}, gave up after 3 attempts"
    )
    assert "sig=" not in message and KEY not in message
    assert vendor.downloads().count(files[1].id) == 3  # the retry policy's attempts (3 in these tests)
    # No record of the damaged file was stored, not even the lines that did arrive; the file before it is done.
    assert stored_ids(store, NAME) == ["auth_000", "auth_001"]
    assert streams(failed.value.report.checkpoint) == {
        "AUTH_LOG": {"after": "2026-01-01T00:00:00Z", "done": [files[0].id]}
    }


def test_a_digest_in_base64_is_checked_and_one_that_is_no_sha256_leaves_its_file_unchecked(
    vendor: ComplianceLogsAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vendor.omit_fields = set()
    files = auth_files(vendor, 2, 1)
    files[0].listed_sha256 = "md5:0cc175b9c0f1b6a831c399e269772661"
    files[1].listed_sha256 = base64.b64encode(hashlib.sha256(files[1].body).digest()).decode()
    vendor.damaged_downloads[files[1].id] = 1
    report = run_pull(sources.load(openai_source(eventTypes=["AUTH_LOG"])), store=store, context=context)
    assert (report.written, report.files) == (2, 2)
    assert vendor.downloads() == [files[0].id, files[1].id, files[1].id]
    assert (
        "source 'chatgpt_compliance': AUTH_LOG: listing 1: entry 1: file_sha256 is neither a hex nor a base64 "
        "SHA-256 digest; the file is read unchecked"
    ) in caplog.text


def test_an_empty_listing_with_has_more_and_no_last_end_time_is_nothing_more_yet(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.pending.add("AUTH_LOG")  # the vendor says more is coming; none of it is listed yet
    file = vendor.add_file("AUTH_LOG", [auth(1, 1)], end_time=T0 + timedelta(hours=1))
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    committed = CursorState.from_dict({"streams": {"AUTH_LOG": {"after": "2026-03-01T02:00:00Z", "done": [file.id]}}})

    report = run_pull(source, store=store, start=committed, context=context)
    assert (report.written, report.files, report.drained, report.stopped) == (0, 0, True, None)
    assert report.cursor_after == committed  # the committed cursor stays where it was
    (listing,) = vendor.listings()
    assert listing.arg("after") == "2026-03-01T02:00:00Z"

    quiet = probe_source(source, committed, known_ids=lambda ids: set(), context=context)
    assert quiet.verdict == "nothing_new"
    # Once a file is listed, the stream goes on from the committed position.
    later = vendor.add_file("AUTH_LOG", [auth(2, 150)], end_time=T0 + timedelta(hours=3))
    assert probe_source(source, committed, known_ids=lambda ids: set(), context=context).verdict == "new"
    after = run_pull(source, store=store, start=committed, context=context)
    assert after.written == 1 and streams(after.cursor_after)["AUTH_LOG"] == {
        "after": "2026-03-01T03:00:00Z",
        "done": [later.id],
    }


def test_the_boundary_file_listed_again_with_has_more_is_nothing_more_yet(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    # `after` is inclusive (upstream-apis.md): listed from the stream's position, the file that ends
    # there comes back. With has_more true (more is being written) and no later last_end_time, that
    # is "nothing more yet", not a listing loop.
    vendor.pending.add("AUTH_LOG")
    file = vendor.add_file("AUTH_LOG", [auth(1, 1)], end_time=T0 + timedelta(hours=1))
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    first = run_pull(source, store=store, context=context)
    assert (first.written, first.drained, first.stopped) == (1, True, None)
    position = {"AUTH_LOG": {"after": "2026-03-01T01:00:00Z", "done": [file.id]}}
    assert streams(first.cursor_after) == position
    # The first pull listed twice: from startDate, then from the file's end (the same file, has_more).
    assert [r.arg("after") for r in vendor.listings()] == ["2026-01-01T00:00:00Z", "2026-03-01T01:00:00Z"]

    vendor.api.requests.clear()
    quiet = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (quiet.written, quiet.files, quiet.drained, quiet.stopped) == (0, 0, True, None)
    assert quiet.cursor_after == first.cursor_after and vendor.downloads() == []
    assert probe_source(source, first.cursor_after, known_ids=lambda ids: set(), context=context).verdict == (
        "nothing_new"
    )
    later = vendor.add_file("AUTH_LOG", [auth(2, 90)], end_time=T0 + timedelta(hours=2))
    assert probe_source(source, first.cursor_after, known_ids=lambda ids: set(), context=context).verdict == "new"
    after = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert after.written == 1 and streams(after.cursor_after) == {
        "AUTH_LOG": {"after": "2026-03-01T02:00:00Z", "done": [later.id]}
    }


def test_a_listing_that_keeps_returning_unread_files_without_moving_on_is_a_listing_loop(
    vendor: ComplianceLogsAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hour = T0 + timedelta(hours=1)
    files = [vendor.add_file("AUTH_LOG", [auth(i, i)], end_time=hour) for i in range(5)]
    real = vendor._list

    def another_file_each_time(principal: str, request: Any) -> Any:
        # A broken server: the same request answered with a file not read yet each time, has_more true
        # and the same last_end_time, for ever.
        answer = real(principal, request)
        unread = [e for e in answer.body["data"] if e["id"] not in vendor.downloads()]
        answer.body.update(data=unread[:1], has_more=True)
        return answer

    monkeypatch.setattr(vendor, "_list", another_file_each_time)
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    start = CursorState.from_dict({"streams": {"AUTH_LOG": {"after": "2026-03-01T01:00:00Z"}}})
    with pytest.raises(PullError) as failed:
        run_pull(source, store=store, start=start, context=context)
    assert str(failed.value) == (
        "source 'chatgpt_compliance': AUTH_LOG: listing loop: logs after 2026-03-01T01:00:00Z keep returning files "
        "not read before with has_more true, and the same last_end_time; not pulled on"
    )
    assert len(vendor.listings()) == 2 and vendor.downloads() == [files[0].id]
    checkpoint = streams(failed.value.report.checkpoint)["AUTH_LOG"]  # the file read is stored and done
    assert checkpoint == {"after": "2026-03-01T01:00:00Z", "done": [files[0].id]}


def test_a_last_end_time_in_the_future_does_not_move_the_stream(
    vendor: ComplianceLogsAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vendor.add_file("AUTH_LOG", [auth(1, 1)], end_time=T0 + timedelta(hours=1))
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    first = run_pull(source, store=store, context=context)
    real = vendor._list
    ahead: list[timedelta | None] = [timedelta(days=1)]

    def empty_but_dated_ahead(principal: str, request: Any) -> Any:
        answer = real(principal, request)
        if ahead[0] is not None:
            answer.body.update(data=[], last_end_time=iso(datetime.now(UTC) + ahead[0]))
        return answer

    monkeypatch.setattr(vendor, "_list", empty_but_dated_ahead)
    quiet = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert quiet.cursor_after == first.cursor_after  # not moved to a day ahead, past every file to come
    assert "AUTH_LOG: listing 1: the listing's last_end_time " in caplog.text
    assert "is in the future (past the clock allowance); the stream's position does not move to it" in caplog.text
    assert probe_source(source, first.cursor_after, known_ids=lambda ids: set(), context=context).verdict == (
        "nothing_new"
    )
    # Files written meanwhile (dated before that last_end_time) are still read.
    ahead[0] = None
    later = vendor.add_file("AUTH_LOG", [auth(2, 90)], end_time=T0 + timedelta(hours=2))
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert second.written == 1 and streams(second.cursor_after)["AUTH_LOG"]["done"] == [later.id]
    # The allowance is the engine's own (CursorState.FUTURE_SKEW): within it, the position moves.
    monkeypatch.setattr(CursorState, "FUTURE_SKEW", timedelta(days=2))
    ahead[0] = timedelta(days=1)
    moved = run_pull(source, store=store, start=second.cursor_after, context=context)
    assert datetime.fromisoformat(streams(moved.cursor_after)["AUTH_LOG"]["after"]) > datetime.now(UTC)


def test_a_file_larger_than_max_file_bytes_is_not_held_for_its_digest_and_fails_the_pull_naming_it(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.omit_fields = set()  # the entries carry file_sha256: each file is held until its digest matched
    small = vendor.add_file("AUTH_LOG", [auth(1, 1)], end_time=T0 + timedelta(hours=1))
    padding = "x" * (1 << 20)
    big = vendor.add_file("AUTH_LOG", [auth(2, 2) | {"padding": padding}], end_time=T0 + timedelta(hours=2))
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"], maxFileBytes=1 << 20))
    with pytest.raises(PullError) as failed:
        run_pull(source, store=store, context=context)
    assert str(failed.value) == (
        f"source 'chatgpt_compliance': AUTH_LOG file {big.file_name}: the file is larger than 1048576 bytes "
        "(maxFileBytes); a file with a file_sha256 is held on temporary disk until its digest matched, so it is "
        "not read: raise maxFileBytes to read it"
    )
    assert vendor.downloads() == [small.id, big.id]  # not tried again: it would not get smaller
    checkpoint = failed.value.report.checkpoint
    assert stored_ids(store, NAME) == ["auth_001"] and streams(checkpoint)["AUTH_LOG"]["done"] == [small.id]
    # Raised, the file is read (the default is 4 GiB).
    default = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    assert run_pull(default, store=store, start=checkpoint, context=context).written == 1
    assert stored_ids(store, NAME) == ["auth_001", "auth_002"]


def test_bad_lines_are_rejects_and_the_file_still_counts_as_read(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    body = (
        jsonl([auth(1, 1), auth(2, 2)])
        + b'{"event_id": "auth_bad", "timestamp": garbled}\n'
        + b"\xff\xfe not UTF-8\n"
        + jsonl([auth(3, 3)])
        + b'{"event_id": "auth_cut", "timestamp": "2026-03-01T00:0'  # the file ends mid-line
    )
    garbled = vendor.add_file("AUTH_LOG", body=body, end_time=T0 + timedelta(hours=1))
    vendor.add_file("AUTH_LOG", [auth(4, 4), auth(5, 5)], end_time=T0 + timedelta(hours=2), gzipped=True)
    source = sources.load(openai_source(eventTypes=["AUTH_LOG"]))
    report = run_pull(source, store=store, context=context)
    assert (report.written, report.rejected, report.files, report.drained) == (5, 3, 2, True)
    rows = store._conn.execute("SELECT location, reason FROM pulled_events_rejected ORDER BY id").fetchall()
    where = f"AUTH_LOG file {garbled.file_name} line"
    assert [r[0] for r in rows] == [f"{where} 3", f"{where} 4", f"{where} 6"]
    assert rows[0][1].startswith("malformed NDJSON line") and rows[1][1] == "line is not UTF-8"


def test_an_expired_signed_url_fails_naming_the_file_host_without_the_signature(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    seed(vendor)
    vendor.expired = True
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(openai_source()), store=store, context=context)
    message = str(failed.value)
    assert message.startswith(
        f"source 'chatgpt_compliance': AUTH_LOG file auth_log_20260301T010000_0001.jsonl: HTTP 403 error from the "
        f"file host (the signed download URL may have expired) from {vendor.storage.base_url}/signed/"
    )
    assert "Request has expired" in message and "sig=" not in message
    assert failed.value.report.checkpoint == CursorState() and not vendor.storage_saw_authorization
    # A host whose error echoes the signed URL (S3's SignatureDoesNotMatch: the signature, the string
    # signed, the URL): every value of the signed URL's query is redacted in the quoted body.
    vendor.expired, vendor.signature_mismatch = False, True
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(openai_source()), store=store, context=context)
    message = str(failed.value)
    assert "HTTP 403 error from the file host (the signed download URL may have expired)" in message
    assert "<Code>SignatureDoesNotMatch</Code>" in message and "<SignatureProvided>***</SignatureProvided>" in message
    assert vendor._signatures and [s for s in vendor._signatures if s in message] == []
    assert "sig=***" in message and "expires=300" in message  # the rest of the URL is left readable


def mapped(record: dict[str, Any]) -> dict[str, Any]:
    source = oai.OpenAIComplianceSource.model_validate(openai_source())
    return {k: v for k, v in source.extract(record).items() if v is not None}


def test_extract_takes_each_types_verb_model_tokens_and_dollars_from_where_the_type_keeps_them() -> None:
    at = "2026-03-01T00:00:00Z"
    # AUTH_LOG (and AUDIT_LOG, ...): the verb in action_data.action, not the type.
    record = auth_log_record("e1", T0, email="ann@acme.example", user_id="user-ann", action="logout")
    assert mapped(record) == {
        "source_event_id": "e1",
        "event_timestamp": at,
        "actor": "ann@acme.example",
        "action": "logout",
    }
    assert mapped(auth_log_record("e2", T0, email=None, user_id="user-bob"))["actor"] == "user-bob"
    # APP_AUTH_LOG: the verb at the top level.
    app = app_auth_log_record("a1", T0, email="ann@acme.example", action="app.authorized")
    assert mapped(app) == {"source_event_id": "a1", "event_timestamp": at, "actor": "ann@acme.example"} | {
        "action": "app.authorized"
    }
    # CODEX_LOG: the verb in event_type; model and token counts from event_details.
    record = codex_log_record("x1", T0, email="cy@acme.example", verb="task.created", input_tokens=7, output_tokens=2)
    assert mapped(record) == {
        "source_event_id": "x1",
        "event_timestamp": at,
        "actor": "cy@acme.example",
        "action": "task.created",
        "target": "gpt-5-codex",
        "tokens_input": 7,
        "tokens_output": 2,
    }
    # A CODEX_LOG record whose verb field is also named elsewhere still takes event_type.
    assert mapped(record | {"action": "not-the-verb"})["action"] == "task.created"
    # COSTS: no verb (the type), the model else the product; dollars only when a billing entry says USD.
    credits_only = costs_record("c1", T0, email="cy@acme.example", product="codex", model="gpt-5-codex", credits=4)
    assert mapped(credits_only) == {
        "source_event_id": "c1",
        "event_timestamp": at,
        "actor": "cy@acme.example",
        "action": "COSTS",
        "target": "gpt-5-codex",
    }
    assert mapped(costs_record("c2", T0, email="d@acme.example", credits=4, usd=0.16))["cost_usd"] == 0.16
    no_model = costs_record("c3", T0, email="d@acme.example", product="chatgpt", model="")
    assert mapped(no_model)["target"] == "chatgpt"
    nested = costs_record("c4", T0, email="d@acme.example")
    nested["payload"]["billing"] = [{"currency": "USD", "amount": 2}, {"currency": "USD", "amount": 0.5}]
    del nested["billing"]
    assert mapped(nested)["cost_usd"] == 2.5
    # A type this connector does not know passes through with what it has.
    unknown = {"event_id": "n1", "timestamp": at, "type": "NEW_KIND_LOG", "actor": "odd", "action": {"x": 1}}
    assert mapped(unknown) == {"source_event_id": "n1", "event_timestamp": at, "action": "NEW_KIND_LOG"}


def test_a_costs_amount_in_usd_that_is_not_a_number_rejects_the_record_saying_so(
    vendor: ComplianceLogsAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    bad = costs_record("c_bad", T0, email="d@acme.example")
    bad["billing"] = [{"unit": "usd", "amount": "about a dollar"}]
    good = costs_record("c_good", T0, email="d@acme.example", usd=1.25)
    vendor.add_file("COSTS", [bad, good], end_time=T0 + timedelta(hours=1), principal=ORG_ID)
    source = sources.load(openai_source(workspaceId=ORG_ID, eventTypes=["COSTS"]))
    report = run_pull(source, store=store, context=context)
    assert (report.written, report.rejected) == (1, 1)
    (reason,) = [r[0] for r in store._conn.execute("SELECT reason FROM pulled_events_rejected").fetchall()]
    assert reason.startswith("cost_usd is not a number")
    (row,) = store.tail(source=NAME, limit=10)
    assert (row["cost_usd"], json.loads(row["raw_payload"])["billing"][0]) == (
        1.25,
        {"unit": "credits", "amount": 1.5},
    )


# -- validation ----------------------------------------------------------------------------------


def test_validation_names_the_field(sources: SourceWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fixed fields, the credentials, a list and the file cap: the contract's.
    monkeypatch.delenv("PULLMODE_OPENAI_COMPLIANCE_BASE_URL", raising=False)
    sources.write(openai_source(name="bad_id", workspaceId="https://chatgpt.com/admin"))
    sources.write(openai_source(name="bad_types", eventTypes=["auth_log", "AUTH LOG!", "CODEX_LOG", "CODEX_LOG"]))
    sources.write(openai_source(name="renamed_twice", eventTypes=["CONVERSATION_MESSAGE", "CONVERSATION_MESSAGE_LOG"]))
    sources.write(openai_source(name="open_types", eventTypes=["AUTH_LOG", "NEW_KIND_LOG", "CONVERSATION_MESSAGE_LOG"]))
    sources.write(openai_source(name="org_costs", workspaceId=ORG_ID, eventTypes=["COSTS", "AUTH_LOG"]))
    sources.write(openai_source(name="empty", eventTypes=[]))
    sources.write(openai_source(name="defaults", eventTypes=None))
    result = load_sources(sources.directory, adapters=ADAPTERS)
    problems = "\n".join(result.problems)
    assert "source 'bad_id': workspaceId: must be a ChatGPT workspace id" in problems
    name_rule = (
        "not an event type name: the vendor's are upper case letters, digits and underscores (AUTH_LOG, CODEX_LOG, ...)"
    )
    assert f"source 'bad_types': eventTypes[0]: {name_rule}; did you mean 'AUTH_LOG'?" in problems
    assert f"source 'bad_types': eventTypes[1]: {name_rule}" in problems
    assert "source 'bad_types': eventTypes[3]: listed twice" in problems
    assert "eventTypes[2]" not in problems
    assert "source 'renamed_twice': eventTypes[1]: listed twice (as CONVERSATION_MESSAGE, the name the API takes)" in (
        problems
    )
    assert "source 'empty': eventTypes: lists no event type" in problems
    assert "https://chatgpt.com/admin" not in problems  # values are never echoed
    assert "auth_log" not in problems and "AUTH LOG!" not in problems
    assert result.sources["defaults"].event_types == ("AUTH_LOG", "AUDIT_LOG")
    assert "open_types" in result.sources and "org_costs" in result.sources  # COSTS at organization scope: fine
    # The list is open: an unknown type and an old name are warnings, and both are requested.
    assert [w.split(": source ", 1)[1] for w in result.warnings] == [
        "'open_types': eventTypes[1]: not an event type this connector knows; it is requested as written and its "
        "records are mapped by the general rules (known: AUTH_LOG, AUDIT_LOG, APP_LOG, APP_AUTH_LOG, CODEX_LOG, "
        "CODEX_SECURITY_LOG, CONVERSATION_MESSAGE, CUSTOM_AGENTS_LOG, COSTS)",
        "'open_types': eventTypes[2]: CONVERSATION_MESSAGE_LOG is deprecated: it is requested as "
        "CONVERSATION_MESSAGE, the name the API takes (its stream's position carries on); write CONVERSATION_MESSAGE",
    ]
    assert result.sources["open_types"].streams == ("AUTH_LOG", "NEW_KIND_LOG", "CONVERSATION_MESSAGE")


def test_validation_takes_no_trailing_newline(sources: SourceWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULLMODE_OPENAI_COMPLIANCE_BASE_URL", raising=False)
    sources.write(openai_source(name="newline_id", workspaceId=WORKSPACE_ID + "\n"))
    sources.write(openai_source(name="newline_type", eventTypes=["AUTH_LOG", "CODEX_LOG\n"]))
    result = CliRunner().invoke(main, ["validate"])
    problems = result.output
    assert result.exit_code == 1 and "ok:" not in problems
    assert "source 'newline_id': workspaceId: must be a ChatGPT workspace id" in problems
    assert "source 'newline_type': eventTypes[1]: not an event type name" in problems
    assert "eventTypes[0]" not in problems


def test_validate_explains_that_costs_needs_an_organization_id(
    sources: SourceWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PULLMODE_OPENAI_COMPLIANCE_BASE_URL", raising=False)
    sources.write(openai_source(eventTypes=["AUTH_LOG", "COSTS"]))
    sources.write(openai_source(name="open_types", eventTypes=["AUTH_LOG", "NEW_KIND_LOG"]))
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 1, result.output
    path = sources.directory / "chatgpt_compliance.yaml"
    assert (
        f"{path}: source 'chatgpt_compliance': eventTypes[1]: COSTS exists only at organization scope "
        "(organizations/org-.../logs): workspaceId is a workspace id, whose logs have no COSTS. Types that need an "
        "'org-' id: COSTS; pull them with a source whose workspaceId is the API Platform organization id 'org-...', "
        "or leave them out"
    ) in result.output
    other = sources.directory / "open_types.yaml"
    assert f"warning: {other}: source 'open_types': eventTypes[1]: not an event type this connector knows" in (
        result.output
    )
    assert "ok:" not in result.output
