"""The puller interface every adapter implements.

A puller turns a cursor state into a stream of pages of raw records; it knows nothing of mapping,
stores or Dagster. The engine (:mod:`pullmode_dagster.engine.pull`) maps, writes and computes the
next cursor state from what the pages report.
"""

from __future__ import annotations

import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, cast

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..cursor import CursorState
from ..declare.content import ContentPolicy
from ..declare.models import SourceConfig
from ..errors import PullError
from ..events.rejects import Reject
from ..fetch.redaction import Redactor
from ..fetch.session import DEFAULT_MAX_RESPONSE_BYTES, HttpSession, RetryPolicy, one_line

QUOTE_LIMIT = 300
"""The most of a vendor's error response a failure message quotes (:meth:`Puller.quote`)."""


@dataclass(frozen=True)
class Window:
    """A re-pull window (one partition): ``start`` inclusive, ``end`` exclusive, UTC."""

    start: datetime
    end: datetime


@dataclass
class Page:
    """One unit of progress: a response page or a file.

    ``resume`` is the adapter's whole position after this page (see :class:`Position`);
    ``drained`` says nothing is left after it; ``boundary`` says a pull may stop after this page
    (False inside a file: stopping there would re-read the file, so a deadline waits for its end).
    ``rejects`` are records the adapter could not even
    parse (a malformed NDJSON line); ``where(i)`` optionally names record ``i`` (key and line), asked
    only for a record that is rejected; ``files`` counts the files this page completed; ``plain``
    says the records are plain JSON as ``events.decode_json`` decodes it (the mapper then writes
    their raw payloads the fast way).
    """

    records: list[Any]
    nbytes: int
    location: str
    resume: dict[str, Any]
    drained: bool
    where: Callable[[int], str] | None = None
    rejects: list[Reject] = field(default_factory=list)
    files: int = 0
    boundary: bool = True
    plain: bool = False


class HttpSourceConfig(SourceConfig):
    """A source pulled over HTTP: the limits of its session (``Puller.session``), the same for
    every HTTP adapter."""

    max_pages_per_run: int | None = Field(default=None, ge=1, le=100_000)
    """None (the default): a pull goes on until the source is drained or ``pullDeadlineSeconds``; a
    number caps the pages of one pull (the next pull goes on from there)."""
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_requests_per_second: float | None = Field(default=None, gt=0)
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024, le=1 << 34)


@dataclass
class PullContext:
    """What the caller lends a pull: a logger, the retry policy, and seams for tests. A caller that
    lends no policy (``pullmode preview``, a script) gets the deployment's, from the environment."""

    logger: Any = field(default_factory=lambda: logging.getLogger("pullmode"))
    retry: RetryPolicy = field(default_factory=RetryPolicy.from_env)
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    deadline: float | None = None
    """When the pull must stop (a ``clock()`` value): set by the engine from ``pullDeadlineSeconds``."""
    s3_client_factory: Callable[..., Any] | None = None
    request_timeout: float | None = None
    """A cap on each request's whole time, below the source's own (a probe: the sensor must answer)."""
    content: ContentPolicy | None = None
    """What of the events' content may leave with the pull's messages (a vendor's error response
    quoted in one: :meth:`Puller.quote`); None: the source's ``eventContent``, else the environment's."""


@dataclass(frozen=True)
class ProbeAnswer:
    """A puller's answer to "is there anything after this cursor?" (:meth:`Puller.probe`).

    ``records``: what the question returned after the cursor; the engine maps them and asks the
    store which are already stored, so an inclusive filter returning the last event is not news."""

    verdict: Literal["new", "nothing_new", "unknown"]
    records: list[Any] | None = None
    plain: bool = False

    @classmethod
    def after(cls, records: list[Any], *, more: bool = False, plain: bool = False) -> ProbeAnswer:
        """What one listing after the cursor returned: news if ``more`` follows it (there is more
        than this listing showed) or one of ``records`` is not stored yet."""
        if more:
            return cls("new")
        return cls("nothing_new") if not records else cls("new", records, plain)


NEW = ProbeAnswer("new")
NOTHING_NEW = ProbeAnswer("nothing_new")
UNKNOWN = ProbeAnswer("unknown")


