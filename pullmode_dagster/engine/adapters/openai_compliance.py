"""``openai_compliance``: the OpenAI Compliance API (ChatGPT Enterprise), Logs Platform.

One stream per event type: list its log files, download each through a redirect to a signed URL (the
key goes to the configured origin only), parse as it streams (or, when the listing gives the file's
``file_sha256``, once its digest matched). Position per stream: ``{"after", "done"}``.
Design: docs/connectors/openai_compliance.md#design-notes
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import functools
import gzip
import hashlib
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..cursor import CursorState
from ..declare.models import ConfigProblem
from ..errors import PullError
from ..events.rejects import Reject
from ..fetch.auth import bearer
from ..fetch.session import BadBody, DeadlineReached, Download, HttpSession, json_body, safe_url, same_origin
from .base import NEW, NOTHING_NEW, Page, Position, ProbeAnswer, Puller, Window
from .file_formats import ParseProblem, UnreadableFile, parse_ndjson
from .reference import ReferenceSource, first_set, rfc3339, zoned_time
from .registry import Adapter, register

EVENT_TYPES = (
    "AUTH_LOG",
    "AUDIT_LOG",
    "APP_LOG",
    "APP_AUTH_LOG",
    "CODEX_LOG",
    "CODEX_SECURITY_LOG",
    "CONVERSATION_MESSAGE",
    "CUSTOM_AGENTS_LOG",
    "COSTS",
)
"""The event types known here, spelled as the vendor's clients send them (upstream-apis.md). The list
is open: the vendor adds types, and a name not listed is requested as written (``validate`` warns)."""

OLD_NAMES = {"CONVERSATION_MESSAGE_LOG": "CONVERSATION_MESSAGE"}
"""Names this connector once accepted, and the vendor's name each is requested as (deprecated)."""

ORGANIZATION_ONLY = ("COSTS",)
"""Types listed only under ``organizations/{org-...}``: a workspace's logs have none of them."""

VERB_FIELDS = {"APP_AUTH_LOG": "action", "CODEX_LOG": "event_type"}
"""Where a type keeps its verb when not in ``action_data.action`` (AUTH_LOG, AUDIT_LOG, ...)."""

_VERB_PLACES = ("action_data.action", "action", "event_type")
"""Every place a verb is kept, in the order tried for a record of another (or no) type."""

DEFAULT_EVENT_TYPES = ("AUTH_LOG", "AUDIT_LOG")
"""Sign-ins and administrative changes: the audit trail, small, with no conversation content."""

LIST_LIMIT = 100
"""Files per listing request (the vendor's example uses 100)."""
RECORDS_PER_PAGE = 2000
"""Records handed on per page while a file streams."""

SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
"""A file checked against its digest is held until the digest matched: in memory up to this, then on
disk (a temporary file), so memory stays bounded whatever the file's size."""
DEFAULT_MAX_FILE_BYTES = 4 << 30
"""The largest file held for its digest check (``maxFileBytes``): the temporary disk it may take."""
CHUNK_BYTES = 64 * 1024

