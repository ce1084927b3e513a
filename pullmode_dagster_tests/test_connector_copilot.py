"""`copilot_studio` against the fake Microsoft identity platform and Dataverse (demo/vendors/copilot.py):
OAuth 2.0 client credentials (one token per pull, renewed before expiry or once after a 401),
documented OData requests, @odata.nextLink paging and resume, the watermark filter, window re-pulls,
the mapping, token errors that name the credential at fault, and validation. What every one-click
connector shares (a wrong secret, cursors that do not fit, the CLI, the canary, Dagster) is
test_connector_contract.py's."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.demo.vendors.copilot import (
    API_PATH,
    BOT_ID,
    CLIENT_ID,
    TENANT_DOMAIN,
    TENANT_ID,
    CopilotStudioAPI,
    transcript,
)
from pullmode_dagster.engine.adapters import ADAPTERS, PullContext, Window
from pullmode_dagster.engine.adapters.copilot_studio import ORDER_BY, CopilotStudioSource, odata_time
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.fetch.session import RetryPolicy
from pullmode_dagster.engine.probe import probe_source
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter
from .connector_contract import COPILOT, T0, copilot_dataverse, copilot_source, secret_seen_by, tid
from .connector_contract import COPILOT_ENV as OVERRIDE
from .connector_contract import COPILOT_NAME as NAME
from .connector_contract import COPILOT_SECRET as SECRET
from .helpers import StepClock, stored_ids

publish = COPILOT.publish
"""Transcripts ``tid(start)`` .. ``tid(stop - 1)``, transcript i at T0 (or ``at``) + i minutes; users aad-user-0..2."""


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[CopilotStudioAPI]:
    with copilot_dataverse(SECRET, monkeypatch) as api:
        yield api


def tokens_used(vendor: CopilotStudioAPI) -> list[str]:
    return [(r.header("authorization") or "").removeprefix("Bearer ") for r in vendor.data_requests()]


# -- the engine: requests, paging, the cursor ------------------------------------------------------


def test_first_pull_sends_the_documented_requests_with_one_token_and_maps_each_transcript(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    publish(vendor, 0, 25)
    report = run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)

    assert (report.written, report.rejected, report.pages, report.drained) == (25, 0, 3, True)
    assert stored_ids(store, NAME) == [tid(i) for i in range(25)]
    assert report.cursor_after.to_dict() == {"v": 1, "watermark": "2026-03-01T00:24:00.000000Z"}
    # One token for the whole pull, asked with the documented form; the secret goes there only.
    assert vendor.token_requests() == [
        {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "scope": f"{vendor.environment_url}/.default",
        }
    ]
    (login,) = vendor.login.requests
    assert login.path == f"/{TENANT_ID}/oauth2/v2.0/token"
    assert login.header("content-type") == "application/x-www-form-urlencoded"
    assert "authorization" not in login.headers
    assert not secret_seen_by(vendor.dataverse)
    # The documented OData request, then each @odata.nextLink as is, all with the one token.
    first, *rest = vendor.data_requests()
    assert first.url == (
        f"{vendor.environment_url}{API_PATH}?$filter=createdon%20ge%202026-01-01T00:00:00Z"
        "&$orderby=createdon%20asc,conversationtranscriptid%20asc"
    )
    for request in vendor.data_requests():
        assert request.header("prefer") == "odata.maxpagesize=10"
        assert (request.header("odata-maxversion"), request.header("odata-version")) == ("4.0", "4.0")
        assert request.header("accept") == "application/json"
    assert len(set(tokens_used(vendor))) == 1 and tokens_used(vendor)[0] in vendor.tokens
    assert [r.arg("$skiptoken") is not None for r in rest] == [True, True]
    assert all(r.arg("$filter") == "createdon ge 2026-01-01T00:00:00Z" for r in rest)

    row = next(r for r in store.tail(source=NAME, limit=100) if r["source_event_id"] == tid(4))
    assert (row["event_timestamp"], row["actor"], row["action"], row["target"]) == (
        "2026-03-01T00:04:00.000000Z",
        "aad-user-1",
        "conversation_transcript",
        "Contoso Helpdesk",
    )
    assert json.loads(json.loads(row["raw_payload"])["content"])["activities"][1]["from"]["role"] == 1


def test_a_transcript_written_later_in_the_watermarks_second_is_not_lost(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    """Dataverse keeps createdon to the second: why the filter is ``ge``, not ``gt``."""
    vendor.add(transcript(tid(1), T0))
    source = sources.load(copilot_source(vendor.environment_url))
    first = run_pull(source, store=store, context=context)
    vendor.add(transcript(tid(2), T0))  # same second, written after the first pull
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (second.written, second.duplicates) == (1, 1) and stored_ids(store, NAME) == [tid(1), tid(2)]


def test_a_pull_stopped_by_max_pages_resumes_at_the_stored_next_link(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    publish(vendor, 0, 25)
    source = sources.load(copilot_source(vendor.environment_url, maxPagesPerRun=2))
    first = run_pull(source, store=store, context=context)
    assert (first.written, first.drained) == (20, False)
    link = first.cursor_after.position["next_link"]
    assert link.startswith(f"{vendor.environment_url}{API_PATH}?") and "$skiptoken=" in link
    assert first.cursor_after.high_water == "2026-03-01T00:19:00.000000Z" and first.cursor_after.watermark is None

    vendor.dataverse.requests.clear()
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert vendor.data_requests()[0].url == link  # requested exactly as the server handed it out
    assert (second.written, second.duplicates, second.drained) == (5, 0, True)
    assert second.cursor_after.to_dict() == {"v": 1, "watermark": "2026-03-01T00:24:00.000000Z"}
    assert stored_ids(store, NAME) == [tid(i) for i in range(25)]


def test_a_failed_pull_keeps_the_next_link_of_the_last_stored_page_and_resumes_there(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    publish(vendor, 0, 35)
    vendor.fail_pages = {3, 4, 5}  # page 3 answers 500 to all three attempts
    source = sources.load(copilot_source(vendor.environment_url))
    with pytest.raises(PullError) as failed:
        run_pull(source, store=store, context=context)
    assert "source 'copilot_transcripts': page 3: HTTP 500" in str(failed.value)
    checkpoint = failed.value.report.checkpoint
    assert failed.value.report.written == 20 and checkpoint.position["next_link"] == vendor.data_requests()[2].url

    vendor.fail_pages = set()
    vendor.dataverse.requests.clear()
    resumed = run_pull(source, store=store, start=checkpoint, context=context)
    assert vendor.data_requests()[0].url == checkpoint.position["next_link"]
    assert (resumed.written, resumed.duplicates, resumed.drained) == (15, 0, True)


def test_window_repull_asks_for_the_window_only_and_keeps_the_cursor(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    publish(vendor, 0, 72)  # 00:00 .. 01:11 on day 1
    publish(vendor, 100, 130, T0 + timedelta(hours=20, minutes=40))  # 22:20 day 1 .. 22:49
    publish(vendor, 200, 212, T0 + timedelta(days=1, hours=20, minutes=35))  # across midnight into day 3
    source = sources.load(copilot_source(vendor.environment_url))
    start = CursorState.from_dict({"watermark": "2026-03-05T00:00:00Z"})
    day2 = T0 + timedelta(days=1)
    report = run_pull(source, store=store, start=start, window=Window(day2, day2 + timedelta(days=1)), context=context)

    assert {r.arg("$filter") for r in vendor.data_requests()} == {
        "createdon ge 2026-03-02T00:00:00Z and createdon lt 2026-03-03T00:00:00Z"
    }
    assert (report.written, report.outside_window) == (5, 0)
    assert stored_ids(store, NAME) == [tid(i) for i in range(200, 205)]
    assert report.cursor_after == start


def test_odata_time_never_cuts_inside_a_second() -> None:
    t = datetime(2026, 3, 1, 10, 0, 0, 500_000, tzinfo=UTC)
    assert (odata_time(t), odata_time(t, ceil=True)) == ("2026-03-01T10:00:00Z", "2026-03-01T10:00:01Z")
    assert odata_time(t.replace(microsecond=0), ceil=True) == "2026-03-01T10:00:00Z"


# -- paging order: transcripts that share a second ------------------------------------------------


def random_ids(n: int, seed: int) -> list[str]:
    """``n`` GUIDs in no particular order, as Dataverse issues them (the same for a seed)."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def read_all(vendor: CopilotStudioAPI, orderby: str, *, page_size: int = 5) -> list[str]:
    """Every page of ``createdon ge T0 - 1 h`` in ``orderby``, following @odata.nextLink, as a raw client would."""
    token = vendor._issue(CLIENT_ID, vendor.environment_url)
    headers = {"Authorization": f"Bearer {token}", "Prefer": f"odata.maxpagesize={page_size}"}
    params = {"$filter": f"createdon ge {odata_time(T0 - timedelta(hours=1))}", "$orderby": orderby}
    seen: list[str] = []
    with httpx.Client() as client:
        response = client.get(f"{vendor.environment_url}{API_PATH}", params=params, headers=headers)
        while True:
            doc = response.json()
            seen += [row["conversationtranscriptid"] for row in doc["value"]]
            if "@odata.nextLink" not in doc:
                return seen
            response = client.get(doc["@odata.nextLink"], headers=headers)