def position_problems(exc: ValidationError) -> str:
    """A position's validation errors, in our words (never the values)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'cursor'}: "
        + ("unknown field" if e["type"] == "extra_forbidden" else e["msg"])
        for e in exc.errors(include_input=False, include_url=False)
    )


class Position(BaseModel):
    """An adapter's part of the cursor. Subclasses declare its fields; unknown ones are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Puller(ABC):
    """Base class of every adapter's puller. One instance serves exactly one pull."""

    config_model: ClassVar[type[SourceConfig]]
    position_model: ClassVar[type[Position]] = Position
    window_by_event_time: ClassVar[bool] = True
    """A window re-pull keeps only events whose timestamp is inside the window (False: every event
    of what the adapter selected for the window, e.g. the files uploaded in it)."""
    BACKOFF_MAX_SECONDS: ClassVar[float | None] = None
    """The vendor's documented longest backoff, used when the deployment sets none
    (:meth:`RetryPolicy.for_vendor`); None: the built-in default."""
    REQUEST_ID_HEADER: ClassVar[str | None] = None
    """The response header naming a request for the vendor's support, quoted in retry messages."""

    def __init__(self, source: SourceConfig, *, credentials: dict[str, str], context: PullContext, redactor: Redactor):
        self.source = source
        self.credentials = credentials
        self.context = context
        self.redact = redactor
        self.requests = 0

    def quote(self, text: str, limit: int = QUOTE_LIMIT, *, redact: Callable[[str], str] | None = None) -> str:
        """A vendor's response text as an error message quotes it: on one line, every secret
        redacted (``redact``: a redactor that knows more, else the pull's), email addresses removed
        unless the source's content is shown (:meth:`ContentPolicy.vendor_text`), then shortened to
        ``limit`` characters (after: a cut could leave part of a secret or an address no pattern sees)."""
        content = ContentPolicy.for_puller(self.source, self.context.content)
        secrets = redact or self.redact
        return one_line(text, lambda whole: content.vendor_text(secrets(whole)), limit)

    def position(self, start: CursorState) -> Any:
        """This adapter's part of ``start``, validated (a cursor set by hand may be wrong)."""
        try:
            return self.position_model.model_validate(dict(start.position))
        except ValidationError as exc:
            raise PullError(
                f"source {self.source.name!r}: the cursor does not fit {self.source.adapter}: {position_problems(exc)}"
            ) from None

    @abstractmethod
    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        """Yield pages from ``start`` (or, for a window pull, the pages covering ``window``)."""

    def page_numbers(self) -> Iterator[int]:
        """1, 2, 3, ...: a pull's page numbers, up to ``maxPagesPerRun`` when the source sets it. Without
        it the loop ends when the source is drained or the engine stops at the pull's deadline, so a
        loop over these must still refuse a cursor it has already requested (a pagination loop)."""
        cap: int | None = getattr(self.source, "max_pages_per_run", None)
        return itertools.count(1) if cap is None else iter(range(1, cap + 1))

    def probe(self, start: CursorState) -> ProbeAnswer:
        """One cheap question before a poll run: is there anything after ``start``? The poller
        launches a run only for news; "unknown" (an adapter that cannot tell) always launches one.
        Raise as a pull would (:class:`PullError`): the run is then launched and fails there."""
        return UNKNOWN

    def first_page_probe(self, start: CursorState, **limits: Any) -> ProbeAnswer:
        """The run's own first request, alone (``limits`` overrides source fields, e.g. a page of
        one): its records are what is after the cursor. For adapters whose first page is the cheapest
        question; the same parameters, auth and checks as the run."""
        original = self.source
        self.source = original.model_copy(update={"max_pages_per_run": 1, **limits})
        try:
            pages = self.pages(start)
            try:
                page = next(pages, None)
            finally:
                # A generator in every puller (a custom one's is wrapped in one); Iterator is the contract.
                pages.close()  # type: ignore[attr-defined]
        finally:
            self.source = original
        if page is None:
            return NOTHING_NEW
        return ProbeAnswer.after(page.records, more=not page.drained, plain=page.plain)

    @staticmethod
    def not_future(value: datetime | None) -> datetime | None:
        """``value``, or None when it is past now plus the engine's allowance for clocks
        (``CursorState.FUTURE_SKEW``, the rule that keeps a future-dated event from becoming the
        watermark): a vendor's time that would move a position. A later one is a record dated ahead
        or a clock gone wrong; taken as a position, what is still to come (dated now) would sort
        before it and never be read."""
        return None if value is None or value > datetime.now(UTC) + CursorState.FUTURE_SKEW else value

    def header_credential(self, key: str) -> str:
        """A credential that travels in an HTTP header: printable ASCII, or a clear error."""
        value = self.credentials[key]
        if not (value.isascii() and value.isprintable()):
            raise PullError(
                f"source {self.source.name!r}: credential {key!r} holds characters that cannot be sent in an "
                "HTTP header (non-ASCII, a newline or a control character)"
            )
        return value

    def session(self, *, auth: httpx.Auth | None = None) -> HttpSession:
        """The one HTTP client setup, with the source's limits (``requestTimeoutSeconds``,
        ``maxResponseBytes``, ``maxRequestsPerSecond``), the retry policy (with the vendor's backoff
        ceiling when the deployment sets none), the pull's deadline and the redactor. ``auth`` adds
        credentials on the configured origin only."""
        src = cast(HttpSourceConfig, self.source)  # only the HTTP pullers ask for a session
        cap = self.context.request_timeout
        return HttpSession(
            timeout=min(src.request_timeout_seconds, cap) if cap else src.request_timeout_seconds,
            retry=self.context.retry.for_vendor(self.BACKOFF_MAX_SECONDS),
            max_requests_per_second=src.max_requests_per_second,
            max_response_bytes=src.max_response_bytes,
            deadline=self.context.deadline,
            auth=auth,
            redactor=self.redact,
            transport=self.context.transport,
            sleep=self.context.sleep,
            clock=self.context.clock,
            logger=self.context.logger,
            request_id_header=self.REQUEST_ID_HEADER,
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
