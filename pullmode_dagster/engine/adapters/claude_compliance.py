"""``claude_compliance``: the Anthropic Compliance API's Activity Feed (``GET /v1/compliance/activities``).

A backfill pages older with ``after_id``, then incremental pulls page newer with ``before_id`` (every page
a checkpoint), reading only settled activities (``settleSeconds``) and, by default, not this connector's
own ``compliance_api_accessed`` activities. Position: ``{"before_id"}`` or a backfill's bounds.
Design: docs/connectors/claude_compliance.md#design-notes
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator, model_validator

from ..cursor import CursorState
from ..declare.models import ConfigProblem
from ..errors import PullError
from ..fetch.auth import HeaderAuth
from ..fetch.session import BadBody, HttpSession, json_body, safe_url
from .base import NEW, Page, Position, ProbeAnswer, Puller, Window
from .reference import ReferenceSource, capped, rfc3339, zoned_time
from .registry import Adapter, register

ACTIVITIES_PATH = "/v1/compliance/activities"
API_VERSION = "2023-06-01"
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
VISIBLE_WITHIN = timedelta(minutes=1)
"""The vendor's guarantee: an activity is queryable within a minute of occurring (compliance-activity-feed)."""
DEFAULT_SETTLE_SECONDS = 300
"""Only activities older than this are read: the vendor's minute plus headroom for an activity that
shows up later than promised and for a host clock running ahead of Anthropic's."""
BACKOFF_MAX_SECONDS = 60.0
"""The longest backoff between retries the vendor recommends (used when the deployment sets none)."""
OWN_ACCESS = "compliance_api_accessed"
"""The activity the API records for every request to it, this connector's own included."""

_ACTIVITY_TYPE = re.compile(r"[a-z][a-z0-9_]{0,127}")
_TYPE_SHAPE = (
    "not an activity type name: lowercase words joined by '_', such as claude_chat_created or sso_login_succeeded"
)


@dataclass(frozen=True)
class ListFilter:
    """One of the API's repeatable filters, as a source field."""

    attr: str
    field: str
    param: str
    pattern: re.Pattern[str]
    """What a whole value matches (``fullmatch``: ``$`` would let a trailing newline through)."""
    shape: str
    """What is wrong with a value that does not match ``pattern``."""
    empty: str
    """What an empty list is told (excludeActivityTypes may be empty: it then leaves nothing out)."""


FILTERS = (
    ListFilter(
        "activity_types",
        "activityTypes",
        "activity_types[]",
        _ACTIVITY_TYPE,
        _TYPE_SHAPE,
        "lists no activity type; leave it out to pull every type",
    ),
    ListFilter(
        "exclude_activity_types",
        "excludeActivityTypes",
        "exclude_activity_types[]",
        _ACTIVITY_TYPE,
        _TYPE_SHAPE,
        "",
    ),
    ListFilter(
        "organization_ids",
        "organizationIds",
        "organization_ids[]",
        re.compile(r"org_[A-Za-z0-9_-]{1,124}"),
        "not an organization id: the tagged id an activity's organization_id holds, such as "
        "org_01Wv6QeBcDfGhJkLmNpQrSt8 (not the organization_uuid, not a name)",
        "lists no organization; leave it out to pull every organization of the key's tenant",
    ),
    ListFilter(
        "actor_ids",
        "actorIds",
        "actor_ids[]",
        re.compile(r"user_[A-Za-z0-9_-]{1,123}"),
        "not a user id: the API filters actors by the user_id of a user actor, such as user_01TuVwXyZaBcDeFgH2JkLmN4",
        "lists no actor; leave it out to pull every actor's activities",
    ),
)
"""The filters, in the bracket form the API documents (compliance-activity-feed: activity_types[],
actor_ids[], organization_ids[]; exclude_activity_types[] is one of the newer filters upstream-apis.md lists)."""

