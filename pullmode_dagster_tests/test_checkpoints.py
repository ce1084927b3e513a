"""Progress that survives failure: checkpoints, the pull deadline, transient bad bodies, response
limits, future-dated events, a trace store that goes away mid-pull."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine.adapters import Page, PullContext
from pullmode_dagster.engine.cursor import CursorState
from pullmode_dagster.engine.errors import PullError, PullmodeError
from pullmode_dagster.engine.fetch.session import HttpSession, RetryPolicy
from pullmode_dagster.engine.pull import PullReport, run_pull
from pullmode_dagster.engine.store import SqliteTraceStore, WriteResult
from pullmode_dagster.engine.store.postgres import PostgresTraceStore

from .conftest import SourceWriter
from .documents import custom_source, http_source, s3_source
from .fakes import CursorFeed, make_events
from .helpers import Sleeps, StepClock, stored_ids
from .pg import connect, fresh_database
from .s3_helpers import ndjson


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-checkpoint-5555")


def stored_prefix(store: Any, checkpoint: CursorState) -> None:
    """The checkpoint never runs ahead of the data: every event before its page is in the store."""
    offset = int(checkpoint.position.get("page_cursor") or 0)
    assert set(stored_ids(store)) >= {f"evt_{i:05d}" for i in range(offset)}


def test_failed_pull_checkpoints_the_last_stored_page_and_the_retry_resumes_there(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    feed = CursorFeed(make_events(40), page_size=10)
    feed.fail_after_pages = 3
    api.routes["/v1/events"] = feed
    source = sources.load(http_source(api.url("/v1/events")))
    with pytest.raises(PullError, match="page 4: HTTP 500") as info:
        run_pull(source, store=store, context=context)
    report = info.value.report
    assert isinstance(report, PullReport)
    # What a pull stopped by maxPagesPerRun after page 3 would have committed, and no further.
    assert report.checkpoint == CursorState(position={"page_cursor": "30"}, high_water="2026-03-01T00:29:00.000000Z")
    assert stored_ids(store) == [f"evt_{i:05d}" for i in range(30)]

    feed.fail_after_pages = None
    api.requests.clear()
    resumed = run_pull(source, store=store, context=context, start=report.checkpoint)
    assert [r.arg("cursor") for r in api.requests] == ["30"]
    assert (resumed.written, resumed.duplicates) == (10, 0)
    assert resumed.cursor_after == CursorState(watermark="2026-03-01T00:39:00.000000Z")
    assert stored_ids(store) == [f"evt_{i:05d}" for i in range(40)]


class FailingStore(SqliteTraceStore):
    """A store that goes away after ``ok`` batches (as a terminated database connection would)."""

    def __init__(self, path: Any, ok: int):
        super().__init__(path)
        self.ok = ok

    def write_events(self, events: Any, *, run_id: str | None) -> WriteResult:
        if self.ok == 0:
            raise OSError("disk I/O error")
        self.ok -= 1
        return super().write_events(events, run_id=run_id)


def test_checkpoint_stays_at_the_last_batch_written_when_the_store_fails(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Any, context: PullContext
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(100), page_size=10)
    source = sources.load(http_source(api.url("/v1/events")))
    store = FailingStore(tmp_path / "s.db", ok=3)
    seen: list[CursorState] = []
    with pytest.raises(PullError) as info:
        run_pull(source, store=store, context=context, batch_size=20, on_checkpoint=seen.append)
    assert str(info.value) == "source 'acme_audit': trace store write failed: OSError: disk I/O error"
    checkpoint = info.value.report.checkpoint
    assert checkpoint.position.get("page_cursor") == "60" and seen[-1] == checkpoint
    assert [c.position.get("page_cursor") for c in seen] == ["20", "40", "60"]
    stored_prefix(store, checkpoint)
    assert len(stored_ids(store)) == 60


def test_trace_store_terminated_mid_pull_fails_clearly_and_the_next_pull_completes(
    api: LoopbackServer, sources: SourceWriter, context: PullContext
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(100), page_size=10)
    source = sources.load(http_source(api.url("/v1/events")))
    with fresh_database() as url:
        store = PostgresTraceStore(url)

        def kill_backend(page: Page, report: PullReport) -> None:
            if report.pages == 5:
                with connect(url) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )

        with pytest.raises(PullError, match=r"^source 'acme_audit': trace store write failed: ") as info:
            run_pull(source, store=store, context=context, batch_size=20, on_page=kill_backend)
        store.close()
        checkpoint = info.value.report.checkpoint
        with PostgresTraceStore(url) as fresh:
            stored_prefix(fresh, checkpoint)
            assert int(checkpoint.position.get("page_cursor") or 0) <= len(stored_ids(fresh))
            report = run_pull(source, store=fresh, context=context, start=checkpoint)
            assert report.drained and stored_ids(fresh) == [f"evt_{i:05d}" for i in range(100)]


def test_s3_failure_checkpoints_the_greatest_key_fully_read(
    s3: Any, sources: SourceWriter, store: SqliteTraceStore, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROP_KEY_ID", "AKIAFIRSTKEY0001")
    monkeypatch.setenv("DROP_SECRET", "first-secret-value-0001")
    events = make_events(40)
    for i in (0, 1, 3):
        s3.put_object(Bucket="audit-drops", Key=f"audit/{i}.ndjson", Body=ndjson(events[i * 10 : i * 10 + 10]))
    s3.put_object(Bucket="audit-drops", Key="audit/2.ndjson.gz", Body=b"\x1f\x8b not really gzip")
    source = sources.load(s3_source(moto_url))
    ctx = PullContext(retry=RetryPolicy(max_attempts=1))
    with pytest.raises(PullError, match=r"cannot read s3://audit-drops/audit/2.ndjson.gz") as info:
        run_pull(source, store=store, context=ctx)
    assert info.value.report.checkpoint.position.get("after_key") == "audit/1.ndjson"
    assert stored_ids(store) == [f"evt_{i:05d}" for i in range(20)]


def test_deadline_stops_cleanly_at_a_page_boundary_with_a_resumable_cursor(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, sleeps: Sleeps
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(100), page_size=10)
    source = sources.load(http_source(api.url("/v1/events"), pullDeadlineSeconds=60))
    clock = StepClock(1000.0)
    ctx = PullContext(retry=RetryPolicy(max_attempts=2, backoff_initial=0.01), sleep=sleeps, clock=clock)

    def thirty_seconds_per_page(page: Page, report: PullReport) -> None:
        clock.now += 30

    report = run_pull(source, store=store, context=ctx, on_page=thirty_seconds_per_page)
    assert (report.pages, report.stopped, report.drained) == (2, "deadline", False)
    assert report.cursor_after == CursorState(position={"page_cursor": "20"}, high_water="2026-03-01T00:19:00.000000Z")
    assert "stopped at the deadline" in report.summary()
    rest = run_pull(source, store=store, context=ctx, start=report.cursor_after, on_page=thirty_seconds_per_page)
    assert rest.cursor_after.position.get("page_cursor") == "40" and len(stored_ids(store)) == 40


def test_a_retry_after_past_the_deadline_stops_at_the_last_page(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, sleeps: Sleeps
) -> None:
    feed = CursorFeed(make_events(30), page_size=10)

    def limited(request: Request) -> Response:
        if request.arg("cursor") == "20":
            return Response(429, {"error": "slow down"}, {"Retry-After": "3600"})
        return feed(request)

    api.routes["/v1/events"] = limited
    source = sources.load(http_source(api.url("/v1/events"), pullDeadlineSeconds=120))
    ctx = PullContext(retry=RetryPolicy(max_attempts=5), sleep=sleeps)
    report = run_pull(source, store=store, context=ctx)
    assert sleeps == []  # the wait would pass the deadline: the pull does not sit in it
    assert (report.stopped, report.drained, report.cursor_after.position.get("page_cursor")) == (
        "deadline",
        False,
        "20",
    )
    assert len(stored_ids(store)) == 20


RANGED_FILE_PULLER = """\
from pullmode_dagster import Page, Puller

