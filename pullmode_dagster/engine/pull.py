"""One pull: pages from an adapter, mapped, written in batches, summed up in a report.

This is the engine's whole loop. It streams (page by page, batch by batch, so memory does not grow
with the backlog) and returns the cursor state to commit; committing it is the caller's job and
must happen only after this function returned (the events are then in the store).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, TypeVar

from .adapters import ADAPTERS, Page, PullContext, Puller, Window
from .cursor import CursorState
from .declare.credentials import ResolvedCredentials
from .declare.models import SourceConfig
from .errors import PullError, PullmodeError
from .events.mapping import EventMapper
from .events.model import EVENT_FIELDS, EventRow, EventRows, NormalizedEvent
from .events.rejects import Reject
from .events.rules import format_timestamp, parse_timestamp
from .fetch.redaction import RedactingLogger
from .fetch.sealing import Sealer
from .fetch.session import DeadlineReached
from .store import TraceStore

T = TypeVar("T")

DEFAULT_BATCH_SIZE = 2000
PREVIEW_ROWS = 5
FLUSH_EVERY_SECONDS = 5.0
"""A slow source's events are written (and its checkpoint advanced) at least this often."""
PROGRESS_EVERY_SECONDS = 5.0
"""A page's progress line is logged for the first page (unless it is the only one), a page with
rejects, and then at most this often."""
_TIMESTAMP = EVENT_FIELDS.index("event_timestamp")
_event_time = itemgetter(_TIMESTAMP)


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
    future_dated: int = 0
    drained: bool = False
    stopped: str | None = None
    """Why a pull that did not drain stopped early: "deadline" (``maxPagesPerRun`` is not named)."""
    checkpoint: CursorState = field(default_factory=CursorState)
    """The state whose events are all in the store; what a failed poll may commit."""
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
        if self.future_dated:
            parts.append(f"{self.future_dated} future-dated")
        state = (
            "drained" if self.drained else "more to pull" + (f", stopped at the {self.stopped}" if self.stopped else "")
        )
        return f"{self.source_name}: {', '.join(parts)} ({state}, {self.duration_seconds:.1f}s)"


Credentials = ResolvedCredentials | Mapping[str, str]
"""What a caller may hand a pull: credentials it resolved (``ResolvedCredentials.for_source``, whose
redactor it also uses itself) or plain values (tests, scripts)."""


def resolve(source: SourceConfig, credentials: Credentials | None) -> ResolvedCredentials:
    """``credentials`` as resolved; without them, resolved now (never cached between pulls)."""
    if credentials is None:
        return ResolvedCredentials.for_source(source)
    return credentials if isinstance(credentials, ResolvedCredentials) else ResolvedCredentials(credentials)


def build_puller(
    source: SourceConfig,
    *,
    credentials: Credentials | None = None,
    context: PullContext | None = None,
) -> Puller:
    """A puller for ``source`` whose log lines are redacted on their way out, whoever wrote the puller."""
    secrets = resolve(source, credentials)
    context = context or PullContext()
    if not isinstance(context.logger, RedactingLogger):
        context = replace(context, logger=RedactingLogger(context.logger, secrets.redact))
    puller_cls = ADAPTERS[source.adapter].puller
    return puller_cls(source, credentials=secrets.values, context=context, redactor=secrets.redact)