ACTOR_FIELDS: dict[str, tuple[str, ...]] = {
    "user_actor": ("email_address", "user_id"),
    "api_actor": ("api_key_id",),
    "admin_api_key_actor": ("admin_api_key_id",),
    "unauthenticated_user_actor": ("unauthenticated_email_address",),
    "scim_directory_sync_actor": ("directory_id",),
    "anthropic_actor": ("email_address",),
    "service_account_actor": ("service_account_id",),
    "federated_identity_actor": (),  # issuer and subject together: federated_identity()
}
"""Who acted, by ``actor.type``: the first of these fields that is set."""
OTHER_ACTOR_FIELDS = (
    "email_address",
    "unauthenticated_email_address",
    "user_id",
    "api_key_id",
    "admin_api_key_id",
    "directory_id",
    "service_account_id",
    "id",
)
"""An actor type this connector does not know: the first of these that is set, else its type."""
TARGET_FALLBACKS = ("claude_file_id", "claude_chat_id", "claude_project_id")
"""The target when no ``<subject>_id`` field matches the activity type's subject."""


def _now() -> datetime:
    """The clock the settle margin is measured on (a seam for tests)."""
    return datetime.now(UTC)


def _set(value: Any) -> bool:
    return value is not None and value != ""


def _scalar(value: Any) -> Any:
    """A value fit for a text column: a string or a number, else None."""
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) and _set(value) else None


class ClaudeComplianceSource(ReferenceSource):
    """A ``claude_compliance`` source file."""

    ENDPOINT_ENV: ClassVar[str] = "PULLMODE_CLAUDE_COMPLIANCE_BASE_URL"
    DEFAULT_ENDPOINT: ClassVar[str] = "https://api.anthropic.com"

    adapter: Literal["claude_compliance"]
    activity_types: tuple[str, ...] | None = Field(
        default=None, description="only these activity types (activity_types[]); default: every type"
    )
    exclude_activity_types: tuple[str, ...] | None = Field(
        default=None,
        description=f"leave these activity types out (exclude_activity_types[]); default: [{OWN_ACCESS}] "
        "unless activityTypes is set; [] leaves nothing out",
    )
    organization_ids: tuple[str, ...] | None = Field(
        default=None, description="only these organizations, org_... (organization_ids[]); default: every one"
    )
    actor_ids: tuple[str, ...] | None = Field(
        default=None, description="only these users' activities, user_... (actor_ids[]); default: every actor"
    )
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="limit per request")
    settle_seconds: int = Field(
        default=DEFAULT_SETTLE_SECONDS,
        ge=0,
        le=86_400,
        description="read only activities at least this old (the vendor makes them queryable within 60 s)",
    )

    def activities_url(self) -> str:
        return f"{self.endpoint()}{ACTIVITIES_PATH}"

    def excluded_types(self) -> tuple[str, ...]:
        """What ``exclude_activity_types[]`` carries: the field as set; unset, this connector's own
        accesses (every request records one, so a poll would read the accesses of the polls before
        it and the source would never be quiet), unless ``activityTypes`` already picks the types."""
        if self.exclude_activity_types is not None:
            return self.exclude_activity_types
        return () if self.activity_types else (OWN_ACCESS,)

    def filter_params(self) -> dict[str, list[str]]:
        """The filters every request carries, in the API's bracket form (one parameter per value)."""
        values = {spec.param: getattr(self, spec.attr) for spec in FILTERS}
        values["exclude_activity_types[]"] = self.excluded_types()
        return {param: list(v) for param, v in values.items() if v}

    def reads_own_accesses(self) -> bool:
        """Whether this source reads ``compliance_api_accessed``, its own requests' trace."""
        if self.activity_types:
            return OWN_ACCESS in self.activity_types
        return OWN_ACCESS not in self.excluded_types()

    def problems(self) -> list[ConfigProblem]:
        problems: list[ConfigProblem] = []
        for spec in FILTERS:
            values: tuple[str, ...] | None = getattr(self, spec.attr)
            if values is not None and not values and spec.empty:
                problems.append((spec.field, spec.empty))
            seen: set[str] = set()
            for i, value in enumerate(values or ()):
                if not spec.pattern.fullmatch(value):
                    problems.append((f"{spec.field}[{i}]", spec.shape))
                elif value in seen:
                    problems.append((f"{spec.field}[{i}]", "listed twice"))
                seen.add(value)
        if self.activity_types and self.exclude_activity_types:
            problems.append(
                (
                    "excludeActivityTypes",
                    "does not go with activityTypes: activityTypes names the only types read, so there is "
                    f"nothing to leave out (and {OWN_ACCESS} is read only if activityTypes lists it)",
                )
            )
        if self.settle_seconds < VISIBLE_WITHIN.total_seconds():
            problems.append(
                (
                    "settleSeconds",
                    "must be at least 60: Anthropic makes an activity queryable within a minute of occurring, so "
                    "reading closer to now moves the cursor past activities not shown yet, skipped for good",
                )
            )
        if "api_key" not in self.credentials:
            problems.append(
                (
                    "credentials.api_key",
                    "required: a Compliance Access Key (sk-ant-api01-...) or an Admin API key (sk-ant-admin01-...) "
                    "with the read:compliance_activities scope, sent as x-api-key",
                )
            )
        for key in self.credentials:
            if key != "api_key":
                problems.append((f"credentials.{key}", "claude_compliance takes one credential, api_key"))
        return problems

    def warnings(self) -> list[ConfigProblem]:
        warnings = super().warnings()
        if self.reads_own_accesses():
            # excludeActivityTypes does not go with activityTypes (a problem), so each field gets its own way out.
            field, way_out = (
                ("activityTypes", f"remove {OWN_ACCESS} from activityTypes")
                if self.activity_types
                else ("excludeActivityTypes", f"leave excludeActivityTypes out, or list {OWN_ACCESS} in it,")
            )
            warnings.append(
                (
                    field,
                    f"{OWN_ACCESS} is read: the API records one for every request to it, this connector's too, "
                    "so each poll reads the accesses of the polls before it and the source is never quiet "
                    f"({way_out} to leave them out)",
                )
            )
        return warnings

    def describe(self) -> str:
        if self.activity_types:
            types = f"{len(self.activity_types)} activity type(s)"
        else:
            excluded = self.excluded_types()
            types = f"every activity type but {', '.join(excluded)}" if excluded else "every activity type"
        scope = [
            f"{len(v)} {label}(s)"
            for v, label in ((self.organization_ids, "organization"), (self.actor_ids, "actor"))
            if v
        ]
        where = f", {' and '.join(scope)}" if scope else ""
        return f"Pulls the Activity Feed ({types}{where}) from {safe_url(self.activities_url())} (claude_compliance)"

    def extract(self, record: dict[str, Any]) -> dict[str, Any]:
        """id, created_at and type as they are; the actor by ``actor.type``; the target from the
        activity's own fields. Unknown activity and actor types pass through."""
        return {
            "source_event_id": record.get("id"),
            "event_timestamp": record.get("created_at"),
            "actor": capped(actor_of(record.get("actor"))),
            "action": _scalar(record.get("type")),
            "target": target_of(record),
        }


