"""http_polling against real HTTP on loopback: pagination styles, resume, watermark, credentials."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine.adapters import PullContext, Window
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.errors import CredentialError, PullError
from pullmode_dagster.engine.fetch.session import RetryPolicy
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter
from .documents import http_source
from .fakes import CursorFeed, make_events
from .helpers import stored_ids

TOKEN = "tok-live-1a2b3c4d5e"


@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", TOKEN)


def test_body_cursor_sent_back_as_query_param(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    feed = CursorFeed(make_events(95), page_size=10, token=TOKEN)
    api.routes["/v1/events"] = feed
    source = sources.load(http_source(api.url("/v1/events"), params={"limit": "10"}, cursorQueryParam="cursor"))
    report = run_pull(source, store=store, context=context)
    assert (report.written, report.duplicates, report.pages, report.requests) == (95, 0, 10, 10)
    assert [r.arg("cursor") for r in api.requests] == [None, *[str(n) for n in range(10, 100, 10)]]
    assert all(r.arg("limit") == "10" for r in api.requests)
    assert report.drained and report.cursor_after.position.get("page_cursor") is None
    assert stored_ids(store, "acme_audit") == [f"evt_{i:05d}" for i in range(95)]


def graph_feed(server: LoopbackServer, events: list[dict[str, Any]], size: int = 20) -> Any:
    def handle(request: Request) -> Response:
        skip = int(request.arg("$skiptoken") or 0)
        body: dict[str, Any] = {"value": events[skip : skip + size]}
        if skip + size < len(events):
            body["@odata.nextLink"] = server.url(f"/graph?$top={request.arg('$top')}&$skiptoken={skip + size}")
        return Response(200, body)

    return handle


def test_absolute_url_cursor_is_requested_as_is(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    api.routes["/graph"] = graph_feed(api, make_events(50))
    source = sources.load(
        http_source(
            api.url("/graph"),
            params={"$top": "20"},
            eventsJsonPath="$.value",
            cursorJsonPath="$['@odata.nextLink']",
        )
    )
    report = run_pull(source, store=store, context=context)
    assert report.written == 50 and report.pages == 3
    assert [r.query for r in api.requests] == [
        {"$top": ["20"]},
        {"$top": ["20"], "$skiptoken": ["20"]},
        {"$top": ["20"], "$skiptoken": ["40"]},
    ]
    assert all(r.header("authorization") == f"Bearer {TOKEN}" for r in api.requests)


def test_cursor_from_a_response_header(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    events = make_events(25)

    def content(request: Request) -> Response:
        page = int(request.arg("page") or 0)
        headers = {"NextPageUri": api.url(f"/content?page={page + 1}")} if page < 2 else {}
        return Response(200, events[page * 10 : page * 10 + 10], headers)

    api.routes["/content"] = content
    source = sources.load(
        http_source(api.url("/content"), cursorJsonPath=None, cursorHeader="NextPageUri", eventsJsonPath="$")
    )
    report = run_pull(source, store=store, context=context)
    assert (report.written, report.pages) == (25, 3)
    assert [r.arg("page") for r in api.requests] == [None, "1", "2"]


def test_has_more_false_ends_paging_even_with_a_cursor(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    events = make_events(30)

    def activities(request: Request) -> Response:
        after = request.arg("after_id")
        start = next(i for i, e in enumerate(events) if e["id"] == after) + 1 if after else 0
        page = events[start : start + 10]
        return Response(200, {"data": page, "has_more": start + 10 < len(events), "last_id": page[-1]["id"]})

    api.routes["/activities"] = activities
    source = sources.load(
        http_source(
            api.url("/activities"),
            cursorJsonPath="$.last_id",
            cursorQueryParam="after_id",
            hasMoreJsonPath="$.has_more",
        )
    )
    report = run_pull(source, store=store, context=context)
    assert (report.written, report.pages, report.drained) == (30, 3, True)
    assert [r.arg("after_id") for r in api.requests] == [None, "evt_00009", "evt_00019"]


def test_a_page_returning_its_own_cursor_stops_the_pull(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    api.routes["/stuck"] = lambda r: Response(200, {"data": make_events(2), "next_cursor": "abc"})
    source = sources.load(http_source(api.url("/stuck"), maxPagesPerRun=1000))
    with pytest.raises(PullError, match=r"page 2: pagination loop: .*cursor already requested .*\(abc\)"):
        run_pull(source, store=store, context=context)
    assert len(api.requests) == 2


def test_a_cursor_cycle_is_a_loop_too(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    flip = {None: "a", "a": "b", "b": "a"}
    api.routes["/cycle"] = lambda r: Response(200, {"data": [], "next_cursor": flip[r.arg("cursor")]})
    source = sources.load(http_source(api.url("/cycle"), maxPagesPerRun=1000))
    with pytest.raises(PullError, match="pagination loop"):
        run_pull(source, store=store, context=context)
    assert [r.arg("cursor") for r in api.requests] == [None, "a", "b"]


def test_credentials_are_never_sent_to_a_foreign_host(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    with LoopbackServer() as foreign:
        foreign.routes["/next"] = lambda r: Response(200, {"value": make_events(3, start=10)})
        api.routes["/first"] = lambda r: Response(
            200, {"value": make_events(3), "@odata.nextLink": foreign.url("/next?page=2")}
        )
        doc = http_source(
            api.url("/first"),
            eventsJsonPath="$.value",
            cursorJsonPath="$['@odata.nextLink']",
            credentials={"token": {"env": "ACME_AUDIT_TOKEN"}, "key": {"env": "ACME_AUDIT_TOKEN"}},
            headers={"X-Api-Key": "${{credentials.key}}", "X-Org": "${{ingestionSource.organizationId}}"},
            params={"api_key": "${{credentials.key}}", "v": "1"},
            authMode="bearer",
        )
        report = run_pull(sources.load(doc), store=store, context=context)
    assert report.written == 6
    (first,) = api.requests
    assert first.header("authorization") == f"Bearer {TOKEN}" and first.header("x-api-key") == TOKEN
    assert first.arg("api_key") == TOKEN
    (hop,) = foreign.requests
    assert hop.header("authorization") is None and hop.header("x-api-key") is None
    assert hop.header("x-org") == "org_42"
    assert TOKEN not in hop.url and TOKEN not in json.dumps(hop.headers)


def test_post_with_templated_json_body(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    feed = CursorFeed(make_events(15), page_size=10)
    api.routes["/search"] = feed
    body = '{"org": "${{ingestionSource.organizationId}}", "source": "${{ingestionSource.name}}"}'
    source = sources.load(http_source(api.url("/search"), method="POST", body=body))
    report = run_pull(source, store=store, context=context)
    assert report.written == 15
    assert [r.method for r in api.requests] == ["POST", "POST"]
    assert api.requests[0].json() == {"org": "org_42", "source": "acme_audit"}
    assert api.requests[0].header("content-type") == "application/json"
    assert api.requests[1].arg("cursor") == "10"


def test_max_pages_per_run_resumes_from_the_page_cursor(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(45), page_size=10)
    source = sources.load(http_source(api.url("/v1/events"), maxPagesPerRun=2))
    first = run_pull(source, store=store, context=context)
    assert (first.written, first.drained) == (20, False)
    assert first.cursor_after == CursorState(position={"page_cursor": "20"}, high_water="2026-03-01T00:19:00.000000Z")
    api.requests.clear()
    second = run_pull(source, store=store, context=context, start=first.cursor_after)
    assert [r.arg("cursor") for r in api.requests] == ["20", "30"]
    third = run_pull(source, store=store, context=context, start=second.cursor_after)
    assert third.drained and third.cursor_after == CursorState(watermark="2026-03-01T00:44:00.000000Z")
    assert stored_ids(store, "acme_audit") == [f"evt_{i:05d}" for i in range(45)]
    assert first.written + second.written + third.written == 45


def test_drained_source_resumes_from_its_watermark_with_one_request(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    feed = CursorFeed(make_events(30), page_size=10)
    api.routes["/v1/events"] = feed
    source = sources.load(
        http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"})
    )
    first = run_pull(source, store=store, context=context)
    assert first.cursor_after.watermark == "2026-03-01T00:29:00.000000Z"
    api.requests.clear()
    quiet = run_pull(source, store=store, context=context, start=first.cursor_after)
    assert quiet.requests == 1 and len(api.requests) == 1
    assert api.requests[0].arg("created_after") == "2026-03-01T00:29:00.000000Z"
    assert (quiet.written, quiet.duplicates, quiet.cursor_after) == (0, 0, first.cursor_after)
    feed.events += make_events(5, start=30)
    api.requests.clear()
    fresh = run_pull(source, store=store, context=context, start=quiet.cursor_after)
    assert (fresh.written, fresh.duplicates, len(api.requests)) == (5, 0, 1)
    assert fresh.cursor_after.watermark == "2026-03-01T00:34:00.000000Z"


def test_rotated_credential_is_used_by_the_next_pull(
    api: LoopbackServer,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = CursorFeed(make_events(5), token=TOKEN)
    api.routes["/v1/events"] = feed
    source = sources.load(http_source(api.url("/v1/events")))
    assert run_pull(source, store=store, context=context).written == 5
    feed.token = "tok-rotated-9z8y7x"
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-rotated-9z8y7x")
    feed.events += make_events(3, start=5)
    assert run_pull(source, store=store, context=context).written == 3
    assert [r.header("authorization") for r in api.requests] == [
        f"Bearer {TOKEN}",
        "Bearer tok-rotated-9z8y7x",
    ]


def test_credential_from_a_file_is_reread_every_pull(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    (sources.directory / "token.txt").write_text("file-token-1111\n")
    api.routes["/v1/events"] = CursorFeed(make_events(2))
    source = sources.load(http_source(api.url("/v1/events"), credentials={"token": {"file": "token.txt"}}))
    run_pull(source, store=store, context=context)
    (sources.directory / "token.txt").write_text("file-token-2222\n")
    run_pull(source, store=store, context=context)
    assert [r.header("authorization") for r in api.requests] == [
        "Bearer file-token-1111",
        "Bearer file-token-2222",
    ]


def test_unset_credential_fails_before_anything_is_sent(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_AUDIT_TOKEN")
    source = sources.load(http_source(api.url("/v1/events")))
    with pytest.raises(
        CredentialError,
        match="source 'acme_audit': credential 'token': environment variable ACME_AUDIT_TOKEN is not set",
    ):
        run_pull(source, store=store)
    assert api.requests == []


def test_http_error_names_source_page_and_status_without_the_secret(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    api.routes["/v1/events"] = lambda r: Response(401, {"error": f"bad token {r.header('authorization')}"})
    source = sources.load(http_source(api.url("/v1/events"), params={"key": "${{credentials.token}}"}))
    with pytest.raises(PullError) as info:
        run_pull(source, store=store, context=context)
    message = str(info.value)
    assert message.startswith(f"source 'acme_audit': page 1: HTTP 401 error from {api.url('/v1/events')}")
    assert TOKEN not in message and "***" in message


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("<html>maintenance</html>", r"page 1: body is not JSON \(no content-type, 24 bytes; Expecting value\) from "),
        ({"items": []}, r"page 1: eventsJsonPath \$.data matched nothing in the response from "),
        ({"data": {"id": 1}}, r"page 1: eventsJsonPath \$.data is a dict, not an array from "),
    ],
)
def test_unusable_responses_fail_clearly(
    api: LoopbackServer,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    body: Any,
    error: str,
) -> None:
    api.routes["/v1/events"] = lambda r: Response(200, body)
    with pytest.raises(PullError, match=error) as info:
        run_pull(sources.load(http_source(api.url("/v1/events"))), store=store, context=context)
    # A 200 that is not the promised JSON is transient in practice (a proxy's page): retried first.
    assert str(info.value).endswith("gave up after 3 attempts") and len(api.requests) == 3


def test_retries_a_429_then_succeeds(
    api: LoopbackServer,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    sleeps: list[float],
) -> None:
    feed = CursorFeed(make_events(3))
    calls = iter([Response(429, {"error": "slow down"}, {"Retry-After": "2"})])
    api.routes["/v1/events"] = lambda r: next(calls, None) or feed(r)
    report = run_pull(sources.load(http_source(api.url("/v1/events"))), store=store, context=context)
    assert report.written == 3 and sleeps == [2.0] and report.requests == 2


def test_a_pull_lent_no_policy_retries_as_the_environment_says(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pullmode preview`` and scripts lend no context: the deployment's variables still apply."""
    monkeypatch.setenv("PULLMODE_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("PULLMODE_BACKOFF_INITIAL_SECONDS", "0.01")
    monkeypatch.setenv("PULLMODE_BACKOFF_MAX_SECONDS", "0.02")
    assert PullContext().retry == RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.02)
    api.routes["/v1/events"] = lambda r: Response(503, {"error": "down"})
    with pytest.raises(PullError, match=r"page 1: HTTP 503 from .*, gave up after 2 attempts$"):
        run_pull(sources.load(http_source(api.url("/v1/events"))), store=store)
    assert len(api.requests) == 2