def run_pull(
    source: SourceConfig,
    *,
    store: TraceStore,
    start: CursorState | None = None,
    window: Window | None = None,
    run_id: str | None = None,
    credentials: Credentials | None = None,
    context: PullContext | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_page: Callable[[Page, PullReport], None] | None = None,
    on_checkpoint: Callable[[CursorState], None] | None = None,
) -> PullReport:
    """Pull from ``start`` (or re-pull ``window``) into ``store`` and report the state to commit.

    A window pull keeps only events inside the window and never moves the cursor: its report's
    ``cursor_after`` is ``start`` unchanged. A poll keeps ``report.checkpoint`` at the state whose
    events are all in the store (``on_checkpoint`` hears each advance): when the pull fails, that is
    what may be committed, exactly what a pull stopped by ``maxPagesPerRun`` at that page would
    commit. The pull stops cleanly at a page boundary when ``pullDeadlineSeconds`` runs out.

    Positions are sealed here, for every adapter (``fetch/sealing.py``): the puller gets ``start``
    unsealed, and each page's resume is sealed before anything else sees it, so every state this
    function hands out (report, checkpoints) holds markers, never a credential.
    """
    context = context or PullContext()
    secrets = resolve(source, credentials)
    sealer = Sealer(secrets.values, secrets.redact)
    # A cursor stored before sealing knew a spelling is sealed now: it is shown again (cursor_before).
    start = seal_state(sealer, start or CursorState(), source=source.name, what="stored cursor")
    context = replace(context, deadline=context.clock() + source.pull_deadline_seconds)
    report = PullReport(
        source_name=source.name,
        run_id=run_id or uuid.uuid4().hex,
        cursor_before=start,
        cursor_after=start,
        checkpoint=start,
        window=window,
    )
    puller = build_puller(source, credentials=secrets, context=context)
    context = puller.context  # the same, with a logger that redacts with the pull's secrets
    mapper = EventMapper.for_source(source)
    window_bounds = (format_timestamp(window.start), format_timestamp(window.end)) if window else None
    buffer: list[EventRow] = []  # events as rows: no object per event (see EventRows)
    newest: str | None = None
    pending = start  # the state after the last page mapped; durable once its events are flushed

    flushed_at = [context.clock()]
    logged_at = context.clock()  # the first progress line comes with the first page (below)

    def flush() -> None:
        flushed_at[0] = context.clock()
        if buffer:
            result = _store_call(store.write_events, EventRows(buffer), run_id=report.run_id, source=source.name)
            report.written += result.written
            report.duplicates += result.duplicates
            buffer.clear()
        if window is None and pending != report.checkpoint:
            report.checkpoint = pending
            if on_checkpoint is not None:
                on_checkpoint(pending)

    pages = puller.pages(
        replace(start, position=sealer.unseal_position(start.position, source=source.name)), window=window
    )
    try:
        for page in _stopping_at_boundaries(pages):
            # First: a position that cannot be sealed stops the pull before this page counts for anything.
            resume = sealer.seal_position(page.resume, source=source.name, what="position")
            mapped, rejects = mapper.map_rows(page.records, location=page.location, where=page.where, plain=page.plain)
            rows = mapped.rows
            rejects = page.rejects + rejects
            if window_bounds is not None and puller.window_by_event_time:
                inside = [row for row in rows if window_bounds[0] <= row[_TIMESTAMP] < window_bounds[1]]
                report.outside_window += len(rows) - len(inside)
                rows = inside
            # A future-dated event is stored but does not become the watermark: events still to come
            # (dated now) would sort before it and never be pulled.
            horizon = format_timestamp(datetime.now(UTC) + CursorState.FUTURE_SKEW)
            latest = max(map(_event_time, rows), default=None)
            if latest is not None and latest <= horizon:  # the common case: none is future-dated
                newest = latest if newest is None or latest > newest else newest
            else:
                for row in rows:
                    ts = row[_TIMESTAMP]
                    if ts > horizon:
                        report.future_dated += 1
                    elif newest is None or ts > newest:
                        newest = ts
            if len(report.preview) < PREVIEW_ROWS:
                report.preview.extend(NormalizedEvent(*row) for row in rows[: PREVIEW_ROWS - len(report.preview)])
            _write_rejects(store, rejects, report)
            buffer.extend(rows)
            pending = start.after_pull(resume=resume, newest=newest, drained=page.drained)
            report.drained = page.drained
            if len(buffer) >= batch_size or context.clock() - flushed_at[0] >= FLUSH_EVERY_SECONDS:
                flush()
            report.pages += 1
            report.files += page.files
            report.records += len(page.records) + len(page.rejects)
            report.bytes += page.nbytes
            report.requests = puller.requests
            report.newest_event_timestamp = newest
            first = report.pages == 1 and not page.drained  # a pull of one page has its summary next
            if first or rejects or context.clock() - logged_at >= PROGRESS_EVERY_SECONDS:
                # Progress, not a line per page: under Dagster every line is an event-log write
                # (tens of ms each), which would cost more than the page itself.
                logged_at = context.clock()
                context.logger.info(
                    f"{source.name}: {page.location}: {len(page.records)} records, {len(rows)} events, "
                    f"{len(rejects)} rejected (total {report.written + len(buffer)} events so far)"
                )
            if on_page is not None:
                on_page(page, report)
            if not page.drained and page.boundary and context.clock() >= context.deadline:
                report.stopped = "deadline"
                context.logger.warning(
                    f"{source.name}: pullDeadlineSeconds ({source.pull_deadline_seconds:g}s) reached after "
                    f"{report.pages} pages; the next pull resumes from here"
                )
                break
        flush()
    except DeadlineReached as exc:
        # Nothing of the page that could not be fetched was read: stop at the last page boundary.
        flush()
        report.stopped = "deadline"
        report.drained = False
        context.logger.warning(f"{source.name}: {exc}; the next pull resumes from here")
    except BaseException as exc:
        # Keep what was fetched before the failure (a store that failed may fail again: then the
        # checkpoint stays at the last batch that was written). The checkpoint never runs ahead.
        try:
            flush()
        except Exception as flush_exc:
            context.logger.warning(f"{source.name}: could not write the last batch: {type(flush_exc).__name__}")
        report.finished_at = datetime.now(UTC)
        report.requests = puller.requests
        if isinstance(exc, PullmodeError):
            exc.report = report
        raise
    finally:
        pages.close()
        report.requests = puller.requests
        puller.close()
    report.finished_at = datetime.now(UTC)
    if report.pages == 0 and report.stopped is None:
        report.drained = True
    if window is None:
        report.cursor_after = report.checkpoint
    return report