def actor_of(actor: Any) -> Any:
    """``user_actor`` -> email (else user id), ``api_actor`` -> API key id, ``admin_api_key_actor`` ->
    admin key id, ``unauthenticated_user_actor`` -> the email tried, ``scim_directory_sync_actor`` ->
    directory id, ``anthropic_actor`` -> email, else ``anthropic``, ``service_account_actor`` ->
    service account id, ``federated_identity_actor`` -> ``issuer|subject`` (:func:`federated_identity`);
    another type -> its first identifying field, else the type itself. The record's extract caps what
    this returns (``capped``)."""
    if not isinstance(actor, dict):
        return None
    kind = actor.get("type") if isinstance(actor.get("type"), str) else None
    if kind == "federated_identity_actor":
        return federated_identity(actor)
    known = kind in ACTOR_FIELDS
    fields = ACTOR_FIELDS[kind] if kind is not None and known else OTHER_ACTOR_FIELDS
    found = next((v for f in fields if (v := _scalar(actor.get(f))) is not None), None)
    if found is not None:
        return found
    if kind == "anthropic_actor":
        return "anthropic"
    return None if known else _scalar(kind)


def federated_identity(actor: dict[str, Any]) -> str | None:
    """``issuer|subject``: an OIDC subject is unique only within its issuer (two identity providers
    may both have a ``repo:acme/app``), so the pair is the identity. The first ``|`` always ends the
    issuer: one inside it is written ``%7C``, as a URL writes it (an issuer is a URL, where ``|`` is
    valid only percent-encoded, so this is the same issuer), while the subject, full of ``:`` and
    ``/``, is kept as it is. ``https://a|b`` + ``c`` -> ``https://a%7Cb|c``; ``https://a`` + ``b|c`` ->
    ``https://a|b|c``. A part that is missing is empty (``|repo:acme/app``); neither: None."""
    issuer, subject = _scalar(actor.get("issuer")), _scalar(actor.get("subject"))
    if issuer is None and subject is None:
        return None
    written = "" if issuer is None else str(issuer).replace("|", "%7C")
    return f"{written}|{'' if subject is None else subject}"