class RangedFile(Puller):
    \"\"\"One file read in two ranged requests: the page after the first is inside the file.\"\"\"

    def pages(self, start, *, window=None):
        with self.session() as http:
            for part in (1, 2):
                http.send("GET", self.source.options["url"], what=f"part {part}", params={"part": str(part)})
                record = {"id": f"e{part}", "t": "2026-03-01T00:00:00Z"}
                last = part == 2
                yield Page([record], nbytes=1, location="file a.jsonl", resume={"files": 1 if last else 0},
                           drained=last, boundary=last)
"""


def test_the_deadline_reached_inside_a_file_fails_the_pull_instead_of_stopping_where_every_pull_would(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deadline passes while the first part is stored; the second part's request is then never
    # sent. Stopping cleanly there would read part 1 again on every pull, and never get past it.
    (sources.directory / "ranged_file.py").write_text(RANGED_FILE_PULLER)
    monkeypatch.syspath_prepend(str(sources.directory))
    api.routes["/file"] = lambda request: Response(200, {})
    source = sources.load(
        custom_source(
            "ranged_file:RangedFile",
            name="ranged",
            options={"url": api.url("/file")},
            credentials=None,
            pullDeadlineSeconds=60,
        )
    )
    clock = StepClock(1000.0)
    ctx = PullContext(retry=RetryPolicy(max_attempts=2, backoff_initial=0.01), sleep=sleeps, clock=clock)

    def past_the_deadline(page: Page, report: PullReport) -> None:
        clock.now += 61

    with pytest.raises(PullError) as failed:
        run_pull(source, store=store, context=ctx, on_page=past_the_deadline)
    assert str(failed.value) == (
        f"part 2: the pull's deadline was reached before the request to {api.url('/file')}, inside file a.jsonl, "
        "where a pull cannot stop"
    )
    # The checkpoint is the position before the file (what a page inside it resumes from).
    assert failed.value.report.checkpoint.position == {"files": 0} and [r.arg("part") for r in api.requests] == ["1"]


def test_future_dated_events_are_stored_but_do_not_become_the_watermark(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    events = make_events(3, t0=now - timedelta(hours=1))
    events[1]["created_at"] = "2999-01-01T00:00:00Z"
    api.routes["/v1/events"] = CursorFeed(events)
    report = run_pull(sources.load(http_source(api.url("/v1/events"))), store=store, context=context)
    assert report.written == 3 and report.future_dated == 1
    assert report.cursor_after.watermark == events[2]["created_at"].replace("Z", ".000000Z")
    assert "1 future-dated" in report.summary()


class CutStream(httpx.SyncByteStream):
    """A body that ends in a connection reset after its first bytes."""

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"data": [{"id": '
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def test_html_200_and_bodies_cut_short_are_retried_then_succeed(sleeps: Sleeps) -> None:
    replies = [
        httpx.Response(200, html="<html>Bad gateway</html>"),
        httpx.Response(200, stream=CutStream()),
        httpx.Response(200, content=b'{"data": [1, 2'),
        httpx.Response(200, json={"data": [1, 2, 3]}),
    ]
    http = HttpSession(
        retry=RetryPolicy(max_attempts=4, backoff_initial=0.01),
        transport=httpx.MockTransport(lambda request: replies.pop(0)),
        sleep=sleeps,
    )

    def accept(response: httpx.Response) -> Any:
        try:
            return json.loads(response.content)
        except ValueError:
            from pullmode_dagster.engine.fetch.session import BadBody

            raise BadBody("body is not JSON") from None

    response = http.send("GET", "https://api.example/v1", what="page 1", accept=accept)
    assert response.extensions["accepted"] == {"data": [1, 2, 3]}
    assert http.requests == 4 and len(sleeps) == 3


def test_a_response_larger_than_the_cap_fails_the_page_clearly(sleeps: Sleeps) -> None:
    endless = httpx.Response(200, content=b"[" + b"1," * 600_000 + b"1]")
    http = HttpSession(max_response_bytes=1_000_000, transport=httpx.MockTransport(lambda r: endless), sleep=sleeps)
    with pytest.raises(PullError, match=r"^page 2: response from https://api.example/v1 is larger than 1000000 bytes"):
        http.send("GET", "https://api.example/v1?key=secret", what="page 2")
    assert http.requests == 1  # not retried: the same page would be as large again


def test_a_json_nesting_bomb_fails_clearly(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    api.routes["/v1/events"] = lambda r: Response(200, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(PullmodeError, match="nests deeper than the JSON parser allows"):
        run_pull(sources.load(http_source(api.url("/v1/events"))), store=store, context=context)


def test_a_non_ascii_secret_in_a_header_is_a_clear_error(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    source = sources.load(http_source(api.url("/v1/events")))
    with pytest.raises(PullError) as info:
        run_pull(source, store=store, context=context, credentials={"token": "pässwörd-1234"})
    assert str(info.value) == (
        "source 'acme_audit': headers.Authorization: a credential it uses holds non-ASCII characters; "
        "HTTP headers must be ASCII"
    )
    assert api.requests == []
