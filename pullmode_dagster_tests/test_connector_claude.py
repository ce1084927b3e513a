"""`claude_compliance` against the fake Activity Feed (demo/vendors/claude.py): the backfill from
startDate, incremental pulls by ``before_id``, the settled minute, resumes (maxPagesPerRun, deadline,
failure), window re-pulls, retries, errors and validation. What every one-click connector shares (a wrong key,
cursors that do not fit, the CLI, the canary, Dagster) is test_connector_contract.py's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.demo.server import LoopbackServer, Response
from pullmode_dagster.demo.vendors.claude import (
    ACCESS_KEY_ID,
    OWN_ACCESS,
    PATH,
    ActivityFeedAPI,
    activity,
    admin_api_key_actor,
    anthropic_actor,
    api_actor,
    federated_identity_actor,
    iso,
    mixed_activities,
    scim_directory_sync_actor,
    service_account_actor,
    unauthenticated_user_actor,
    user_actor,
)
from pullmode_dagster.engine.adapters import ADAPTERS, PullContext, Window
from pullmode_dagster.engine.adapters import claude_compliance as cc
from pullmode_dagster.engine.adapters.reference import MAX_ACTOR_CHARS, rfc3339
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.events.rules import normalize_timestamp
from pullmode_dagster.engine.fetch.session import RetryPolicy
from pullmode_dagster.engine.probe import probe_source
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter
from .connector_contract import CLAUDE_ENV as ENV
from .connector_contract import CLAUDE_KEY as KEY
from .connector_contract import CLAUDE_NAME as NAME
from .connector_contract import T0, aid, claude_feed, claude_source
from .dagster_helpers import cli
from .helpers import stored_ids

START = "2026-01-01T00:00:00Z"
GITHUB_OIDC = "https://token.actions.githubusercontent.com"
P = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
"""The fixed clock's start (``now``)."""


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[ActivityFeedAPI]:
    with claude_feed(KEY, monkeypatch) as api:
        yield api