# Matched whole (``fullmatch``): ``$`` would let a trailing newline through.
_EVENT_TYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ORG_ID = re.compile(r"org-[A-Za-z0-9]{1,64}")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A verb is a non-empty string; anything else there is not one."""
    return value if isinstance(value, str) and value.strip() else None


def vendor_name(event_type: str) -> str:
    """The name the API takes for ``event_type`` (an old name becomes the vendor's)."""
    return OLD_NAMES.get(event_type, event_type)


def _usd(record: dict[str, Any]) -> Any:
    """The cost in US dollars a COSTS record states: the sum of its ``billing`` entries whose
    ``unit`` (or ``currency``) is USD, e.g. ``[{"unit": "credits", "amount": 4}, {"unit": "usd",
    "amount": 0.16}]`` -> 0.16. Credits are never taken for dollars: None when no entry is in USD.
    An amount that is not a number is returned as is, so the record is rejected saying so."""
    billing = record.get("billing", _dict(record.get("payload")).get("billing"))
    amounts = [
        entry.get("amount")
        for entry in (billing if isinstance(billing, list) else [])
        if isinstance(entry, dict)
        and str(first_set(entry.get("unit"), entry.get("currency")) or "").strip().lower() == "usd"
    ]
    if not amounts:
        return None
    bad = [a for a in amounts if isinstance(a, bool) or not isinstance(a, int | float)]
    return bad[0] if bad else sum(amounts)


class OpenAIComplianceSource(ReferenceSource):
    """An ``openai_compliance`` source file."""

    ENDPOINT_ENV: ClassVar[str] = "PULLMODE_OPENAI_COMPLIANCE_BASE_URL"
    DEFAULT_ENDPOINT: ClassVar[str] = "https://api.chatgpt.com/v1/compliance"

    adapter: Literal["openai_compliance"]
    workspace_id: str = Field(description="a ChatGPT workspace UUID, or an API Platform organization id 'org-...'")
    event_types: tuple[str, ...] = Field(default=DEFAULT_EVENT_TYPES, description="the log streams to pull")
    max_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES,
        ge=1 << 20,
        le=1 << 40,
        description="the largest log file read when the listing gives its file_sha256 (it is held on temporary "
        "disk until its digest matched)",
    )

    @property
    def scope(self) -> str:
        return "organizations" if self.workspace_id.startswith("org-") else "workspaces"

    def scope_url(self) -> str:
        """``{base}/workspaces/{id}`` or ``{base}/organizations/{org-id}``."""
        return f"{self.endpoint()}/{self.scope}/{self.workspace_id}"

    def watermark_rewind_problem(self) -> str | None:
        return "its cursor is a position per event type (streams), not a watermark"

    @property
    def streams(self) -> tuple[str, ...]:
        """The event types requested, by the vendor's names (an old name becomes the vendor's)."""
        return tuple(dict.fromkeys(vendor_name(t) for t in self.event_types))

    def problems(self) -> list[ConfigProblem]:
        problems: list[ConfigProblem] = []
        if not (_UUID.fullmatch(self.workspace_id) or _ORG_ID.fullmatch(self.workspace_id)):
            problems.append(
                (
                    "workspaceId",
                    "must be a ChatGPT workspace id (a UUID such as f7f33107-5fb9-4ee1-8922-3eae76b5b5a0) or an "
                    "API Platform organization id starting with 'org-'",
                )
            )
        if not self.event_types:
            problems.append(
                ("eventTypes", f"lists no event type; leave it out for the default ({', '.join(DEFAULT_EVENT_TYPES)})")
            )
        seen: set[str] = set()
        for i, event_type in enumerate(self.event_types):
            name = vendor_name(event_type)
            if not _EVENT_TYPE_NAME.fullmatch(event_type):
                hint = difflib.get_close_matches(event_type.upper()[:64], [*EVENT_TYPES, *OLD_NAMES], n=1)
                suggestion = f"; did you mean {vendor_name(hint[0])!r}?" if hint else ""
                problems.append(
                    (
                        f"eventTypes[{i}]",
                        "not an event type name: the vendor's are upper case letters, digits and underscores "
                        f"(AUTH_LOG, CODEX_LOG, ...){suggestion}",
                    )
                )
            elif name in seen:
                problems.append((f"eventTypes[{i}]", f"listed twice (as {name}, the name the API takes)"))
            elif name in ORGANIZATION_ONLY and self.scope == "workspaces":
                problems.append(
                    (
                        f"eventTypes[{i}]",
                        f"{name} exists only at organization scope (organizations/org-.../logs): workspaceId is a "
                        f"workspace id, whose logs have no {name}. Types that need an 'org-' id: "
                        f"{', '.join(ORGANIZATION_ONLY)}; pull them with a source whose workspaceId is the API "
                        "Platform organization id 'org-...', or leave them out",
                    )
                )
            seen.add(name)
        if "api_key" not in self.credentials:
            problems.append(
                ("credentials.api_key", "required: the workspace's Compliance API key (sent as a Bearer token)")
            )
        for key in self.credentials:
            if key != "api_key":
                problems.append((f"credentials.{key}", "openai_compliance takes one credential, api_key"))
        return problems

    def warnings(self) -> list[ConfigProblem]:
        """An old name (kept working) and a type this connector does not know (passed through: the
        vendor adds types)."""
        warnings = super().warnings()
        for i, event_type in enumerate(self.event_types):
            if event_type in OLD_NAMES:
                warnings.append(
                    (
                        f"eventTypes[{i}]",
                        f"{event_type} is deprecated: it is requested as {OLD_NAMES[event_type]}, the name the API "
                        f"takes (its stream's position carries on); write {OLD_NAMES[event_type]}",
                    )
                )
            elif _EVENT_TYPE_NAME.fullmatch(event_type) and event_type not in EVENT_TYPES:
                warnings.append(
                    (
                        f"eventTypes[{i}]",
                        "not an event type this connector knows; it is requested as written and its records "
                        f"are mapped by the general rules (known: {', '.join(EVENT_TYPES)})",
                    )
                )
        return warnings

    def describe(self) -> str:
        return (
            f"Pulls {', '.join(self.streams)} log files of {self.scope} {self.workspace_id} from "
            f"{safe_url(self.endpoint())} (openai_compliance)"
        )

    def extract(self, record: dict[str, Any]) -> dict[str, Any]:
        """One record of any event type: each field from where the record's type keeps it (see the
        mapping table in docs/connectors/openai_compliance.md); a type not known here is read from
        every place in turn, and passes through with what it has."""
        actor = _dict(record.get("actor"))
        payload = _dict(record.get("payload"))
        identity = _dict(payload.get("identity"))
        details = _dict(record.get("event_details"))
        usage = _dict(details.get("token_usage"))
        places = {
            "action_data.action": _dict(record.get("action_data")).get("action"),
            "action": record.get("action"),
            "event_type": record.get("event_type"),
        }
        own = VERB_FIELDS.get(str(record.get("type")), "action_data.action")
        return {
            "source_event_id": first_set(record.get("event_id"), record.get("id")),
            "event_timestamp": first_set(record.get("timestamp"), record.get("created_at")),
            "actor": first_set(
                actor.get("user_email"), identity.get("email"), actor.get("user_id"), identity.get("user_id")
            ),
            "action": first_set(*(_text(places[p]) for p in (own, *_VERB_PLACES)), record.get("type")),
            "target": first_set(details.get("model"), payload.get("model"), payload.get("product")),
            "tokens_input": usage.get("input_tokens"),
            "tokens_output": usage.get("output_tokens"),
            "cost_usd": _usd(record),
        }