def test_the_fake_pages_as_dataverse_does_a_non_unique_order_skips_rows_at_page_boundaries(
    vendor: CopilotStudioAPI,
) -> None:
    """Why the connector orders by the id too: the paging cookie holds the last row's ordering values
    only, so with ``createdon`` alone the rows sharing its second on the next page are never served."""
    shared = random_ids(12, seed=1)
    vendor.add(*(transcript(i, T0) for i in shared))
    createdon_only = read_all(vendor, "createdon asc")
    assert len(createdon_only) == 5 and set(createdon_only) < set(shared)  # 7 skipped after page 1
    unique = read_all(vendor, ORDER_BY)
    assert sorted(unique) == sorted(shared) and len(unique) == len(set(unique)) == 12


def test_transcripts_sharing_one_second_across_pages_and_pulls_are_stored_once_none_skipped(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    before = random_ids(3, seed=2)
    shared = random_ids(23, seed=3)  # one second, over five pages of 5 and two pulls
    vendor.add(*(transcript(i, T0 - timedelta(minutes=1)) for i in before))
    vendor.add(*(transcript(i, T0) for i in shared))
    capped = sources.load(copilot_source(vendor.environment_url, maxPageSize=5, maxPagesPerRun=2))
    source = sources.load(copilot_source(vendor.environment_url, maxPageSize=5))

    first = run_pull(capped, store=store, context=context)  # stops inside the shared second
    assert (first.written, first.drained) == (10, False)
    assert first.cursor_after.high_water == "2026-03-01T00:00:00.000000Z" and first.cursor_after.watermark is None
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (second.written, second.duplicates, second.drained) == (16, 0, True)  # none repeated, none skipped
    assert second.cursor_after.to_dict() == {"v": 1, "watermark": "2026-03-01T00:00:00.000000Z"}
    assert stored_ids(store, NAME) == sorted(before + shared)

    # Written later in the same second, with ids that sort before every stored one (GUIDs are not issued
    # in order: a keyset on (createdon, id) would pass over them); then the next second.
    late = [f"{k:08x}-0000-4000-8000-000000000000" for k in range(1, 7)]
    after = random_ids(4, seed=4)
    vendor.add(*(transcript(i, T0) for i in late))
    vendor.add(*(transcript(i, T0 + timedelta(seconds=1)) for i in after))
    vendor.dataverse.requests.clear()
    third = run_pull(source, store=store, start=second.cursor_after, context=context)
    assert [r.arg("$filter") for r in vendor.data_requests()][:1] == ["createdon ge 2026-03-01T00:00:00Z"]
    assert (third.written, third.duplicates) == (10, 23)  # the watermark's second again, skipped by the store
    assert third.cursor_after.to_dict() == {"v": 1, "watermark": "2026-03-01T00:00:01.000000Z"}
    stored = stored_ids(store, NAME)
    assert stored == sorted(before + shared + late + after) and len(stored) == len(set(stored)) == 36


# -- botIds and excludeTestChats ------------------------------------------------------------------

BOT_A, BOT_B, BOT_C = (f"{c * 8}-1111-4222-8333-{c * 12}" for c in "abc")


def test_bot_ids_filter_on_the_server_by_the_bot_lookup(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    for k, bot in enumerate((BOT_A, BOT_B, BOT_C) * 4):
        vendor.add(transcript(tid(k), T0 + timedelta(minutes=k), bot_id=bot))
    two = sources.load(copilot_source(vendor.environment_url, botIds=[BOT_A, f" {BOT_B.upper()}", BOT_A]))
    report = run_pull(two, store=store, context=context)
    assert (report.written, report.pages) == (8, 1)
    assert [r.arg("$filter") for r in vendor.data_requests()] == [
        f"createdon ge 2026-01-01T00:00:00Z and (_bot_conversationtranscriptid_value eq {BOT_A} or "
        f"_bot_conversationtranscriptid_value eq {BOT_B})"
    ]
    assert {json.loads(r["raw_payload"])["_bot_conversationtranscriptid_value"] for r in store.tail(source=NAME)} == {
        BOT_A,
        BOT_B,
    }
    assert "of 2 agent(s)" in two.describe()

    vendor.dataverse.requests.clear()
    one = sources.load(copilot_source(vendor.environment_url, name="only_c", botIds=[BOT_C]))
    day = Window(T0, T0 + timedelta(days=1))
    assert run_pull(one, store=store, window=day, context=context).written == 4
    assert [r.arg("$filter") for r in vendor.data_requests()] == [
        "createdon ge 2026-03-01T00:00:00Z and createdon lt 2026-03-02T00:00:00Z and "
        f"_bot_conversationtranscriptid_value eq {BOT_C}"
    ]


def test_exclude_test_chats_leaves_them_out_and_a_quiet_poll_does_not_read_them_again(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    for k in range(12):  # every third a maker's test chat, and the last two
        vendor.add(transcript(tid(k), T0 + timedelta(minutes=k), design_mode=k % 3 == 2 or k >= 10))
    source = sources.load(copilot_source(vendor.environment_url, maxPageSize=4, excludeTestChats=True))
    first = run_pull(source, store=store, context=context)
    assert (first.written, first.records, first.pages) == (7, 7, 3)
    assert stored_ids(store, NAME) == [tid(k) for k in (0, 1, 3, 4, 6, 7, 9)]
    # The watermark is the newest stored transcript; the filter starts after the test chats left out.
    assert first.cursor_after.to_dict() == {
        "v": 1,
        "watermark": "2026-03-01T00:09:00.000000Z",
        "left_out_through": "2026-03-01T00:11:00Z",
    }

    def known(batch: list[str]) -> set[str]:
        return store.known_ids(NAME, batch)

    vendor.dataverse.requests.clear()
    quiet = probe_source(source, first.cursor_after, known_ids=known, context=context)
    assert quiet.verdict == "nothing_new"
    assert [r.arg("$filter") for r in vendor.data_requests()] == ["createdon ge 2026-03-01T00:11:00Z"]

    vendor.add(transcript(tid(12), T0 + timedelta(minutes=12)))
    assert probe_source(source, first.cursor_after, known_ids=known, context=context).verdict == "new"
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert (second.written, second.records) == (1, 1)
    assert second.cursor_after.to_dict() == {"v": 1, "watermark": "2026-03-01T00:12:00.000000Z"}

    # Off (the default), test chats are stored like any transcript, and the stored left_out_through is ignored.
    everything = sources.load(copilot_source(vendor.environment_url, name="everything"))
    assert run_pull(everything, store=store, start=first.cursor_after, context=context).written == 4
    assert vendor.data_requests()[-1].arg("$filter") == "createdon ge 2026-03-01T00:09:00Z"
    assert sorted(r["source_event_id"] for r in store.tail(source="everything")) == [tid(k) for k in (9, 10, 11, 12)]


def test_a_test_chat_dated_in_the_future_does_not_become_the_next_filters_start(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    # The engine keeps a future-dated event from becoming the watermark (CursorState.FUTURE_SKEW); a test
    # chat left out must not move the filter there either, or every transcript until then is skipped.
    now = datetime.now(UTC).replace(microsecond=0)
    vendor.add(transcript(tid(0), now - timedelta(hours=1)))
    vendor.add(transcript(tid(1), now + timedelta(days=365), design_mode=True))  # a clock a year ahead
    source = sources.load(copilot_source(vendor.environment_url, excludeTestChats=True))
    first = run_pull(source, store=store, context=context)
    assert (first.written, stored_ids(store, NAME)) == (1, [tid(0)])
    watermark = f"{now - timedelta(hours=1):%Y-%m-%dT%H:%M:%S}.000000Z"
    assert first.cursor_after.to_dict() == {"v": 1, "watermark": watermark}  # no left_out_through a year ahead

    vendor.add(transcript(tid(2), now - timedelta(minutes=30)))  # written later, dated now
    known = lambda batch: store.known_ids(NAME, batch)  # noqa: E731
    assert probe_source(source, first.cursor_after, known_ids=known, context=context).verdict == "new"
    second = run_pull(source, store=store, start=first.cursor_after, context=context)
    assert vendor.data_requests()[-1].arg("$filter") == f"createdon ge {odata_time(now - timedelta(hours=1))}"
    assert (second.written, stored_ids(store, NAME)) == (1, [tid(0), tid(2)])
    # A cursor that already holds a future left_out_through (set by hand, or by an older version) is
    # read from its watermark.
    ahead = {**first.cursor_after.to_dict(), "left_out_through": odata_time(now + timedelta(days=365))}
    run_pull(source, store=store, start=CursorState.from_dict(ahead), context=context)
    assert vendor.data_requests()[-1].arg("$filter") == f"createdon ge {odata_time(now - timedelta(hours=1))}"
    # Within the engine's allowance a test chat still moves the filter on.
    vendor.add(transcript(tid(3), now + timedelta(minutes=1), design_mode=True))
    third = run_pull(source, store=store, start=second.cursor_after, context=context)
    assert third.cursor_after.position == {"left_out_through": odata_time(now + timedelta(minutes=1))}


# -- the token: cached, renewed, refused -----------------------------------------------------------


def test_a_token_about_to_expire_mid_pull_is_renewed_before_the_next_request(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, sleeps: Any
) -> None:
    clock = StepClock(1_000_000.0)
    vendor.clock, vendor.token_lifetime = clock, 300  # the client renews 60 s before the server refuses
    publish(vendor, 0, 25)
    context = PullContext(retry=RetryPolicy(max_attempts=3, backoff_initial=0.01), sleep=sleeps, clock=clock)
    source = sources.load(copilot_source(vendor.environment_url, pullDeadlineSeconds=86_400))

    def page_took_long(page: Any, report: Any) -> None:
        clock.now += 250

    report = run_pull(source, store=store, context=context, on_page=page_took_long)
    assert (report.written, report.drained) == (25, True)
    assert len(vendor.token_requests()) == 3  # one per page: each time the last was within 60 s of expiry
    assert len(vendor.data_requests()) == 3  # no 401, no retry: renewed before it expired
    assert len(set(tokens_used(vendor))) == 3


@pytest.mark.parametrize("how", ["expired", "revoked"])
def test_a_token_refused_mid_pull_gets_one_new_token_and_the_request_is_retried_once(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext, how: str
) -> None:
    publish(vendor, 0, 15)
    if how == "expired":
        vendor.seconds_per_page = 3600  # the server's clock passes the token's lifetime after page 1
    else:
        vendor.revoke_after_pages = 1
    report = run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)

    assert (report.written, report.pages, report.drained) == (15, 2, True)
    assert len(vendor.token_requests()) == 2
    first, refused, retried = vendor.data_requests()
    assert refused.url == retried.url != first.url
    old, old_again, new = tokens_used(vendor)
    assert old == old_again != new
    assert not vendor.tokens[old].revoked or how == "revoked"


def test_a_token_refused_twice_fails_in_one_line_about_the_application_user(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    publish(vendor, 0, 5)
    vendor.token_lifetime = 0  # every token is expired at the server as soon as it is issued
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)
    message = str(failed.value)
    assert message.startswith(
        "source 'copilot_transcripts': page 1: HTTP 401 the environment refused a fresh access token "
        "(is the app an application user in this environment?"
    )
    assert (len(vendor.token_requests()), len(vendor.data_requests())) == (2, 2)  # one renewal, one retry


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("application_user", "HTTP 403 the app is not an application user of this environment (add it under"),
        ("can_read", "HTTP 403 the application user may not read conversation transcripts (give it a security role"),
    ],
)
def test_a_403_says_what_the_app_lacks_in_the_environment(
    vendor: CopilotStudioAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    setting: str,
    expected: str,
) -> None:
    publish(vendor, 0, 5)
    setattr(vendor, setting, False)
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)
    assert str(failed.value).startswith(f"source 'copilot_transcripts': page 1: {expected}")
    assert len(vendor.data_requests()) == 1  # a 403 is not retried