@pytest.fixture
def now(vendor: ActivityFeedAPI, monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """One clock for the connector (its settle margin) and the fake (what is queryable), starting at
    ``P``; a test moves ``now[0]``."""
    clock = [P]
    monkeypatch.setattr(cc, "_now", lambda: clock[0])
    vendor.now = lambda: clock[0]
    return clock


def ts(item: dict[str, Any]) -> str:
    return normalize_timestamp(item["created_at"])


def sent(vendor: ActivityFeedAPI, name: str) -> list[str | None]:
    return [r.arg(name) for r in vendor.requests]


# -- the engine ----------------------------------------------------------------------------------


def test_first_pull_backfills_from_start_date_each_activity_once_with_the_key_and_version(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.add(activity("claude_chat_created", T0 - timedelta(days=60), user_actor("old@acme.example"), id="act_old"))
    seeded = mixed_activities(25, T0)  # every fifth shares its created_at with the one before
    vendor.add(*seeded)
    source = sources.load(claude_source(pageSize=10))
    before = datetime.now(UTC)
    report = run_pull(source, store=store, context=context)
    after = datetime.now(UTC)

    assert (report.written, report.duplicates, report.rejected, report.pages, report.requests) == (25, 0, 0, 3, 3)
    assert report.drained and stored_ids(store, NAME) == [aid(i) for i in range(25)]  # not the one before startDate
    assert report.cursor_after.position == {"before_id": aid(24)}
    assert report.cursor_after.watermark == ts(seeded[24]) == "2026-03-01T02:41:00.000000Z"
    # Newest first from startDate, paging older with after_id = last_id, under one fixed settled bound.
    assert sent(vendor, "after_id") == [None, aid(15), aid(5)]
    assert set(sent(vendor, "created_at.gte")) == {START} and set(sent(vendor, "limit")) == {"10"}
    assert sent(vendor, "before_id") == [None] * 3
    (until,) = set(sent(vendor, "created_at.lt"))
    assert until is not None and until.endswith("Z")
    # settleSeconds (default 5 minutes) before the pull's clock, in whole seconds: bracketed by the clock
    # read around the pull (however long it took), not compared with "now" after it.
    settled = datetime.fromisoformat(until)
    settle = timedelta(seconds=cc.DEFAULT_SETTLE_SECONDS)
    assert settled.microsecond == 0 and settle == timedelta(minutes=5)
    assert (before - settle).replace(microsecond=0) <= settled <= after - settle
    for request in vendor.requests:
        assert request.header("x-api-key") == KEY and request.header("anthropic-version") == "2023-06-01"
        assert KEY not in request.url

    rows = {r["source_event_id"]: r for r in store.tail(source=NAME, limit=100)}
    assert {k: rows[aid(0)][k] for k in ("actor", "action", "target", "event_timestamp")} == {
        "actor": "user0@acme.example",
        "action": "claude_chat_created",
        "target": "claude_chat_010000",
        "event_timestamp": "2026-03-01T00:00:00.000000Z",
    }
    assert (rows[aid(2)]["actor"], rows[aid(2)]["target"]) == ("adminkey_010002", "apikey_010002")
    assert (rows[aid(3)]["action"], rows[aid(3)]["target"]) == ("sso_login_succeeded", None)
    assert (rows[aid(4)]["actor"], rows[aid(4)]["target"]) == ("directory_010004", "user_010004")
    assert (rows[aid(5)]["actor"], rows[aid(5)]["target"]) == ("apikey_010005", "claude_proj_010005")
    assert json.loads(rows[aid(1)]["raw_payload"])["actor"]["ip_address"] == "192.0.2.34"


def test_a_backfill_stopped_by_max_pages_resumes_at_its_page_and_then_turns_incremental(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    everything = mixed_activities(50, T0)
    vendor.add(*everything[:45])
    source = sources.load(claude_source(pageSize=10, maxPagesPerRun=2))

    first = run_pull(source, store=store, context=context)
    assert (first.written, first.drained) == (20, False)
    position = dict(first.cursor_after.position)
    until = position.pop("until")
    assert position == {"since": START, "after_id": aid(25), "newest_id": aid(44)}
    assert first.cursor_after.watermark is None and first.cursor_after.high_water == ts(everything[44])

    vendor.add(*everything[45:])  # arrive while the backfill is under way
    vendor.server.requests.clear()
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (second.written, second.duplicates, second.drained) == (20, 0, False)
    assert sent(vendor, "after_id") == [aid(25), aid(15)]
    assert set(sent(vendor, "created_at.lt")) == {until} and set(sent(vendor, "created_at.gte")) == {START}

    third = run_pull(source, store=store, start=second.cursor_after, context=context)
    assert (third.written, third.duplicates, third.drained) == (5, 0, True)
    assert third.cursor_after.position == {"before_id": aid(44)}
    assert third.cursor_after.watermark == ts(everything[44]) and third.cursor_after.high_water is None

    vendor.server.requests.clear()
    fourth = run_pull(source, store=store, start=third.cursor_after, context=context)
    assert (fourth.written, fourth.duplicates, fourth.drained) == (5, 0, True)
    assert sent(vendor, "before_id") == [aid(44)]
    assert stored_ids(store, NAME) == [aid(i) for i in range(50)]


def test_incremental_pulls_stopped_by_max_pages_resume_at_the_next_block(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    everything = mixed_activities(35, T0)
    vendor.add(*everything[:5])
    source = sources.load(claude_source(pageSize=10, maxPagesPerRun=2))
    state = run_pull(source, store=store, context=context).cursor_after
    vendor.add(*everything[5:])
    vendor.server.requests.clear()

    second = run_pull(source, store=store, start=state, context=context)
    assert (second.written, second.drained) == (20, False)
    assert sent(vendor, "before_id") == [aid(4), aid(14)]
    assert second.cursor_after.position == {"before_id": aid(24)}
    assert second.cursor_after.watermark == ts(everything[4])  # moves only when drained
    third = run_pull(source, store=store, start=second.cursor_after, context=context)
    assert (third.written, third.duplicates, third.drained) == (10, 0, True)
    assert third.cursor_after.watermark == ts(everything[34])
    assert stored_ids(store, NAME) == [aid(i) for i in range(35)]


def test_a_500_that_says_do_not_retry_fails_once_and_the_checkpoint_resumes_at_the_page(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.add(*mixed_activities(45, T0))
    source = sources.load(claude_source(pageSize=10))
    checkpoints: list[CursorState] = []

    def fail_next(page: Any, report: Any) -> None:
        if report.pages == 2:
            vendor.inject(500, should_retry=False)

    with pytest.raises(PullError) as failed:
        run_pull(
            source, store=store, context=context, batch_size=10, on_page=fail_next, on_checkpoint=checkpoints.append
        )
    message = str(failed.value)
    assert message.startswith(
        f"source '{NAME}': backfill page 3: HTTP 500 error (x-should-retry: false, not retried) from "
        f"{vendor.base_url}{PATH}: api_error: Internal server error (request-id req_"
    )
    assert "\n" not in message and len(vendor.requests) == 3  # not retried
    report = failed.value.report
    position = dict(report.checkpoint.position)
    position.pop("until")
    assert position == {"since": START, "after_id": aid(25), "newest_id": aid(44)}
    assert report.written == 20 and checkpoints[-1] == report.checkpoint

    vendor.server.requests.clear()
    resumed = run_pull(source, store=store, start=report.checkpoint, context=context)
    assert (resumed.written, resumed.duplicates, resumed.drained) == (25, 0, True)
    assert sent(vendor, "after_id") == [aid(25), aid(15), aid(5)]
    assert resumed.cursor_after.position == {"before_id": aid(44)}


def test_429_retry_after_529_and_an_html_200_are_retried(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext, sleeps: list[float]
) -> None:
    vendor.add(*mixed_activities(5, T0))
    vendor.inject(429, retry_after="7")
    vendor.inject(529)
    vendor.inject(200, body=b"<html><body>upstream maintenance</body></html>")
    patient = replace(context, retry=RetryPolicy(max_attempts=4, backoff_initial=0.01, backoff_max=0.05))
    report = run_pull(sources.load(claude_source()), store=store, context=patient)
    assert (report.written, report.requests, len(vendor.requests)) == (5, 4, 4)
    assert sleeps[0] == 7.0 and len(sleeps) == 3  # Retry-After honoured, then backoff

    for _ in range(3):
        vendor.inject(429, retry_after="1")
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(claude_source()), store=store, context=context)
    # The last answer's request-id header, for Anthropic support.
    assert re.fullmatch(
        rf"source '{NAME}': backfill page 1: HTTP 429 \(request-id req_011CV\d{{18}}\) from "
        rf"{re.escape(vendor.base_url + PATH)}, gave up after 3 attempts",
        str(failed.value),
    ), str(failed.value)


def test_a_cursor_that_comes_back_two_pages_later_is_a_pagination_loop(
    api: LoopbackServer,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No page cap by default: a feed whose last_id cycles (a, b, a, ...) would page until the deadline.
    monkeypatch.setenv(ENV, api.base_url)
    monkeypatch.setenv("ANTHROPIC_COMPLIANCE_KEY", KEY)
    served: list[str | None] = []

    def cycling(request: Any) -> Response:
        served.append(request.arg("after_id"))
        last = "activity_a" if len(served) % 2 else "activity_b"
        return Response(200, {"data": [], "has_more": True, "first_id": last, "last_id": last})

    api.routes[PATH] = cycling
    source = sources.load(claude_source())
    with pytest.raises(PullError, match=r"backfill page 3: pagination loop: last_id is a cursor already requested"):
        run_pull(source, store=store, context=context)
    assert served == [None, "activity_a", "activity_b"]


def test_only_settled_activities_are_read_so_a_late_one_is_not_skipped(
    vendor: ActivityFeedAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    now: list[datetime],
) -> None:
    vendor.add(activity("claude_chat_created", P - timedelta(minutes=10), user_actor("a@acme.example"), id="act_a"))
    source = sources.load(claude_source())
    first = run_pull(source, store=store, context=context)
    assert first.written == 1 and first.cursor_after.position == {"before_id": "act_a"}
    assert sent(vendor, "created_at.lt") == ["2026-03-02T11:55:00Z"]  # settleSeconds: 300 by default

    # C happened 30 s ago but is queryable only in 20 s; D happened 5 s ago and shows at once.
    vendor.add(
        activity("claude_file_uploaded", P - timedelta(seconds=30), user_actor("c@acme.example"), id="act_c"),
        visible_from=P + timedelta(seconds=20),
    )
    vendor.add(activity("claude_chat_created", P - timedelta(seconds=5), user_actor("d@acme.example"), id="act_d"))
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    # D is not settled yet: reading it now would move the cursor past C, which the API does not show yet.
    assert second.written == 0 and second.cursor_after == first.cursor_after

    now[0] = P + timedelta(minutes=6)
    third = run_pull(source, store=store, start=second.cursor_after, context=context)
    assert third.written == 2 and third.cursor_after.position == {"before_id": "act_d"}
    assert stored_ids(store, NAME) == ["act_a", "act_c", "act_d"]


@pytest.mark.parametrize(("settle", "kept"), [(None, True), (60, False)])
@pytest.mark.parametrize("trouble", ["three minutes late", "host clock two minutes ahead"])
def test_the_settle_margin_keeps_headroom_past_the_vendors_minute(
    trouble: str,
    settle: int | None,
    kept: bool,
    vendor: ActivityFeedAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    now: list[datetime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The vendor promises a minute (compliance-activity-feed). A margin of exactly that minute
    # (settleSeconds: 60) skips for good an activity that shows up later, or one the host's clock,
    # running ahead, asks for too early; the default five minutes reads both.
    ahead = timedelta(minutes=2) if trouble.startswith("host") else timedelta(0)
    monkeypatch.setattr(cc, "_now", lambda: now[0] + ahead)
    vendor.add(activity("claude_chat_created", P - timedelta(minutes=10), user_actor("a@acme.example"), id="act_a"))
    late = activity("claude_file_uploaded", P + timedelta(minutes=1), user_actor("l@acme.example"), id="act_late")
    # Queryable three minutes after it happened (past the promise), or 50 s after (within it).
    vendor.add(late, visible_from=P + (timedelta(minutes=1, seconds=50) if ahead else timedelta(minutes=4)))
    after = activity(
        "claude_chat_created", P + timedelta(minutes=1, seconds=30), user_actor("n@acme.example"), id="act_n"
    )
    vendor.add(after, visible_from=P + timedelta(minutes=1, seconds=30))  # queryable at once

    source = sources.load(claude_source(settleSeconds=settle))
    state = CursorState()
    while now[0] < P + timedelta(minutes=12):  # a poll every 20 s
        state = run_pull(source, store=store, start=state, context=context).cursor_after
        now[0] += timedelta(seconds=20)
    assert state.position == {"before_id": "act_n"}
    assert stored_ids(store, NAME) == (["act_a", "act_late", "act_n"] if kept else ["act_a", "act_n"])


def test_window_repull_reads_the_window_by_created_at_and_keeps_the_cursor(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    seeded = mixed_activities(30, T0, spacing=timedelta(hours=3))
    vendor.add(*seeded)
    day2 = T0 + timedelta(days=1)
    start = CursorState.from_dict({"before_id": aid(29), "watermark": seeded[29]["created_at"]})
    source = sources.load(claude_source(pageSize=3))
    report = run_pull(source, store=store, start=start, window=Window(day2, day2 + timedelta(days=1)), context=context)

    inside = [a["id"] for a in seeded if day2 <= datetime.fromisoformat(a["created_at"]) < day2 + timedelta(days=1)]
    assert len(inside) == 8 and stored_ids(store, NAME) == sorted(inside)
    assert (report.written, report.outside_window, report.pages) == (8, 0, 3)
    assert set(sent(vendor, "created_at.gte")) == {"2026-03-02T00:00:00Z"}
    assert set(sent(vendor, "created_at.lt")) == {"2026-03-03T00:00:00Z"}
    assert sent(vendor, "before_id") == [None] * 3 and sent(vendor, "after_id")[0] is None
    assert report.cursor_after == start


def test_activity_types_are_sent_in_bracket_form(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.add(*mixed_activities(12, T0))
    types = ["claude_chat_created", "claude_file_uploaded"]
    source = sources.load(claude_source(activityTypes=types))
    assert "2 activity type(s)" in source.describe()
    report = run_pull(source, store=store, context=context)
    assert report.written == 4 and stored_ids(store, NAME) == [aid(0), aid(1), aid(6), aid(7)]
    (request,) = vendor.requests
    assert request.query["activity_types[]"] == types


def test_a_key_without_the_activity_feed_scope_is_a_403_naming_the_scope(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    # The wrong key (401) is the contract's (test_connector_contract.py).
    vendor.add(*mixed_activities(3, T0))
    vendor.forbidden = True
    with pytest.raises(PullError, match=r"HTTP 403 the API key may not read the Activity Feed .*read:compliance_act"):
        run_pull(sources.load(claude_source()), store=store, context=context)


def test_an_unknown_cursor_id_says_to_rewind(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    source = sources.load(claude_source())
    with pytest.raises(PullError) as failed:
        run_pull(source, store=store, start=CursorState.from_dict({"before_id": "act_gone"}), context=context)
    assert str(failed.value).startswith(f"source '{NAME}': page 1: HTTP 400 the API refused the request from ")
    assert "invalid_request_error: before_id: no activity with id 'act_gone'" in str(failed.value)
    assert str(failed.value).endswith("rewind the cursor")  # a cursor that does not fit: the contract's


def test_a_rewind_by_since_and_an_empty_feed(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    source = sources.load(claude_source())
    empty = run_pull(source, store=store, context=context)
    (until,) = sent(vendor, "created_at.lt")
    assert empty.drained and empty.cursor_after.position == {"since": until}  # the next backfill starts there
    vendor.add(*mixed_activities(6, T0))
    vendor.server.requests.clear()
    rewound = run_pull(source, store=store, start=CursorState.from_dict({"since": "2026-03-01T00:20:00Z"}))
    assert sent(vendor, "created_at.gte") == ["2026-03-01T00:20:00Z"]
    assert rewound.written == 3 and rewound.cursor_after.position == {"before_id": aid(5)}


def test_an_idle_source_is_quiet_because_its_own_accesses_are_left_out(
    vendor: ActivityFeedAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    now: list[datetime],
) -> None:
    # The API records a compliance_api_accessed activity for every request (upstream-apis.md), the
    # fake too: without the default exclusion every poll would read the accesses of the polls before.
    vendor.add(activity("claude_chat_created", P - timedelta(hours=1), user_actor("a@acme.example"), id="act_a"))

    def idle_polls(source: Any) -> list[tuple[str, int, int]]:
        """The first pull, then three polls ten minutes apart: (probe verdict, its requests, events written)."""
        state = run_pull(source, store=store, context=context).cursor_after
        polls = []
        for _ in range(3):
            now[0] += timedelta(minutes=10)
            answer = probe_source(
                source, state, known_ids=lambda ids: store.known_ids(source.name, ids), context=context
            )
            written = 0
            if answer.verdict == "new":
                report = run_pull(source, store=store, start=state, context=context)
                written, state = report.written, report.cursor_after
            polls.append((answer.verdict, answer.requests, written))
        return polls

    quiet = sources.load(claude_source())
    assert idle_polls(quiet) == [("nothing_new", 1, 0)] * 3  # a quiet probe: one request, no run
    assert {tuple(r.query["exclude_activity_types[]"]) for r in vendor.requests} == {("compliance_api_accessed",)}
    assert len(vendor.accesses()) == 4 and stored_ids(store, NAME) == ["act_a"]  # recorded by the API, never read

    vendor.server.requests.clear()
    chatty = sources.load(claude_source(name="claude_chatty", excludeActivityTypes=[]))
    polls = idle_polls(chatty)
    assert [verdict for verdict, _, _ in polls] == ["new"] * 3 and all(written >= 1 for _, _, written in polls)
    assert all("exclude_activity_types[]" not in r.query for r in vendor.requests)
    rows = store.tail(source="claude_chatty", limit=100)
    assert {r["action"] for r in rows} == {"compliance_api_accessed", "claude_chat_created"}
    assert {r["actor"] for r in rows if r["action"] == "compliance_api_accessed"} == {ACCESS_KEY_ID}


def test_filters_are_sent_in_bracket_form_and_the_fake_honours_them(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    seeded = mixed_activities(12, T0)
    seeded[6]["organization_id"] = "org_01OtherOrganization0002"
    vendor.add(*seeded)
    source = sources.load(
        claude_source(
            excludeActivityTypes=["sso_login_succeeded", "compliance_api_accessed"],
            organizationIds=["org_01Wv6QeBcDfGhJkLmNpQrSt8"],
            actorIds=["user_01user0xxxxxxx", "user_01user2xxxxxxx", "user_01user3xxxxxxx"],
        )
    )
    assert "every activity type but sso_login_succeeded, compliance_api_accessed" in source.describe()
    assert "1 organization(s) and 3 actor(s)" in source.describe()
    report = run_pull(source, store=store, context=context)
    (request,) = vendor.requests
    assert request.query["exclude_activity_types[]"] == ["sso_login_succeeded", "compliance_api_accessed"]
    assert request.query["organization_ids[]"] == ["org_01Wv6QeBcDfGhJkLmNpQrSt8"]
    assert request.query["actor_ids[]"] == ["user_01user0xxxxxxx", "user_01user2xxxxxxx", "user_01user3xxxxxxx"]
    # Those users act in 0 (a chat), 3 (a sign-in: excluded), 6 (a chat in the other organization) and 7.
    assert report.written == 2 and stored_ids(store, NAME) == [aid(0), aid(7)]


def test_an_empty_page_with_has_more_and_no_ids_is_nothing_more_yet(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.add(*mixed_activities(5, T0))
    source = sources.load(claude_source())
    first = run_pull(source, store=store, context=context)
    assert first.cursor_after.position == {"before_id": aid(4)}
    vendor.add(*mixed_activities(8, T0)[5:])

    def nothing_yet() -> None:
        vendor.inject_page([], has_more=True, first_id=None, last_id=None)

    nothing_yet()
    quiet = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (quiet.written, quiet.requests, quiet.drained) == (0, 1, True)
    assert quiet.cursor_after == first.cursor_after  # the committed cursor stays
    nothing_yet()
    probed = probe_source(source, first.cursor_after, known_ids=lambda i: store.known_ids(NAME, i), context=context)
    assert (probed.verdict, probed.requests) == ("nothing_new", 1)
    later = run_pull(source, store=store, start=quiet.cursor_after, context=context)
    assert (later.written, later.drained) == (3, True) and later.cursor_after.position == {"before_id": aid(7)}


def test_nothing_more_yet_inside_a_backfill_stops_at_its_page_and_the_next_pull_resumes(
    vendor: ActivityFeedAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vendor.add(*mixed_activities(25, T0))
    source = sources.load(claude_source(pageSize=10))

    def after_the_first(page: Any, report: Any) -> None:
        if report.pages == 1:
            vendor.inject_page([], has_more=True, first_id=None, last_id=None)

    with caplog.at_level("WARNING"):
        stopped = run_pull(source, store=store, context=context, on_page=after_the_first)
    assert (stopped.written, stopped.pages, stopped.drained) == (10, 2, False)
    position = dict(stopped.cursor_after.position)
    position.pop("until")
    assert position == {"since": START, "after_id": aid(15), "newest_id": aid(24)}  # where page 1 left it
    assert "backfill page 2: the API says has_more but returns no activities and no cursor" in caplog.text
    resumed = run_pull(source, store=store, start=stopped.cursor_after, context=context)
    assert (resumed.written, resumed.duplicates, resumed.drained) == (15, 0, True)
    assert resumed.cursor_after.position == {"before_id": aid(24)}


def test_errors_carry_the_request_id_header_for_anthropic_support(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    # compliance-errors: a request-id response header; the body need not repeat it.
    vendor.add(*mixed_activities(3, T0))
    vendor.request_id_in_body = False
    vendor.inject(500, should_retry=False)
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(claude_source()), store=store, context=context)
    served = vendor.requests[-1]
    assert str(failed.value).endswith("api_error: Internal server error (request-id req_011CV000000000000000001)"), str(
        failed.value
    )
    assert served.header("x-api-key") == KEY and KEY not in str(failed.value)
    for _ in range(3):  # a proxy's page under 503, every attempt: the last one's id
        vendor.inject(503, body=b"<html>busy</html>")
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(claude_source()), store=store, context=context)
    assert str(failed.value) == (
        f"source '{NAME}': backfill page 1: HTTP 503 (request-id req_011CV000000000000000004) from "
        f"{vendor.base_url}{PATH}, gave up after 3 attempts"
    )


def test_control_characters_in_the_request_id_or_the_error_never_reach_the_message(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext, home: Path
) -> None:
    # A terminal's escape sequences (erase the line, move up) and a BEL, in the header and the body.
    trick = "req_1\x1b[2K\x1b[1Aok: all good\x07\x9b2J"
    vendor.add(*mixed_activities(3, T0))
    vendor.request_id_in_body = False
    vendor.inject(500, should_retry=False, headers={"request-id": trick})
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(claude_source()), store=store, context=context)
    message = str(failed.value)
    assert message.endswith("(request-id req_1 [2K [1Aok: all good 2J)"), message
    assert [c for c in message if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0] == []
    for _ in range(3):  # given up after retries: the retry message quotes it too
        vendor.inject(503, headers={"request-id": trick})
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(claude_source()), store=store, context=context)
    assert "HTTP 503 (request-id req_1 [2K [1Aok: all good 2J) from" in str(failed.value)
    # In the body (error type and message, and request_id where a proxy dropped the header) too.
    body = {"type": "error", "error": {"type": "api\x1b]0;x\x07_error", "message": "bad\x07\x1b[31m"}}
    vendor.inject(400, body=json.dumps(body | {"request_id": "req\x07_2"}).encode(), headers={"request-id": ""})
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(claude_source()), store=store, context=context)
    assert [c for c in str(failed.value) if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0] == []
    assert str(failed.value).endswith("api ]0;x _error: bad [31m (request-id req _2)"), str(failed.value)
    # And on the command line.
    sources.write(claude_source())
    vendor.inject(500, should_retry=False, headers={"request-id": trick})
    preview = cli("preview", NAME)
    assert preview.exit_code == 1 and "(request-id req_1 [2K [1Aok: all good 2J)" in preview.output
    assert "\x07" not in preview.output and "\x1b" not in preview.output


@pytest.mark.parametrize(
    ("deployment_max", "waits"), [(None, [16.0, 32.0, 60.0, 60.0]), ("20", [16.0, 20.0, 20.0, 20.0])]
)
def test_backoff_may_reach_the_vendors_sixty_seconds_unless_the_deployment_sets_its_own(
    deployment_max: str | None,
    waits: list[float],
    vendor: ActivityFeedAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The one retry policy (pull_settings / PULLMODE_BACKOFF_*): its built-in 30 s ceiling gives way to
    # the vendor's 60 s for this connector; a ceiling the deployment set stands.
    monkeypatch.setattr("pullmode_dagster.engine.fetch.session.random.uniform", lambda low, high: high)  # no jitter
    environ = {"PULLMODE_BACKOFF_MAX_SECONDS": deployment_max} if deployment_max else {}
    policy = RetryPolicy.from_env(max_attempts=5, backoff_initial="16", environ=environ)
    assert policy.backoff_max == (20.0 if deployment_max else 30.0)
    vendor.add(*mixed_activities(3, T0))
    for _ in range(4):
        vendor.inject(529)
    report = run_pull(sources.load(claude_source()), store=store, context=replace(context, retry=policy))
    assert (report.written, report.requests) == (3, 5) and sleeps == waits
    sleeps.clear()
    vendor.inject(429, retry_after="60")  # the rate limit's own wait, whole
    run_pull(sources.load(claude_source()), store=store, context=replace(context, retry=policy))
    assert sleeps == [60.0]


def test_extract_maps_every_actor_type_and_passes_unknown_types_through() -> None:
    source = cc.ClaudeComplianceSource.model_validate(claude_source())

    def mapped(kind: str, actor: Any, **fields: Any) -> dict[str, Any]:
        return source.extract(activity(kind, T0, actor, id="act_1", **fields))

    chat = mapped("claude_chat_created", user_actor("ann@acme.example"), claude_chat_id="c1", claude_project_id="p1")
    assert chat == {
        "source_event_id": "act_1",
        "event_timestamp": "2026-03-01T00:00:00Z",
        "actor": "ann@acme.example",
        "action": "claude_chat_created",
        "target": "c1",
    }
    cases = [
        (mapped("claude_file_uploaded", api_actor("apikey_1"), claude_file_id="f1"), ("apikey_1", "f1")),
        (mapped("api_key_created", admin_api_key_actor("admk_1"), api_key_id="k9"), ("admk_1", "k9")),
        (mapped("sso_login_failed", unauthenticated_user_actor("who@x.example")), ("who@x.example", None)),
        (mapped("user_deprovisioned", scim_directory_sync_actor("dir_1"), user_id="u7"), ("dir_1", "u7")),
        (mapped("claude_project_archived", anthropic_actor(), claude_project_id="p2"), ("anthropic", "p2")),
        # Who, not what kind: the service account's id; the federated token's issuer and subject together.
        (mapped("claude_file_uploaded", service_account_actor("svcacct_01Build"), claude_file_id="f4"),
         ("svcacct_01Build", "f4")),
        (mapped("claude_chat_created", federated_identity_actor(GITHUB_OIDC, "repo:acme/app:ref:refs/heads/main"),
                claude_chat_id="c4"),
         (f"{GITHUB_OIDC}|repo:acme/app:ref:refs/heads/main", "c4")),
        (mapped("claude_chat_created", {"type": "federated_identity_actor", "subject": "repo:acme/app"}),
         ("|repo:acme/app", None)),
        (mapped("claude_chat_created", {"type": "service_account_actor"}), (None, None)),
        (mapped("claude_chat_deleted", anthropic_actor("support@anthropic.com"), claude_chat_id="c2"),
         ("support@anthropic.com", "c2")),
        # An activity type this connector has never heard of: action as is, a Claude id it carries as target.
        (mapped("claude_artifact_published", user_actor("b@acme.example"), claude_chat_id="c3"),
         ("b@acme.example", "c3")),
        # An actor type it does not know: an identifying field, else the type itself.
        (mapped("workspace_created", {"type": "service_actor", "service_id": "s1"}, workspace_id="w1"),
         ("service_actor", "w1")),
        (mapped("workspace_created", {"type": "service_actor", "email_address": "svc@x.example"}),
         ("svc@x.example", None)),
        (mapped("claude_chat_created", None, claude_chat_id={"nested": 1}), (None, None)),
        (mapped("claude_chat_created", {"type": "user_actor"}), (None, None)),
    ]  # fmt: skip
    assert [(m["actor"], m["target"]) for m, _ in cases] == [want for _, want in cases]
    assert mapped("brand_new_type", user_actor("c@acme.example"))["action"] == "brand_new_type"


def test_a_federated_identity_is_unambiguous_and_an_actor_too_long_to_index_is_capped() -> None:
    source = cc.ClaudeComplianceSource.model_validate(claude_source())

    def actor(value: Any) -> Any:
        return source.extract(activity("claude_chat_created", T0, value, id="act_1"))["actor"]

    # The first '|' ends the issuer: one inside it is %7C, as a URL writes it; the subject is kept as it is.
    pairs = [("https://a|b", "c"), ("https://a", "b|c"), ("https://a|b", ""), ("", "https://a|b")]
    identities = [actor({"type": "federated_identity_actor", "issuer": i, "subject": s}) for i, s in pairs]
    assert identities == ["https://a%7Cb|c", "https://a|b|c", "https://a%7Cb|", "|https://a|b"]
    assert actor({"type": "federated_identity_actor"}) is None
    # An actor longer than MAX_ACTOR_CHARS (Postgres indexes actor; an index entry holds 2704 bytes):
    # its start and a digest of the whole, so two that share a start stay apart.
    long_issuer = "https://idp.example/" + "x" * 100_000
    one, two = (actor(federated_identity_actor(long_issuer, subject)) for subject in ("repo:a", "repo:b"))
    assert len(one) == len(two) == MAX_ACTOR_CHARS == 512 and one != two
    assert one.startswith("https://idp.example/xxx") and re.fullmatch(r".*x\.\.\.sha256:[0-9a-f]{16}", one)
    assert actor(user_actor("é" * 600)) == actor(user_actor("é" * 600)) != actor(user_actor("é" * 601))
    assert len(actor(user_actor("é" * 600)).encode()) < 2704
    assert actor(user_actor("ann@acme.example")) == "ann@acme.example"  # short ones are as they are


def test_federated_identities_that_used_to_collide_are_two_actors_in_the_store(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.add(
        activity("claude_chat_created", T0, federated_identity_actor("https://a|b", "c"), id="act_1"),
        activity("claude_chat_created", T0, federated_identity_actor("https://a", "b|c"), id="act_2"),
        activity("claude_chat_created", T0, federated_identity_actor("https://i/" + "y" * 5000, "s"), id="act_3"),
    )
    report = run_pull(sources.load(claude_source()), store=store, context=context)
    assert (report.written, report.rejected) == (3, 0)
    actors = {r["source_event_id"]: r["actor"] for r in store.tail(source=NAME, limit=10)}
    assert (actors["act_1"], actors["act_2"], len(actors["act_3"])) == ("https://a%7Cb|c", "https://a|b|c", 512)
    raw = {r["source_event_id"]: json.loads(r["raw_payload"]) for r in store.tail(source=NAME, limit=10)}
    assert raw["act_3"]["actor"]["issuer"] == "https://i/" + "y" * 5000  # the whole value stays in the payload


def test_a_redirect_to_another_origin_is_not_followed_so_it_never_sees_the_key(
    vendor: ActivityFeedAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    # A gateway that redirects elsewhere (the canary's other legs are the contract's).
    vendor.add(*mixed_activities(3, T0))
    with LoopbackServer() as elsewhere:
        vendor.inject(307, headers={"Location": elsewhere.url("/v1/compliance/activities?key=x")})
        with pytest.raises(PullError, match=r"HTTP 307 redirect \(not followed\)") as failed:
            run_pull(sources.load(claude_source()), store=store, context=context)
        assert elsewhere.requests == [] and KEY not in str(failed.value)
    assert [r.header("x-api-key") for r in vendor.requests] == [KEY]


# -- validation ----------------------------------------------------------------------------------


def test_validation_names_the_field(sources: SourceWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fixed fields, the credentials, a list and the page size: the contract's.
    monkeypatch.delenv(ENV, raising=False)
    sources.write(
        claude_source(name="bad_types", activityTypes=["claude_chat_created", "Chat Created", "claude_chat_created"])
    )
    sources.write(claude_source(name="empty_types", activityTypes=[]))
    sources.write(
        claude_source(
            name="bad_filters",
            excludeActivityTypes=["compliance_api_accessed", "API Accessed"],
            organizationIds=["acme-corp", "abcdef01-2345-6789-abcd-ef0123456789", "org_01A", "org_01A"],
            actorIds=["ann@acme.example", "user_01TuVwXyZaBcDeFgH2JkLmN4"],
        )
    )
    sources.write(claude_source(name="empty_filters", organizationIds=[], actorIds=[]))
    sources.write(claude_source(name="both_lists", activityTypes=["claude_chat_created"], excludeActivityTypes=["x"]))
    sources.write(claude_source(name="no_headroom", settleSeconds=30))
    sources.write(claude_source(name="reads_own", excludeActivityTypes=[]))
    sources.write(claude_source(name="newline", actorIds=["user_1", "user_1\n"], organizationIds=["org_1\n"]))
    sources.write(claude_source(name="fine"))
    result = load_sources(sources.directory, adapters=ADAPTERS)
    problems = "\n".join(result.problems)
    assert "source 'bad_types': activityTypes[1]: not an activity type name" in problems
    assert "source 'bad_types': activityTypes[2]: listed twice" in problems
    assert "source 'empty_types': activityTypes: lists no activity type" in problems
    assert "source 'bad_filters': excludeActivityTypes[1]: not an activity type name" in problems
    assert (
        "source 'bad_filters': organizationIds[0]: not an organization id: the tagged id an activity's "
        "organization_id holds, such as org_01Wv6QeBcDfGhJkLmNpQrSt8 (not the organization_uuid, not a name)"
    ) in problems
    assert "source 'bad_filters': organizationIds[1]: not an organization id" in problems
    assert "source 'bad_filters': organizationIds[3]: listed twice" in problems
    assert "source 'bad_filters': actorIds[0]: not a user id: the API filters actors by the user_id" in problems
    assert "'bad_filters': actorIds[1]" not in problems and "'bad_filters': organizationIds[2]" not in problems
    assert "source 'empty_filters': organizationIds: lists no organization; leave it out" in problems
    assert "source 'empty_filters': actorIds: lists no actor; leave it out" in problems
    assert (
        "source 'both_lists': excludeActivityTypes: does not go with activityTypes: activityTypes names the only "
        "types read, so there is nothing to leave out (and compliance_api_accessed is read only if activityTypes "
        "lists it)"
    ) in problems
    assert "source 'no_headroom': settleSeconds: must be at least 60: Anthropic makes an activity queryable" in problems
    assert "reads_own" not in problems  # a warning, below
    # A whole value, not one with a trailing newline ('$' matches before one).
    assert "source 'newline': actorIds[1]: not a user id" in problems
    assert "source 'newline': organizationIds[0]: not an organization id" in problems
    assert "source 'newline': actorIds[0]" not in problems
    for secret_ish in ("Chat Created", "acme-corp", "ann@acme", "abcdef01", "API Accessed"):
        assert secret_ish not in problems  # values are never echoed
    fine = result.sources["fine"]
    assert (fine.page_size, fine.activity_types, fine.activities_url()) == (
        1000,
        None,
        "https://api.anthropic.com/v1/compliance/activities",
    )
    assert (fine.settle_seconds, fine.filter_params()) == (300, {"exclude_activity_types[]": [OWN_ACCESS]})
    (warning,) = result.warnings
    assert warning.endswith(
        "source 'reads_own': excludeActivityTypes: compliance_api_accessed is read: the API records one for every "
        "request to it, this connector's too, so each poll reads the accesses of the polls before it and the "
        "source is never quiet (leave excludeActivityTypes out, or list compliance_api_accessed in it, to leave "
        "them out)"
    ), warning


def test_validate_tells_the_filter_rule_and_refuses_an_organization_name(
    vendor: ActivityFeedAPI, sources: SourceWriter
) -> None:
    # The endpoint override's warning is the contract's. The filter rule, told where it matters: reading
    # the connector's own accesses, and the way out that fits (excludeActivityTypes does not go with
    # activityTypes).
    sources.write(claude_source(name="claude_own", activityTypes=["compliance_api_accessed", "claude_chat_created"]))
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 0, result.output
    assert (
        "source 'claude_own': activityTypes: compliance_api_accessed is read: the API records one for every "
        "request to it, this connector's too, so each poll reads the accesses of the polls before it and the "
        "source is never quiet (remove compliance_api_accessed from activityTypes to leave them out)"
    ) in " ".join(result.output.split())
    assert "ok: 1 source(s)" in result.output

    sources.write(claude_source(name="claude_bad", organizationIds=["Acme Corp"]))
    failed = CliRunner().invoke(main, ["validate"])
    assert failed.exit_code == 1
    assert "source 'claude_bad': organizationIds[0]: not an organization id" in failed.output


def test_the_fake_follows_the_documented_contract(vendor: ActivityFeedAPI) -> None:
    vendor.add(*mixed_activities(6, T0))
    url = vendor.base_url + PATH
    good = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}

    def get(
        params: dict[str, Any] | None = None, headers: dict[str, str] = good, *, own: bool = False
    ) -> httpx.Response:
        """A request; the fake's own compliance_api_accessed activities left out unless ``own``."""
        return httpx.get(url, params={**({} if own else {"exclude_activity_types[]": OWN_ACCESS}), **(params or {})},
                         headers=headers)  # fmt: skip

    page = get({"limit": 2}).json()
    assert ([a["id"] for a in page["data"]], page["has_more"]) == ([aid(5), aid(4)], True)
    assert (page["first_id"], page["last_id"]) == (aid(5), aid(4))
    assert [a["id"] for a in get({"limit": 2, "after_id": aid(4)}).json()["data"]] == [aid(3), aid(2)]
    newer = get({"limit": 2, "before_id": aid(1)}).json()
    assert ([a["id"] for a in newer["data"]], newer["has_more"]) == ([aid(3), aid(2)], True)
    # Activities 3 and 4 share 00:21 (newest first, the tie broken by id); 5 is at 00:35.
    assert [a["id"] for a in get({"created_at.gt": "2026-03-01T00:21:00Z"}).json()["data"]] == [aid(5)]
    tied = get({"created_at.gte": "2026-03-01T00:21:00+00:00", "created_at.lte": "2026-03-01T00:21:00Z"}).json()
    assert [a["id"] for a in tied["data"]] == [aid(4), aid(3)]
    denied = get(headers={"x-api-key": "nope", "anthropic-version": "2023-06-01"})
    assert denied.status_code == 401 and denied.json()["type"] == "error"
    assert denied.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    assert denied.json()["request_id"].startswith("req_")
    for params, headers in (
        ({"after_id": aid(1), "before_id": aid(2)}, good),
        ({"after_id": "act_nope"}, good),
        ({"created_at.gte": "2026-03-01"}, good),
        ({"limit": 5001}, good),
        ({"activity_types": "claude_chat_created"}, good),
        (None, {"x-api-key": KEY}),
    ):
        response = get(params, headers)
        assert (response.status_code, response.json()["error"]["type"]) == (400, "invalid_request_error"), params
    # Each of the five pages served recorded a compliance_api_accessed activity (upstream-apis.md);
    # the answers 401 and 400 did not. A request does not see its own access, the next one does.
    accesses = vendor.accesses()
    assert len(accesses) == 5
    newest = get({"activity_types[]": OWN_ACCESS, "limit": 1}, own=True).json()["data"]
    assert [a["id"] for a in newest] == [accesses[-1]["id"]] and len(vendor.accesses()) == 6
    assert newest[0]["actor"] == {"type": "api_actor", "api_key_id": ACCESS_KEY_ID}
    assert newest[0]["organization_id"] is None
    assert len(get({"limit": 100}, own=True).json()["data"]) == 6 + 6  # every activity, and every access
    vendor.inject(500, should_retry=False)
    vendor.inject(429, retry_after="3")
    assert get().headers["x-should-retry"] == "false"
    limited = get()
    assert (limited.status_code, limited.headers["retry-after"], limited.json()["error"]["type"]) == (
        429,
        "3",
        "rate_limit_error",
    )


def test_iso_in_the_fake_and_the_connector_agree() -> None:
    when = datetime(2026, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
    assert iso(when) == rfc3339(when) == "2026-03-01T12:30:15.250000Z"