class StreamPosition(BaseModel):
    """One stream's position: where its next listing starts, and the files there already read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: str
    done: tuple[str, ...] = ()

    @field_validator("after")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        if zoned_time(value) is None:
            raise ValueError("must be an ISO 8601 timestamp with a zone")
        return value


class OpenAIPosition(Position):
    streams: dict[str, StreamPosition] = Field(default_factory=dict)


@dataclass(frozen=True)
class LogFile:
    id: str
    end: datetime | None
    name: str
    sha256: bytes | None = None
    """The listing's ``file_sha256``, decoded: the download is checked against it."""


@dataclass(frozen=True)
class Listing:
    files: list[LogFile]
    has_more: bool
    last_end_time: str | None
    """None also when the vendor's is in the future (``Puller.not_future``): it does not move a position."""


def sha256_digest(value: str) -> bytes:
    """A ``file_sha256`` as 32 bytes: hex (either case, an optional ``sha256:`` prefix) or base64.
    Raises ValueError for anything else."""
    text = value.strip().removeprefix("sha256:")
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        digest = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise ValueError("neither a hex nor a base64 SHA-256 digest")
    return digest


class _Body:
    """A streamed response body as a binary stream (``read``), counting the bytes read."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = b""
        self.nbytes = 0

    def _fill(self, size: int) -> None:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self.nbytes += len(chunk)
            self._buffer += chunk

    def peek(self, size: int) -> bytes:
        self._fill(size)
        return self._buffer[:size]

    def read(self, size: int = -1) -> bytes:
        self._fill(size)
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


Resume = dict[str, Any]


class OpenAICompliancePuller(Puller):
    config_model = OpenAIComplianceSource
    position_model = OpenAIPosition
    source: OpenAIComplianceSource

    # -- the pull --------------------------------------------------------------------------------

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        position = self.position(start)
        # Every configured stream, plus any the cursor still holds (kept as they are).
        self._state: dict[str, StreamPosition] = self._positions(position)
        first = rfc3339(self.source.start_datetime)
        for event_type in self.source.streams:
            self._state.setdefault(event_type, StreamPosition(after=first))
        initial = self._resume()
        base = self.source.scope_url()
        with self.session(auth=bearer(self.header_credential("api_key"), origin=base)) as http:
            if window is not None:
                fixed = dict(start.position)
                inner = (
                    page
                    for event_type in self.source.streams
                    for page in self._window_stream(http, event_type, window, fixed)
                )
                yield from self._settled(inner, lambda: (fixed, True), initial=fixed)
                return
            drained: dict[str, bool] = {}

            def streams() -> Iterator[Page]:
                for event_type in self.source.streams:
                    drained[event_type] = yield from self._poll_stream(http, event_type)

            yield from self._settled(streams(), lambda: (self._resume(), all(drained.values())), initial=initial)

    def probe(self, start: CursorState) -> ProbeAnswer:
        """Each stream's listing from its ``after`` (one request per stream, stopping at the first
        news): a log file not read yet, or ``has_more`` on a listing that moves the position on, is
        news; "nothing more yet" (an empty listing, or the files already read at the position listed
        again, even with ``has_more``) is not."""
        positions = self._positions(self.position(start))
        first = rfc3339(self.source.start_datetime)
        base = self.source.scope_url()
        with self.session(auth=bearer(self.header_credential("api_key"), origin=base)) as http:
            for event_type in self.source.streams:
                state = positions.get(event_type) or StreamPosition(after=first)
                listing = self._list(http, event_type, state.after, 1)
                if any(f.id not in state.done for f in listing.files):
                    return NEW
                if listing.has_more and self._after_listing(state, listing) != state:
                    return NEW
        return NOTHING_NEW

    @staticmethod
    def _positions(position: OpenAIPosition) -> dict[str, StreamPosition]:
        """The cursor's streams; one kept under an old name is moved to the vendor's name, so the
        renamed stream goes on from where it was."""
        streams = dict(position.streams)
        for old, new in OLD_NAMES.items():
            if old in streams and new not in streams:
                streams[new] = streams.pop(old)
        return streams

    def _resume(self, **replace: StreamPosition) -> Resume:
        """The whole position (every stream), with ``replace`` applied."""
        state = {**self._state, **replace}
        return {
            "streams": {
                name: {"after": s.after, **({"done": list(s.done)} if s.done else {})} for name, s in state.items()
            }
        }

    def _settled(
        self, inner: Iterator[Page], final: Callable[[], tuple[Resume, bool]], *, initial: Resume
    ) -> Iterator[Page]:
        """``inner``'s pages one behind, so the last one can carry the final position and say whether
        everything was drained. A failure still hands on the page already read before it raises."""
        held: Page | None = None
        try:
            while True:
                try:
                    page = next(inner)
                except StopIteration:
                    break
                except Exception as exc:
                    if held is not None:
                        # Not a place to stop: a pull stopping here (at its deadline) would drop the
                        # failure. The deadline reached before a request is no failure: held ends a file.
                        held.boundary = held.boundary and isinstance(exc, DeadlineReached)
                        yield held
                    raise exc
                if held is not None:
                    yield held
                held = page
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()
        resume, drained = final()
        if held is None:
            if resume != initial or not drained:
                # Listings moved on over files already read: nothing to store, but the position moves.
                yield Page([], nbytes=0, location="listings", resume=resume, drained=drained)
            return
        assert held.boundary  # a file's last page: everything before it is read
        held.resume, held.drained = resume, drained
        yield held

    def _poll_stream(self, http: HttpSession, event_type: str) -> Iterator[Page]:
        """One stream from its position; returns whether it was drained (False: maxPagesPerRun)."""
        stalled = False
        for number in self.page_numbers():
            state = self._state[event_type]
            listing = self._list(http, event_type, state.after, number)
            skip = set(state.done)
            fresh = [f for f in listing.files if f.id not in skip]
            end = self._after_listing(state, listing)
            advances = end.after != state.after
            if not self._goes_on(event_type, state.after, listing, fresh=bool(fresh), advances=advances, again=stalled):
                return True  # nothing more yet: the stream is read up to now; its position stays
            stalled = listing.has_more and not advances
            done = list(state.done)
            for i, file in enumerate(fresh):
                done.append(file.id)
                after_file = end if i == len(fresh) - 1 else StreamPosition(after=state.after, done=tuple(done))
                yield from self._file_pages(
                    http,
                    event_type,
                    file,
                    before=self._resume(),
                    after=self._resume(**{event_type: after_file}),
                )
                self._state[event_type] = after_file
            self._state[event_type] = end
            if not listing.has_more:
                return True
            if listing.last_end_time is None:
                self.context.logger.warning(
                    f"{self.source.name}: {event_type}: the listing says has_more but gives no last_end_time; "
                    "the stream is read up to here"
                )
                return True
        return False

    def _goes_on(
        self, event_type: str, after: str, listing: Listing, *, fresh: bool, advances: bool, again: bool
    ) -> bool:
        """Whether a listing from ``after`` goes on, or says "nothing more yet": no file not read
        (``fresh``) and no later position (``advances``): an empty page with no last_end_time, or,
        since ``after`` is inclusive, the files at ``after`` already read, listed again. That is so
        whatever ``has_more`` says: more is being written, none of it is there yet. A listing with
        files not read, ``has_more`` and no later position, right after another such (``again``), is a
        listing loop: the same request answered with other files each time would page forever."""
        if not fresh and not advances:
            return False
        if fresh and not advances and listing.has_more and again:
            raise PullError(
                f"source {self.source.name!r}: {event_type}: listing loop: logs after {after} keep returning files "
                "not read before with has_more true, and the same last_end_time; not pulled on"
            )
        return True

    @staticmethod
    def _after_listing(state: StreamPosition, listing: Listing) -> StreamPosition:
        """The stream's position once every file of ``listing`` (listed from ``state.after``) is read."""
        last = zoned_time(listing.last_end_time)
        before = zoned_time(state.after)
        assert before is not None
        ids = [f.id for f in listing.files]
        if listing.last_end_time is None or last is None or last <= before:
            # The next listing starts at the same place: remember everything read there.
            return StreamPosition(after=state.after, done=tuple(dict.fromkeys([*state.done, *ids])))
        # The listing from last_end_time returns the files ending then (or of unknown end) again.
        again = tuple(f.id for f in listing.files if f.end is None or f.end >= last)
        return StreamPosition(after=listing.last_end_time, done=again)

    def _window_stream(self, http: HttpSession, event_type: str, window: Window, fixed: Resume) -> Iterator[Page]:
        """The files whose time range overlaps ``window``: listed from its start, up to and including
        the first file that ends at or past its end."""
        after = rfc3339(window.start)
        seen: set[str] = set()
        number = 0
        stalled = False
        while True:
            number += 1
            listing = self._list(http, event_type, after, number)
            fresh = [f for f in listing.files if f.id not in seen]
            last, previous = zoned_time(listing.last_end_time), zoned_time(after)
            advances = last is not None and previous is not None and last > previous
            if not self._goes_on(event_type, after, listing, fresh=bool(fresh), advances=advances, again=stalled):
                return  # nothing more yet: the window is read as far as the vendor lists it now
            stalled = listing.has_more and not advances
            for file in fresh:
                seen.add(file.id)
                yield from self._file_pages(http, event_type, file, before=fixed, after=fixed)
                if file.end is not None and file.end >= window.end:
                    return
            if not listing.has_more or last is None or last >= window.end:
                return
            after = listing.last_end_time or after

    # -- requests --------------------------------------------------------------------------------

    def _list(self, http: HttpSession, event_type: str, after: str, number: int) -> Listing:
        what = f"source {self.source.name!r}: {event_type}: listing {number}"
        try:
            response = http.send(
                "GET",
                f"{self.source.scope_url()}/logs",
                what=what,
                params={"event_type": event_type, "limit": str(LIST_LIMIT), "after": after},
                accept=lambda r: self._listing(r, what),
            )
        finally:
            self.requests = http.requests
        self._check(response, what)
        return response.extensions["accepted"]

    def _listing(self, response: httpx.Response, what: str) -> Listing:
        doc = json_body(response, what)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise BadBody("listing has no 'data' array")
        files = []
        for i, entry in enumerate(doc["data"]):
            file_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(file_id, str) or not file_id:
                raise PullError(f"{what}: entry {i + 1} of the listing has no log file id")
            name = entry.get("file_name")
            files.append(
                LogFile(
                    id=file_id,
                    end=zoned_time(entry.get("end_time")),
                    name=name if isinstance(name, str) and name else file_id,
                    sha256=self._digest(entry.get("file_sha256"), f"{what}: entry {i + 1}"),
                )
            )
        if all(f.end is not None for f in files):
            files.sort(key=lambda f: f.end)  # type: ignore[arg-type, return-value]  # every end is set (checked)
        last = doc.get("last_end_time")
        if last is not None and zoned_time(last) is None:
            raise PullError(f"{what}: the listing's last_end_time is not an ISO 8601 timestamp with a zone")
        if last is not None and self.not_future(zoned_time(last)) is None:
            # As the next listing's `after`, it would skip every file written until then, for good.
            self.context.logger.warning(
                f"{what}: the listing's last_end_time {last} is in the future (past the clock allowance); "
                "the stream's position does not move to it"
            )
            last = None
        return Listing(files=files, has_more=doc.get("has_more") is True, last_end_time=last)

    def _digest(self, value: Any, where: str) -> bytes | None:
        """A file entry's ``file_sha256``; one that cannot be read leaves the file unchecked (with a
        warning), rather than stopping the pull over a format this connector did not expect."""
        if value is None:
            return None
        try:
            return sha256_digest(value) if isinstance(value, str) else sha256_digest("")
        except ValueError:
            self.context.logger.warning(
                f"{where}: file_sha256 is neither a hex nor a base64 SHA-256 digest; the file is read unchecked"
            )
            return None

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 300:
            return
        where = self.redact(safe_url(response.request.url))
        redact = self.redact
        if not same_origin(response.request.url, self.source.scope_url()):
            # The signed download URL's host: the API key never goes there, so it is not the key. Its
            # body may echo the signed URL (S3's SignatureDoesNotMatch quotes the signature, the string
            # signed and the URL): each of the URL's query values is redacted like a secret.
            redact = self.redact.plus(value for _, value in response.request.url.params.multi_items())
            hint = "error from the file host (the signed download URL may have expired)"
        else:
            hint = {
                401: "the Compliance API key was rejected (check credentials.api_key)",
                403: f"the API key may not read this {self.source.scope[:-1]}'s logs",
                404: "not found (check workspaceId)",
            }.get(status, "redirect" if status < 400 else "error")
        snippet = self.quote(response.text, redact=redact) if response.content else ""
        raise PullError(f"{what}: HTTP {status} {hint} from {where}" + (f": {snippet}" if snippet else ""))

    def _file_pages(
        self, http: HttpSession, event_type: str, file: LogFile, *, before: Resume, after: Resume
    ) -> Iterator[Page]:
        """One log file as pages of records; only the last page carries ``after`` (the file is read)."""
        url = f"{self.source.scope_url()}/logs/{urllib.parse.quote(file.id, safe='')}"
        label = f"{event_type} file {file.name}"
        what = f"source {self.source.name!r}: {label}"
        records: list[Any] = []
        numbers: list[int] = []
        rejects: list[Reject] = []

        def page(resume: Resume, *, last: bool, nbytes: int = 0) -> Page:
            lines = list(numbers)
            return Page(
                records,
                nbytes=nbytes,
                location=label,
                resume=resume,
                drained=False,
                where=lambda i: f"{label} line {lines[i]}",
                rejects=rejects,
                files=1 if last else 0,
                boundary=last,
            )

        verify = functools.partial(self._verified, file, what) if file.sha256 is not None else None
        try:
            with (
                http.stream("GET", url, what=what, follow_redirects=True, accept=verify) as download,
                download.response.extensions.get("accepted") or contextlib.nullcontext() as verified,
            ):
                self.requests = http.requests
                self._check(download.response, what)
                chunks = download.chunks() if verified is None else iter(lambda: verified.read(CHUNK_BYTES), b"")
                body = _Body(chunks)
                stream: BinaryIO = body  # type: ignore[assignment]  # read() is all the parser uses of it
                if body.peek(2) == b"\x1f\x8b":  # a gzipped file served without Content-Encoding
                    stream = gzip.GzipFile(fileobj=body, mode="rb")
                for number, item in parse_ndjson(stream):
                    if isinstance(item, ParseProblem):
                        rejects.append(Reject(self.source.name, item.reason, item.raw, f"{label} line {number}"))
                        continue
                    records.append(item)
                    numbers.append(number)
                    if len(records) >= RECORDS_PER_PAGE:
                        yield page(before, last=False)
                        records, numbers, rejects = [], [], []
                yield page(after, last=True, nbytes=body.nbytes)
        except UnreadableFile as exc:
            raise PullError(self.redact(f"{what}: cannot read the file: {exc}")) from None
        except httpx.HTTPError as exc:
            raise PullError(
                self.redact(f"{what}: the download broke off: {type(exc).__name__}: {exc}")
                + "; the file is read again by the next pull"
            ) from None
        finally:
            self.requests = http.requests

    def _verified(self, file: LogFile, what: str, download: Download) -> BinaryIO:
        """The whole file, held (in memory, then on disk) until its SHA-256 matched the listing's
        ``file_sha256``, so no record of a damaged download is handed on. A mismatch is a
        :class:`BadBody`: the download is tried again (the one retry policy), then the pull fails.
        A file larger than ``maxFileBytes`` fails the pull at once: the disk it would take is bounded."""
        cap = self.source.max_file_bytes
        with contextlib.ExitStack() as on_failure:
            held = on_failure.enter_context(tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES))
            digest = hashlib.sha256()
            size = 0
            for chunk in download.chunks():
                size += len(chunk)
                if size > cap:
                    raise PullError(
                        self.redact(
                            f"{what}: the file is larger than {cap} bytes (maxFileBytes); a file with a file_sha256 "
                            "is held on temporary disk until its digest matched, so it is not read: raise "
                            "maxFileBytes to read it"
                        )
                    )
                digest.update(chunk)
                held.write(chunk)
            if digest.digest() != file.sha256:
                raise BadBody(f"the file's SHA-256 does not match the listing's file_sha256 ({size} bytes received)")
            held.seek(0)
            on_failure.pop_all()  # matched: the caller reads it, then closes it
        return held  # type: ignore[return-value]  # a SpooledTemporaryFile of bytes: typeshed types it IO[bytes]


register(Adapter("openai_compliance", OpenAIComplianceSource, OpenAICompliancePuller, kind="openai", reads_files=True))