@pytest.mark.parametrize(
    ("env", "value", "vendor_change", "field", "code"),
    [
        (None, None, "secret_expired", "credentials.client_secret", "AADSTS7000222"),
        ("COPILOT_CLIENT_ID", "11111111-2222-3333-4444-555555555555", None, "credentials.client_id", "AADSTS700016"),
        ("COPILOT_TENANT_ID", "fabrikam.onmicrosoft.com", None, "credentials.tenant_id", "AADSTS90002"),
    ],
)
def test_a_token_error_is_one_line_naming_the_source_and_the_credential_never_the_secret(
    vendor: CopilotStudioAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    value: str | None,
    vendor_change: str | None,
    field: str,
    code: str,
) -> None:
    publish(vendor, 0, 5)
    if env is not None:
        monkeypatch.setenv(env, value)
    if vendor_change is not None:
        setattr(vendor, vendor_change, True)
    with pytest.raises(PullError) as failed:
        run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)
    message = str(failed.value)
    assert message.startswith(f"source 'copilot_transcripts': token request refused, check {field}: ")
    assert f": {code}: " in message and "\n" not in message and "Trace ID" not in message
    assert SECRET not in message and "wrong-secret-value-0000" not in message
    assert len(vendor.token_requests()) == 1 and vendor.data_requests() == []  # not retried, nothing sent


