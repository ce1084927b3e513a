"""The probe: one cheap question to a source before a poll run, "is there anything after this cursor?".

The poller (and ``pullmode pull``) asks it on a due tick, so a quiet source costs one request, not
one Dagster run. It goes through everything a pull goes through (credentials resolved now, the
cursor unsealed by the one sealer, the adapter's own session, templating, origin rules and retry
policy), bounded in time, and hands back nothing that could hold a secret: a verdict, a redacted
line, and counts.
Design: docs/design/poller.md#the-probe
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Literal

from .adapters import ProbeAnswer, PullContext
from .adapters.custom import Overrun, Raised, UserThread
from .cursor import CursorState
from .declare.models import SourceConfig
from .errors import PullmodeError
from .events.mapping import EventMapper
from .events.model import EVENT_FIELDS
from .fetch.sealing import Sealer
from .fetch.session import DeadlineReached, Throttled
from .pull import Credentials, build_puller, resolve

DEFAULT_PROBE_TIMEOUT = 20.0
"""The whole question's bound: well under Dagster's 60 s sensor timeout, however slow the vendor."""
DEFAULT_THROTTLE_WAIT = 60.0
"""How long a throttled probe waits before asking again when the server does not say."""
REASON_LIMIT = 300
_ID = EVENT_FIELDS.index("source_event_id")

Verdict = Literal["new", "nothing_new", "unknown", "failed", "throttled"]
KnownIds = Callable[[list[str]], Collection[str]]
"""Which of these ``source_event_id`` the store already holds for the source (``TraceStore.known_ids``)."""


@dataclass(frozen=True)
class ProbeResult:
    """What the probe learned; every text in it is redacted."""

    verdict: Verdict
    seconds: float
    requests: int
    reason: str | None = None
    """Why it failed or was throttled, one redacted line."""
    retry_after: float | None = None
    """Throttled: seconds until it may ask again."""

    def describe(self) -> str:
        """``1 request, 0.01 s``: what the question cost."""
        return f"{self.requests} request{'s' if self.requests != 1 else ''}, {self.seconds:.2f} s"


def probe_source(
    source: SourceConfig,
    committed: CursorState,
    *,
    known_ids: KnownIds,
    context: PullContext | None = None,
    credentials: Credentials | None = None,
    timeout: float | None = None,
) -> ProbeResult:
    """Ask ``source`` whether anything is after ``committed``; never raises for the source's own
    failures (they are ``failed``, with a redacted reason: the run is then launched and fails there).

    The question runs on a thread of its own and is abandoned after ``timeout`` (a request still in
    flight then ends at its own capped timeout); requests neither start nor wait for a retry past it."""
    started = time.monotonic()
    timeout = DEFAULT_PROBE_TIMEOUT if timeout is None else timeout
    context = context or PullContext()
    try:
        secrets = resolve(source, credentials)
    except PullmodeError as exc:  # a missing credential: the run fails on it, with its alert
        return _result("failed", started, 0, reason=_line(str(exc)))
    redact = secrets.redact
    bounded = replace(context, deadline=context.clock() + timeout, request_timeout=timeout)
    counted: list[int] = [0]

    def ask() -> ProbeAnswer:
        start = replace(
            committed, position=Sealer(secrets.values, redact).unseal_position(committed.position, source=source.name)
        )
        puller = build_puller(source, credentials=secrets, context=bounded)
        try:
            return puller.probe(start)
        finally:
            counted[0] = puller.requests
            puller.close()

    thread = UserThread(f"pullmode-probe-{source.name}")
    try:
        answer = thread.run(ask, timeout)
    except Overrun:
        return _result(
            "failed", started, counted[0], reason=f"source {source.name!r}: no answer within the probe's {timeout:g} s"
        )
    except Raised as raised:
        exc = raised.error
        if isinstance(exc, Throttled) or (isinstance(exc, DeadlineReached) and exc.throttled_for is not None):
            wait = (exc.retry_after if isinstance(exc, Throttled) else exc.throttled_for) or DEFAULT_THROTTLE_WAIT
            return _result("throttled", started, counted[0], reason=_line(redact(str(exc))), retry_after=wait)
        text = str(exc) if isinstance(exc, PullmodeError) else f"{type(exc).__name__}: {exc}"
        return _result("failed", started, counted[0], reason=_line(redact(text)))
    finally:
        thread.stop()
    if answer.records is None:
        return _result(answer.verdict, started, counted[0])
    try:
        fresh = _news(source, answer, known_ids)
    except Exception as exc:  # the store could not answer: the run will tell
        return _result("failed", started, counted[0], reason=_line(redact(f"trace store: {type(exc).__name__}: {exc}")))
    return _result("new" if fresh else "nothing_new", started, counted[0])


def _news(source: SourceConfig, answer: ProbeAnswer, known_ids: KnownIds) -> bool:
    """Whether one of the answer's records is not stored yet (a record that does not map is news:
    the run rejects it, with its reason, where it can be seen)."""
    rows, rejects = EventMapper.for_source(source).map_rows(answer.records or [], location="probe", plain=answer.plain)
    if rejects:
        return True
    ids = [row[_ID] for row in rows.rows]
    return bool(set(ids) - set(known_ids(ids)))


def _line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= REASON_LIMIT else line[: REASON_LIMIT - 3] + "..."


def _result(
    verdict: Verdict, started: float, requests: int, *, reason: str | None = None, retry_after: float | None = None
) -> ProbeResult:
    return ProbeResult(verdict, round(time.monotonic() - started, 3), requests, reason, retry_after)