def target_of(record: dict[str, Any]) -> Any:
    """What the activity is about: the ``<subject>_id`` field named by its type's subject, longest
    first (``claude_chat_created`` -> ``claude_chat_id``, ``api_key_created`` -> ``api_key_id``, the key
    created, not the actor's), else a Claude file, chat or project id it carries, else None."""
    kind = record.get("type")
    if isinstance(kind, str):
        words = kind.split("_")
        for n in range(len(words) - 1, 0, -1):
            value = _scalar(record.get("_".join(words[:n]) + "_id"))
            if value is not None:
                return value
    return next((v for f in TARGET_FALLBACKS if (v := _scalar(record.get(f))) is not None), None)


class ClaudePosition(Position):
    before_id: str | None = None
    """Incremental: the newest activity read; the next pull asks for the activities after it."""
    since: str | None = None
    """The lower bound (``created_at.gte``) of the next or unfinished backfill."""
    until: str | None = None
    """The upper bound (``created_at.lt``) of an unfinished backfill."""
    after_id: str | None = None
    """The next (older) page of an unfinished backfill."""
    newest_id: str | None = None
    """The newest activity of an unfinished backfill: the cursor once it drains."""

    @field_validator("since", "until")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is not None and zoned_time(value) is None:
            raise ValueError("must be an RFC 3339 timestamp with a zone")
        return value

    @field_validator("before_id", "after_id", "newest_id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClaudePosition:
        if self.before_id is not None and any(
            v is not None for v in (self.since, self.until, self.after_id, self.newest_id)
        ):
            raise ValueError("before_id (incremental) does not go with since, until, after_id or newest_id (backfill)")
        if self.after_id is not None and (self.since is None or self.until is None):
            raise ValueError("after_id (an unfinished backfill) needs its since and until")
        return self


@dataclass(frozen=True)
class Listing:
    records: list[Any]
    has_more: bool
    first_id: str | None
    last_id: str | None
    nbytes: int

    @property
    def not_yet(self) -> bool:
        """An empty page that says ``has_more`` but names no cursor (``first_id``/``last_id`` null):
        nothing more yet. The pull ends there, cleanly; the next one asks again from the same place."""
        return self.has_more and not self.records and self.first_id is None and self.last_id is None


class ClaudeCompliancePuller(Puller):
    config_model = ClaudeComplianceSource
    position_model = ClaudePosition
    source: ClaudeComplianceSource
    BACKOFF_MAX_SECONDS = BACKOFF_MAX_SECONDS
    REQUEST_ID_HEADER = "request-id"

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        position = self.position(start)
        url = self.source.activities_url()
        with self.session(auth=HeaderAuth({"x-api-key": self.header_credential("api_key")}, origin=url)) as http:
            if window is not None:
                yield from self._window(http, window, fixed=dict(start.position))
            elif position.before_id is not None:
                yield from self._incremental(http, position.before_id)
            else:
                yield from self._backfill(http, position, start)

    def probe(self, start: CursorState) -> ProbeAnswer:
        """A ``limit=1`` page of what the run would ask first (activities after ``before_id``, or the
        newest of a backfill's range); an unfinished backfill is news without asking."""
        if self.position(start).after_id is not None:
            return NEW
        return self.first_page_probe(start, page_size=1)

    # -- the three ways through the feed ----------------------------------------------------------

    def _backfill(self, http: HttpSession, position: ClaudePosition, start: CursorState) -> Iterator[Page]:
        """Newest first from ``until`` down to ``since``; the newest id becomes the cursor at the end."""
        after, newest = position.after_id, position.newest_id
        if after is not None:
            since, until = position.since, position.until
        else:
            since = position.since or start.watermark or rfc3339(self.source.start_datetime)
            until = rfc3339(self._settled())
        lower, upper = zoned_time(since), zoned_time(until)
        assert since is not None and until is not None and lower is not None and upper is not None
        if lower >= upper:
            return  # nothing has settled since then yet
        seen = {after} if after is not None else set()
        for number in self.page_numbers():
            location = f"backfill page {number}"
            params = {"created_at.gte": since, "created_at.lt": until, **self._common()}
            if after is not None:
                params["after_id"] = after
            listing = self._list(http, params, location)
            if listing.not_yet:
                # Where the backfill stands: one that read nothing yet starts there again; one under way
                # keeps its page and is not drained (its watermark waits for the end).
                here = {"since": since, "until": until, "after_id": after, "newest_id": newest}
                yield self._not_yet(listing, location, here if after else {"since": since}, drained=after is None)
                return
            if newest is None:
                newest = listing.first_id
            if not listing.has_more:
                done = {"before_id": newest} if newest is not None else {"since": until}
                yield self._page(listing, location, done, drained=True)
                return
            after = self._next(listing.last_id, seen, "last_id", location)
            resume = {"since": since, "until": until, "after_id": after, "newest_id": newest}
            yield self._page(listing, location, resume, drained=False)

    def _incremental(self, http: HttpSession, cursor: str) -> Iterator[Page]:
        """The vendor's cursor-driven pattern: ``before_id=<cursor>``, cursor = ``first_id``."""
        seen = {cursor}
        for number in self.page_numbers():
            location = f"page {number}"
            params = {"before_id": cursor, "created_at.lt": rfc3339(self._settled()), **self._common()}
            listing = self._list(http, params, location)
            if listing.not_yet:
                yield self._not_yet(listing, location, {"before_id": cursor}, drained=True)
                return
            if listing.records or listing.has_more:
                cursor = self._next(listing.first_id, seen, "first_id", location)
            yield self._page(listing, location, {"before_id": cursor}, drained=not listing.has_more)
            if not listing.has_more:
                return

    def _window(self, http: HttpSession, window: Window, fixed: dict[str, Any]) -> Iterator[Page]:
        """Every activity of the window (its end capped at the settle margin), older page by page."""
        end = min(window.end, self._settled())
        if end <= window.start:
            return
        after: str | None = None
        seen: set[str] = set()
        number = 0
        while True:
            number += 1
            location = f"window page {number}"
            params = {"created_at.gte": rfc3339(window.start), "created_at.lt": rfc3339(end), **self._common()}
            if after is not None:
                params["after_id"] = after
            listing = self._list(http, params, location)
            if listing.not_yet:
                yield self._not_yet(listing, location, fixed, drained=False)
                return
            yield self._page(listing, location, fixed, drained=not listing.has_more)
            if not listing.has_more:
                return
            after = self._next(listing.last_id, seen, "last_id", location)

    # -- pieces ----------------------------------------------------------------------------------

    def _settled(self) -> datetime:
        """The end of the settled past: ``settleSeconds`` ago, in whole seconds."""
        return (_now() - timedelta(seconds=self.source.settle_seconds)).replace(microsecond=0)

    def _common(self) -> dict[str, Any]:
        return {"limit": str(self.source.page_size), **self.source.filter_params()}

    def _not_yet(self, listing: Listing, location: str, resume: dict[str, Any], *, drained: bool) -> Page:
        """The last page of a pull the API answered with "nothing more yet": no records, the position
        unchanged. The head of the feed may say so any time; a backfill or a window left unfinished
        this way (its range is settled) is worth a line in the log."""
        if not drained:
            self.context.logger.warning(
                f"source {self.source.name!r}: {location}: the API says has_more but returns no activities and no "
                "cursor (nothing more yet); the pull stops here and the next one asks again"
            )
        return self._page(listing, location, resume, drained=drained)

    def _next(self, value: str | None, seen: set[str], field: str, location: str) -> str:
        """The cursor for the next request, added to ``seen`` (those this pull requested); a missing or
        repeated one would page forever (no page cap bounds a pull unless maxPagesPerRun is set)."""
        what = f"source {self.source.name!r}: {location}"
        if value is None:
            raise PullError(f"{what}: the response has more activities (has_more) but no {field} to page on")
        if value in seen:
            raise PullError(f"{what}: pagination loop: {field} is a cursor already requested in this pull ({value})")
        seen.add(value)
        return value

    @staticmethod
    def _page(listing: Listing, location: str, resume: dict[str, Any], *, drained: bool) -> Page:
        return Page(listing.records, nbytes=listing.nbytes, location=location, resume=resume, drained=drained)

    def _list(self, http: HttpSession, params: dict[str, Any], location: str) -> Listing:
        what = f"source {self.source.name!r}: {location}"
        try:
            response = http.send(
                "GET",
                self.source.activities_url(),
                what=what,
                headers={"anthropic-version": API_VERSION, "Accept": "application/json"},
                params=params,
                accept=lambda r: self._listing(r, what),
            )
        finally:
            self.requests = http.requests
        self._check(response, what, params, http)
        return response.extensions["accepted"]

    @staticmethod
    def _listing(response: httpx.Response, what: str) -> Listing:
        """The documented page; anything else under 200 (a proxy's HTML page, a body cut short) is
        a BadBody, retried like a 5xx."""
        doc = json_body(response, what)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise BadBody("body has no 'data' array")
        if not isinstance(doc.get("has_more"), bool):
            raise BadBody("body has no boolean 'has_more'")
        data: list[Any] = doc["data"]

        def ident(field: str, record: Any) -> str | None:
            value = doc.get(field)
            if value is None and isinstance(record, dict):
                value = record.get("id")  # the page's own ids, should the field be left out
            return value if isinstance(value, str) and value else None

        return Listing(
            records=data,
            has_more=doc["has_more"],
            first_id=ident("first_id", data[0] if data else None),
            last_id=ident("last_id", data[-1] if data else None),
            nbytes=len(response.content),
        )

    def _check(self, response: httpx.Response, what: str, params: dict[str, Any], http: HttpSession) -> None:
        status = response.status_code
        if status < 300:
            return
        where = self.redact(safe_url(response.request.url))
        # One line each, control characters out, redacted whole before it is shortened (Puller.quote).
        kind, message, request_id = (
            self.quote(text, limit) for text, limit in zip(_error_fields(response), (64, 300, 64), strict=True)
        )
        hint = {
            400: "the API refused the request",
            401: "the API key was rejected (check credentials.api_key)",
            403: "the API key may not read the Activity Feed (it needs the read:compliance_activities scope)",
            404: "not found (is the Compliance API enabled for the organization?)",
        }.get(status, "redirect (not followed)" if status < 400 else "error")
        if status >= 500 and response.headers.get("x-should-retry", "").lower() == "false":
            hint += " (x-should-retry: false, not retried)"
        detail = f"{kind}: {message}" if kind else message
        text = f"{what}: HTTP {status} {hint} from {where}" + (f": {detail}" if detail else "")
        # The request-id response header is what Anthropic support asks for (compliance-errors); the
        # body's request_id where a proxy dropped the header.
        text += http.request_id(response) or (f" (request-id {request_id})" if request_id else "")
        if status == 400 and ("after_id" in params or "before_id" in params) and "_id" in message:
            text += "; if the stored cursor names an activity the API no longer knows, rewind the cursor"
        raise PullError(self.redact(" ".join(text.split())))


def _error_fields(response: httpx.Response) -> tuple[str, str, str]:
    """(error type, message, the body's request_id) of the documented error shape, else ("", the body,
    ""); whole (the caller redacts, then shortens)."""
    try:
        doc = json.loads(response.content) if response.content else None
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict) and isinstance(error := doc.get("error"), dict):
        kind = error.get("type") if isinstance(error.get("type"), str) else ""
        message = error.get("message") if isinstance(error.get("message"), str) else ""
        request_id = doc.get("request_id") if isinstance(doc.get("request_id"), str) else ""
        return kind, message, request_id
    snippet = " ".join(response.text.split()) if response.content else ""
    return "", snippet, ""


register(Adapter("claude_compliance", ClaudeComplianceSource, ClaudeCompliancePuller, kind="anthropic"))