def test_a_scope_for_an_environment_the_tenant_does_not_have_names_environment_url(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    with LoopbackServer() as elsewhere, pytest.raises(PullError) as failed:
        run_pull(sources.load(copilot_source(elsewhere.base_url)), store=store, context=context)
    assert "token request refused, check environmentUrl: the tenant has no resource by this environment URL in " in (
        str(failed.value)
    )
    assert "AADSTS500011" in str(failed.value) and elsewhere.requests == []


def test_a_tenant_domain_works_as_tenant_id(
    vendor: CopilotStudioAPI,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(vendor, 0, 3)
    monkeypatch.setenv("COPILOT_TENANT_ID", f" {TENANT_DOMAIN}\t")
    report = run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)
    assert report.written == 3 and vendor.login.requests[0].path == f"/{TENANT_DOMAIN}/oauth2/v2.0/token"


# -- links and cursors that must not be followed ---------------------------------------------------


def test_a_next_link_on_another_origin_is_refused_and_gets_nothing(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    publish(vendor, 0, 15)
    with LoopbackServer() as elsewhere:
        vendor.next_link_base = elsewhere.base_url
        with pytest.raises(PullError) as failed:
            run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)
        assert elsewhere.requests == []
    message = str(failed.value)
    assert message.startswith(
        "source 'copilot_transcripts': page 1: the next page link is on another origin "
        f"({elsewhere.base_url}{API_PATH})"
    )
    assert "$skiptoken" not in message
    # Refused before the page was handed on: no cursor holds the foreign link.
    assert failed.value.report.checkpoint == CursorState() and failed.value.report.written == 0


def test_a_next_link_that_repeats_is_a_pagination_loop(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    publish(vendor, 0, 15)
    vendor.stuck_link = True
    with pytest.raises(PullError, match=r"page 2: pagination loop: the response returned an @odata\.nextLink already"):
        run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)
    assert len(vendor.data_requests()) == 2


# -- mapping ---------------------------------------------------------------------------------------


def test_extract_takes_the_agent_from_metadata_and_the_user_from_the_first_user_activity() -> None:
    source = CopilotStudioSource.model_validate(copilot_source("https://contoso.crm.dynamics.com"))
    signed_in = transcript(tid(1), T0, user="29:1teams", aad_object_id="5f0c-aad")
    assert source.extract(signed_in) == {
        "source_event_id": tid(1),
        "event_timestamp": "2026-03-01T00:00:00Z",
        "actor": "5f0c-aad",
        "action": "conversation_transcript",
        "target": "Contoso Helpdesk",
    }
    anonymous = transcript(tid(2), T0, user="webchat-user-77", bot_name=None)
    assert (source.extract(anonymous)["actor"], source.extract(anonymous)["target"]) == ("webchat-user-77", BOT_ID)
    assert source.extract(transcript(tid(3), T0, user=None))["actor"] is None
    bot_framework_roles = {
        "activities": [{"from": {"id": "bot", "role": "bot"}}, {"from": {"id": "u1", "role": "user"}}]
    }
    assert source.extract(transcript(tid(4), T0, content=json.dumps(bot_framework_roles)))["actor"] == "u1"


def test_metadata_or_content_that_is_not_json_leaves_fields_null_and_the_transcript_is_stored(
    vendor: CopilotStudioAPI, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    vendor.add(
        transcript(tid(1), T0, metadata="{not json", content='{"activities": [truncated'),
        transcript(tid(2), T0 + timedelta(minutes=1), metadata="[1, 2]", content='"just text"'),
        transcript(tid(3), T0 + timedelta(minutes=2), content=json.dumps({"activities": "none"})),
    )
    vendor.rows[1]["_bot_conversationtranscriptid_value"] = None
    report = run_pull(sources.load(copilot_source(vendor.environment_url)), store=store, context=context)
    assert (report.written, report.rejected) == (3, 0)
    rows = {r["source_event_id"]: r for r in store.tail(source=NAME, limit=10)}
    assert (rows[tid(1)]["actor"], rows[tid(1)]["target"]) == (None, BOT_ID)
    assert (rows[tid(2)]["actor"], rows[tid(2)]["target"]) == (None, None)
    assert (rows[tid(3)]["actor"], rows[tid(3)]["target"]) == (None, "Contoso Helpdesk")
    assert json.loads(rows[tid(1)]["raw_payload"])["metadata"] == "{not json"


# -- validation ------------------------------------------------------------------------------------


def test_validation_names_the_field_without_echoing_values(
    sources: SourceWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fixed fields, the credentials, a list and the page size: the contract's.
    monkeypatch.delenv(OVERRIDE, raising=False)
    good = "https://contoso.crm.dynamics.com"
    sources.write(copilot_source("http://contoso.crm.dynamics.com", name="plain_http"))
    sources.write(copilot_source("https://contoso.crm.dynamics.com/api/data/v9.2", name="with_path"))
    sources.write(copilot_source("https://admin:pw@contoso.crm.dynamics.com", name="userinfo"))
    sources.write(copilot_source("contoso", name="not_a_url"))
    sources.write(copilot_source("https://con toso.crm.dynamics.com:99999", name="bad_host"))
    sources.write(copilot_source(good, name="bad_cloud", cloud="azure"))
    sources.write(copilot_source(None, name="no_url"))
    sources.write(copilot_source("http://127.0.0.1:8443", name="loopback", cloud="usgov"))
    sources.write(copilot_source("https://contoso.crm.microsoftdynamics.us/", name="gcc_high", cloud="usgovhigh"))
    sources.write(copilot_source("https://contoso.crm.appsplatform.us", name="dod_public"))
    result = load_sources(sources.directory, adapters=ADAPTERS)
    problems = "\n".join(result.problems)

    def has(name: str, text: str) -> bool:
        return f"source '{name}': {text}" in problems

    assert has("plain_http", "environmentUrl: must be https:// (plain http is accepted only on a loopback host")
    assert has("with_path", "environmentUrl: must be the environment's root URL, such as https://contoso.crm")
    assert has("userinfo", "environmentUrl: must not hold a user name or password")
    assert has("not_a_url", "environmentUrl: must be an absolute https:// URL")
    assert has(
        "bad_host", "environmentUrl: must be the environment's URL, such as https://contoso.crm.dynamics.com: its"
    )
    assert has("bad_cloud", "cloud: Input should be 'public', 'usgov', 'usgovhigh', 'dod' or 'china'")
    assert has("no_url", "environmentUrl: required field is missing")
    assert "admin:pw" not in problems and "contoso\n" not in problems
    assert set(result.sources) == {"loopback", "gcc_high", "dod_public"}
    assert result.sources["gcc_high"].scope == "https://contoso.crm.microsoftdynamics.us/.default"
    assert (
        len(result.warnings) == 1
        and "source 'dod_public': cloud: environmentUrl is a US Government DoD" in (result.warnings[0])
    )
    assert (
        "login.microsoftonline.us, but cloud public signs in at login.microsoftonline.com; set cloud: dod"
        in (result.warnings[0])
    )


def test_validation_explains_bot_ids_and_exclude_test_chats(sources: SourceWriter) -> None:
    good = "https://contoso.crm.dynamics.com"
    sources.write(copilot_source(good, name="bad_bot", botIds=[BOT_A, "Contoso Helpdesk", "{" + BOT_B + "}"]))
    sources.write(copilot_source(good, name="no_bots", botIds=[]))
    sources.write(copilot_source(good, name="not_bool", excludeTestChats="sometimes"))
    sources.write(copilot_source(good, name="fine", botIds=[BOT_A.upper()], excludeTestChats=True))
    result = load_sources(sources.directory, adapters=ADAPTERS)
    problems = "\n".join(result.problems)

    def has(name: str, text: str) -> bool:
        return f"source '{name}': {text}" in problems

    guid = "must be an agent's id in the environment (its botid, a GUID such as 8f3c2b1a-9d8e-4f7c-8b6a-5e4d3c2b1a09,"
    assert has("bad_bot", f"botIds[1]: {guid}") and has("bad_bot", f"botIds[2]: {guid}")
    assert "botIds[0]" not in problems and "Contoso Helpdesk" not in problems
    assert has("no_bots", "botIds: is empty; list at least one agent id, or leave botIds out to read every agent")
    assert has("not_bool", "excludeTestChats: Input should be a valid boolean")
    assert set(result.sources) == {"fine"}
    fine = result.sources["fine"]
    assert (fine.bot_filter(), fine.exclude_test_chats) == (f"_bot_conversationtranscriptid_value eq {BOT_A}", True)
    assert fine.describe().startswith(
        "Pulls Copilot Studio conversation transcripts of 1 agent(s) without makers' test"
    )


@pytest.mark.parametrize(
    ("cloud", "authority"),
    [
        ("public", "login.microsoftonline.com"),
        ("usgov", "login.microsoftonline.com"),
        ("usgovhigh", "login.microsoftonline.us"),
        ("dod", "login.microsoftonline.us"),
        ("china", "login.partner.microsoftonline.cn"),
    ],
)
def test_the_token_url_follows_the_cloud_unless_overridden(
    cloud: str, authority: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OVERRIDE, raising=False)
    source = CopilotStudioSource.model_validate(copilot_source("https://contoso.crm.dynamics.com", cloud=cloud))
    assert source.token_url(TENANT_ID) == f"https://{authority}/{TENANT_ID}/oauth2/v2.0/token"
    assert source.token_url("a/b?c") == f"https://{authority}/a%2Fb%3Fc/oauth2/v2.0/token"
    monkeypatch.setenv(OVERRIDE, "https://gateway.internal/aad/{tenant_id}/token")
    assert source.token_url(TENANT_ID) == f"https://gateway.internal/aad/{TENANT_ID}/token"
