"""The engine loop: dedup on re-pull, rejects counted, streaming in bounded batches."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest

from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine.adapters import PullContext
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.events.model import NormalizedEvent
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore, WriteResult

from .conftest import SourceWriter
from .documents import http_source
from .fakes import CursorFeed, make_events
from .helpers import StepClock


@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-0000-1111")


def snapshot(store: SqliteTraceStore) -> list[tuple[Any, ...]]:
    return [(r["id"], r["source_event_id"], r["raw_payload"], r["run_id"]) for r in store.tail(limit=10**6)]


def test_pulling_twice_leaves_the_rows_unchanged(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(42))
    source = sources.load(http_source(api.url("/v1/events")))
    first = run_pull(source, store=store, context=context, run_id="run-1")
    before = snapshot(store)
    second = run_pull(source, store=store, context=context, run_id="run-2")
    assert (first.written, first.duplicates) == (42, 0)
    assert (second.written, second.duplicates) == (0, 42)
    assert snapshot(store) == before


def test_rejects_are_stored_counted_and_not_duplicated(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    events = make_events(5)
    events[1]["created_at"] = "not a date"
    events[3]["usage"]["cost_usd"] = "lots"
    api.routes["/v1/events"] = lambda r: Response(200, {"data": [*events, "oops"]})
    source = sources.load(http_source(api.url("/v1/events")))
    report = run_pull(source, store=store, context=context)
    assert (report.written, report.rejected, report.records) == (3, 3, 6)
    run_pull(source, store=store, context=context)
    assert store.count(rejected=True) == 3
    rows = store._conn.execute("SELECT reason, location FROM pulled_events_rejected ORDER BY id").fetchall()
    assert rows == [
        ("event_timestamp is not ISO 8601 or epoch: 'not a date'", "page 1, record 2"),
        ("cost_usd is not a number: 'lots'", "page 1, record 4"),
        ("record is not an object: str", "page 1, record 6"),
    ]


def test_a_failed_pull_commits_nothing_and_the_retry_writes_each_event_once(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    feed = CursorFeed(make_events(60), page_size=10)
    feed.fail_after_pages = 3
    api.routes["/v1/events"] = feed
    source = sources.load(http_source(api.url("/v1/events")))
    with pytest.raises(PullError, match="page 4: HTTP 500"):
        run_pull(source, store=store, context=context)
    assert store.count() == 30  # whole pages up to the failure are in; the cursor was never returned
    feed.fail_after_pages = None
    retry = run_pull(source, store=store, context=context)
    assert (retry.written, retry.duplicates, store.count()) == (30, 30, 60)


class RecordingStore(SqliteTraceStore):
    """Records batch sizes and when they happened relative to pages."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.log: list[tuple[str, int]] = []

    def write_events(self, events: Sequence[NormalizedEvent], *, run_id: str | None) -> WriteResult:
        self.log.append(("write", len(events)))
        return super().write_events(events, run_id=run_id)


def test_writes_are_batched_and_interleaved_with_pages(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Any, context: PullContext
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(1000), page_size=100)
    source = sources.load(http_source(api.url("/v1/events"), maxPagesPerRun=100))
    store = RecordingStore(tmp_path / "rec.db")
    report = run_pull(
        source,
        store=store,
        context=context,
        batch_size=250,
        on_page=lambda page, r: store.log.append(("page", len(page.records))),
    )
    assert report.written == 1000
    writes = [n for kind, n in store.log if kind == "write"]
    assert writes == [300, 300, 300, 100]
    assert store.log.index(("write", 300)) < store.log.index(("page", 100)) + 4  # first write after page 3


def test_progress_is_logged_for_the_first_page_and_then_at_most_every_few_seconds(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Any, context: PullContext
) -> None:
    """Under Dagster each log line is an event-log write; one per page would cost more than the page."""
    events = make_events(100)
    events[55]["created_at"] = None  # a reject on page 6: its page is always logged
    feed = CursorFeed(events, page_size=10)
    clock = StepClock(0.0)

    def two_seconds_a_page(request: Request) -> Response:  # the clock moves with the pages, not with its calls
        clock.now += 2.0
        return feed(request)

    api.routes["/v1/events"] = two_seconds_a_page
    source = sources.load(http_source(api.url("/v1/events"), maxPagesPerRun=100))
    lines: list[str] = []

    class Lines:
        def info(self, message: str) -> None:
            lines.append(message)

        warning = info

    context = PullContext(logger=Lines(), retry=context.retry, sleep=context.sleep, clock=clock)
    with SqliteTraceStore(tmp_path / "log.db") as store:
        report = run_pull(source, store=store, context=context)
    progress = [line for line in lines if "events so far" in line]
    assert report.pages == 10 and report.written == 99
    assert progress[0].startswith("acme_audit: page 1: ")
    assert any("page 6: 10 records, 9 events, 1 rejected" in line for line in progress)
    assert 3 <= len(progress) < report.pages  # throttled, yet more than the first and the reject page


@pytest.mark.slow
def test_memory_does_not_grow_with_the_backlog(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    feed = CursorFeed(make_events(12_000), page_size=300)
    api.routes["/v1/events"] = feed

    def peak_for(pages: int, name: str) -> int:
        source = sources.load(http_source(api.url("/v1/events"), name=name, maxPagesPerRun=pages))
        tracemalloc.start()
        try:
            run_pull(source, store=store, context=context, batch_size=1000)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak_for(2, "warmup")  # one-time allocations (lazy imports, caches) are not the backlog
    small, large = peak_for(4, "small"), peak_for(40, "large")
    # The large pull moves 10,800 more events (about 16 MB as Python objects); its peak may not follow.
    assert large - small < 2_000_000, (small, large)


def test_a_pull_of_one_page_logs_only_its_summary(
    api: LoopbackServer, sources: SourceWriter, tmp_path: Any, context: PullContext
) -> None:
    """An idle poll is one page; under Dagster its progress line would repeat the summary at the
    price of an event-log write."""
    api.routes["/v1/events"] = CursorFeed(make_events(3), page_size=10)
    source = sources.load(http_source(api.url("/v1/events")))
    lines: list[str] = []

    class Lines:
        def info(self, message: str) -> None:
            lines.append(message)

        warning = info

    context = PullContext(logger=Lines(), retry=context.retry, sleep=context.sleep)
    with SqliteTraceStore(tmp_path / "one.db") as store:
        report = run_pull(source, store=store, context=context)
    assert (report.pages, report.written, report.drained) == (1, 3, True)
    assert lines == []  # the caller logs report.summary()