def test_retry_settings_given_win_over_the_environment_and_bad_ones_fail_clearly() -> None:
    env = {"PULLMODE_MAX_ATTEMPTS": "7", "PULLMODE_BACKOFF_INITIAL_SECONDS": "0.5", "PULLMODE_BACKOFF_MAX_SECONDS": ""}
    assert RetryPolicy.from_env(environ=env) == RetryPolicy(max_attempts=7, backoff_initial=0.5, backoff_max=30.0)
    given = RetryPolicy.from_env(max_attempts=2, backoff_initial="0.25", backoff_max=1, environ=env)
    assert given == RetryPolicy(max_attempts=2, backoff_initial=0.25, backoff_max=1.0)
    assert RetryPolicy.from_env(environ={}) == RetryPolicy() == RetryPolicy(5, 1.0, 30.0)
    with pytest.raises(PullError, match=r"^PULLMODE_BACKOFF_MAX_SECONDS: not a number$"):
        RetryPolicy.from_env(environ={"PULLMODE_BACKOFF_MAX_SECONDS": "soon"})
    with pytest.raises(PullError, match=r"^PULLMODE_MAX_ATTEMPTS: must be greater than 0$"):
        RetryPolicy.from_env(environ={"PULLMODE_MAX_ATTEMPTS": "0"})
    with pytest.raises(PullError, match=r"^PULLMODE_BACKOFF_INITIAL_SECONDS: must be greater than 0$"):
        RetryPolicy.from_env(backoff_initial="-1", environ={})


def test_window_pull_templates_window_params_and_keeps_the_cursor(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(120), page_size=50)
    source = sources.load(
        http_source(api.url("/v1/events"), windowParams={"from": "${{window.start}}", "day": "${{window.start:%d}}"})
    )
    start = CursorState(watermark="2026-02-01T00:00:00Z")
    window = Window(datetime(2026, 3, 1, 0, 30, tzinfo=UTC), datetime(2026, 3, 1, 1, 0, tzinfo=UTC))
    report = run_pull(source, store=store, context=context, start=start, window=window)
    assert api.requests[0].arg("from") == "2026-03-01T00:30:00.000000Z" and api.requests[0].arg("day") == "01"
    assert report.written == 30 and report.outside_window == 90
    assert report.cursor_after == start


def test_bearer_does_not_override_an_authorization_header(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(1))
    doc = http_source(
        api.url("/v1/events"), authMode="bearer", headers={"Authorization": "Token ${{credentials.token}}"}
    )
    run_pull(sources.load(doc), store=store, context=context)
    assert [r.header("authorization") for r in api.requests] == [f"Token {TOKEN}"]
