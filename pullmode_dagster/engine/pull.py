"""One pull: pages from an adapter, mapped, written in batches, summed up in a report.

This is the engine's whole loop. It streams (page by page, batch by batch, so memory does not grow
with the backlog) and returns the cursor state to commit; committing it is the caller's job and
must happen only after this function returned (the events are then in the store).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .adapters import ADAPTERS, Page, PullContext, Puller, Window
from .config import SourceConfig
from .credentials import Redactor, resolve_credentials
from .cursor import CursorState
from .errors import PullmodeError
from .events import NormalizedEvent, Reject, format_timestamp, parse_timestamp
from .mapping import EventMapper
from .store import TraceStore

DEFAULT_BATCH_SIZE = 2000
PREVIEW_ROWS = 5


@dataclass
class PullReport:
    """What one pull did; the Dagster layer turns it into materialization metadata."""

    source_name: str
    run_id: str
    cursor_before: CursorState
    cursor_after: CursorState
    window: Window | None = None
    pages: int = 0
    files: int = 0
    records: int = 0
    written: int = 0
    duplicates: int = 0
    rejected: int = 0
    outside_window: int = 0
    bytes: int = 0
    requests: int = 0
    newest_event_timestamp: str | None = None
    drained: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    preview: list[NormalizedEvent] = field(default_factory=list)

    @property
    def lag_seconds(self) -> float | None:
        """How far the newest event known (pulled now, or committed before) trails the end of the
        pull; None when the source has never produced an event."""
        newest = max(
            (
                t
                for t in (self.newest_event_timestamp, self.cursor_before.watermark, self.cursor_before.high_water)
                if t
            ),
            default=None,
        )
        if newest is None:
            return None
        end = self.finished_at or datetime.now(UTC)
        return max(0.0, (end - parse_timestamp(newest)).total_seconds())

    @property
    def duration_seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    def summary(self) -> str:
        parts = [
            f"{self.written} written",
            f"{self.duplicates} duplicates skipped",
            f"{self.rejected} rejected",
            f"{self.files} files" if self.files else f"{self.pages} pages",
            f"{self.bytes} bytes",
        ]
        if self.outside_window:
            parts.append(f"{self.outside_window} outside the window")
        state = "drained" if self.drained else "more to pull"
        return f"{self.source_name}: {', '.join(parts)} ({state}, {self.duration_seconds:.1f}s)"


def build_puller(
    source: SourceConfig,
    *,
    credentials: dict[str, str] | None = None,
    context: PullContext | None = None,
) -> Puller:
    """A puller for ``source`` with freshly resolved credentials (never cached between pulls)."""
    if credentials is None:
        base_dir = source.file.parent if source.file else None
        credentials = resolve_credentials(source.credentials, source_name=source.name, base_dir=base_dir)
    puller_cls = ADAPTERS[source.adapter]
    return puller_cls(
        source, credentials=credentials, context=context or PullContext(), redactor=Redactor(credentials.values())
    )


def run_pull(
    source: SourceConfig,
    *,
    store: TraceStore,
    start: CursorState | None = None,
    window: Window | None = None,
    run_id: str | None = None,
    credentials: dict[str, str] | None = None,
    context: PullContext | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_page: Callable[[Page, PullReport], None] | None = None,
) -> PullReport:
    """Pull from ``start`` (or re-pull ``window``) into ``store`` and report the state to commit.

    A window pull keeps only events inside the window and never moves the cursor: its report's
    ``cursor_after`` is ``start`` unchanged.
    """
    context = context or PullContext()
    start = start or CursorState()
    report = PullReport(
        source_name=source.name,
        run_id=run_id or uuid.uuid4().hex,
        cursor_before=start,
        cursor_after=start,
        window=window,
    )
    puller = build_puller(source, credentials=credentials, context=context)
    mapper = EventMapper.for_source(source)
    window_bounds = (format_timestamp(window.start), format_timestamp(window.end)) if window else None
    buffer: list[NormalizedEvent] = []
    newest: str | None = None
    last: Page | None = None

    def flush() -> None:
        if buffer:
            result = store.write_events(buffer, run_id=report.run_id)
            report.written += result.written
            report.duplicates += result.duplicates
            buffer.clear()

    try:
        for page in puller.pages(start, window=window):
            last = page
            events, rejects = mapper.map_page(page.records, location=page.location, where=page.where)
            rejects = page.rejects + rejects
            if window_bounds is not None and puller.window_by_event_time:
                inside = [e for e in events if window_bounds[0] <= e.event_timestamp < window_bounds[1]]
                report.outside_window += len(events) - len(inside)
                events = inside
            for event in events:
                if newest is None or event.event_timestamp > newest:
                    newest = event.event_timestamp
            if len(report.preview) < PREVIEW_ROWS:
                report.preview.extend(events[: PREVIEW_ROWS - len(report.preview)])
            buffer.extend(events)
            if len(buffer) >= batch_size:
                flush()
            _write_rejects(store, rejects, report)
            report.pages += 1
            report.files += page.files
            report.records += len(page.records) + len(page.rejects)
            report.bytes += page.nbytes
            report.requests = puller.requests
            report.newest_event_timestamp = newest
            context.logger.info(
                f"{source.name}: {page.location}: {len(page.records)} records, {len(events)} events, "
                f"{len(rejects)} rejected (total {report.written + len(buffer)} events so far)"
            )
            if on_page is not None:
                on_page(page, report)
        flush()
    except PullmodeError as exc:
        # What was fetched before the failure is kept: the retry re-pulls it and dedup absorbs it,
        # so the re-pull window stays small. The cursor is not returned, so nothing is committed.
        flush()
        report.finished_at = datetime.now(UTC)
        exc.report = report
        raise
    finally:
        report.requests = puller.requests
        puller.close()
    report.finished_at = datetime.now(UTC)
    report.drained = last.drained if last is not None else True
    if window is None and last is not None:
        report.cursor_after = start.after_pull(resume=last.resume, newest=newest, drained=last.drained)
    return report


def _write_rejects(store: TraceStore, rejects: list[Reject], report: PullReport) -> None:
    if rejects:
        store.write_rejects(rejects, run_id=report.run_id)
        report.rejected += len(rejects)


def preview(
    source: SourceConfig, *, context: PullContext | None = None, credentials: dict[str, str] | None = None
) -> tuple[Page | None, list[NormalizedEvent], list[Reject]]:
    """The first page (or first file) only, normalized; writes and commits nothing."""
    puller = build_puller(source, credentials=credentials, context=context)
    mapper = EventMapper.for_source(source)
    try:
        for page in puller.pages(CursorState()):
            events, rejects = mapper.map_page(page.records, location=page.location, where=page.where)
            return page, events, page.rejects + rejects
    finally:
        puller.close()
    return None, [], []