def _stopping_at_boundaries(pages: Iterator[Page]) -> Iterator[Page]:
    """``pages``; the deadline reached after a page that is no boundary (inside a file) fails the
    pull: stopping there, every pull would read the file again and stop at the same place."""
    inside: str | None = None
    try:
        for page in pages:
            inside = None if page.boundary else page.location
            yield page
    except DeadlineReached as exc:
        if inside is None:
            raise
        raise PullError(f"{exc}, inside {inside}, where a pull cannot stop") from None


def seal_state(sealer: Sealer, state: CursorState, *, source: str, what: str = "cursor") -> CursorState:
    """A stored ``state`` with its position (re)sealed (a :class:`PullError` naming the field when it
    cannot be)."""
    return replace(state, position=sealer.reseal_position(state.position, source=source, what=what))


def _write_rejects(store: TraceStore, rejects: list[Reject], report: PullReport) -> None:
    if rejects:
        _store_call(store.write_rejects, rejects, run_id=report.run_id, source=report.source_name)
        report.rejected += len(rejects)


def _store_call(write: Callable[..., T], rows: list[Any], *, run_id: str, source: str) -> T:
    """A failed write (the store went away mid-pull) is one clear line, not a driver's traceback.
    Without the server's ``DETAIL`` lines: Postgres quotes the failing row there (``Failing row
    contains (..., user@example.com, ...)``), and event content stays in the store (docs/compliance.md)."""
    try:
        return write(rows, run_id=run_id)
    except PullmodeError:
        raise
    except Exception as exc:
        lines = (line for line in str(exc).splitlines() if not line.lstrip().startswith("DETAIL:"))
        detail = " ".join(" ".join(lines).split())[:300]
        raise PullError(f"source {source!r}: trace store write failed: {type(exc).__name__}: {detail}") from exc


def preview(
    source: SourceConfig, *, context: PullContext | None = None, credentials: Credentials | None = None
) -> tuple[Page | None, list[NormalizedEvent], list[Reject]]:
    """The first page (or first file) only, normalized; writes and commits nothing."""
    puller = build_puller(source, credentials=credentials, context=context)
    mapper = EventMapper.for_source(source)
    try:
        for page in puller.pages(CursorState()):
            events, rejects = mapper.map_page(page.records, location=page.location, where=page.where, plain=page.plain)
            return page, events, page.rejects + rejects
    finally:
        puller.close()
    return None, [], []
