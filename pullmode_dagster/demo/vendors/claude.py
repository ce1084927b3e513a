"""A fake Anthropic Compliance API, Activity Feed (``GET /v1/compliance/activities``), on loopback.

It follows shared/reference/upstream-apis.md ("Anthropic (Claude) Compliance API"), with injectable faults.
The vendor pages each shape comes from (under platform.claude.com/docs/en/): the query, the page and the
minute of visibility from manage-claude/compliance-activity-feed; activity and actor types from
api/compliance/activities/list; errors and the request-id header from manage-claude/compliance-errors;
compliance_api_accessed and exclude_activity_types[] as upstream-apis.md records them.
Design (what it checks, faults, builders): docs/design/demo.md#fake-anthropic-compliance-api
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..server import LoopbackServer, Request, Response

PATH = "/v1/compliance/activities"
API_VERSION = "2023-06-01"
DEFAULT_LIMIT = 100
MAX_LIMIT = 5000
ORG_ID = "org_01Wv6QeBcDfGhJkLmNpQrSt8"
ORG_UUID = "abcdef01-2345-6789-abcd-ef0123456789"
TIME_FILTERS = ("created_at.gte", "created_at.gt", "created_at.lt", "created_at.lte")
# Repeatable filters in bracket form, one parameter per value (compliance-activity-feed: activity_types[],
# actor_ids[] by user id, organization_ids[]; exclude_activity_types[] among upstream-apis.md's newer filters).
LIST_FILTERS = {"activity_types[]": "type", "actor_ids[]": "actor", "organization_ids[]": "organization_id"}
EXCLUDE_FILTER = "exclude_activity_types[]"
KNOWN_PARAMS = frozenset({"limit", "after_id", "before_id", *TIME_FILTERS, *LIST_FILTERS, EXCLUDE_FILTER})
OWN_ACCESS = "compliance_api_accessed"
"""Recorded for every request to the compliance API (upstream-apis.md: "Every request to the compliance
API itself records a compliance_api_accessed activity")."""
ACCESS_KEY_ID = "apikey_01ComplianceAccessKey0001"
"""The id this fake gives its key, as the actor of the accesses it records."""
SIGN_IN_OUT = ("sso_login_succeeded", "sso_login_failed", "magic_link_login_succeeded", "user_logged_out")
"""Activity types that belong to no organization (``organization_id`` and ``organization_uuid`` null)."""

_ids = itertools.count(1)


def iso(value: datetime) -> str:
    """RFC 3339 in UTC, as the API writes ``created_at``."""
    value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


# -- actors ----------------------------------------------------------------------------------------


def user_actor(email: str, *, user_id: str | None = None, ip: str = "192.0.2.34") -> dict[str, Any]:
    return {
        "type": "user_actor",
        "email_address": email,
        "user_id": user_id or f"user_01{email.split('@')[0][:12]:x<12}",
        "ip_address": ip,
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)",
    }


def api_actor(api_key_id: str) -> dict[str, Any]:
    return {"type": "api_actor", "api_key_id": api_key_id}


def admin_api_key_actor(admin_api_key_id: str) -> dict[str, Any]:
    return {"type": "admin_api_key_actor", "admin_api_key_id": admin_api_key_id}


def unauthenticated_user_actor(email: str) -> dict[str, Any]:
    return {"type": "unauthenticated_user_actor", "unauthenticated_email_address": email}


def anthropic_actor(email: str | None = None) -> dict[str, Any]:
    return {"type": "anthropic_actor", "email_address": email}


def scim_directory_sync_actor(directory_id: str) -> dict[str, Any]:
    return {"type": "scim_directory_sync_actor", "directory_id": directory_id, "directory_name": "Okta"}


def service_account_actor(service_account_id: str) -> dict[str, Any]:
    """api/compliance/activities/list: ``service_account_actor`` carries ``service_account_id``."""
    return {"type": "service_account_actor", "service_account_id": service_account_id}


def federated_identity_actor(issuer: str, subject: str) -> dict[str, Any]:
    """api/compliance/activities/list: ``federated_identity_actor`` carries the token's ``issuer`` and
    ``subject`` (Workload Identity Federation: e.g. a CI job's OIDC token)."""
    return {"type": "federated_identity_actor", "issuer": issuer, "subject": subject}


# -- activities ------------------------------------------------------------------------------------


def activity(
    type: str,
    created_at: datetime,
    actor: dict[str, Any] | None,
    *,
    id: str | None = None,
    organization_id: str | None = ORG_ID,
    **fields: Any,
) -> dict[str, Any]:
    """One activity in the documented shape; ``fields`` are the type's own (``claude_chat_id``, ...)."""
    sign_in_out = type in SIGN_IN_OUT
    return {
        "id": id or f"activity_01{next(_ids):022d}",
        "created_at": iso(created_at),
        "organization_id": None if sign_in_out else organization_id,
        "organization_uuid": None if sign_in_out or organization_id is None else ORG_UUID,
        "actor": actor,
        "type": type,
        **fields,
    }


def mixed_activities(count: int, start: datetime, *, spacing: timedelta = timedelta(minutes=7)) -> list[dict[str, Any]]:
    """``count`` activities from ``start`` on, cycling through actor types and activity types; every
    fifth one shares its ``created_at`` with the one before (ties are broken by id). Ids are
    ``activity_01<i>`` with ``i`` zero-padded, so they sort in creation order."""
    out: list[dict[str, Any]] = []
    when = start
    for i in range(count):
        if i % 5 != 4:
            when = start + spacing * i
        n = f"{i:04d}"
        email = f"user{i % 4}@acme.example"
        kind = i % 6
        if kind == 0:
            made = activity(
                "claude_chat_created",
                when,
                user_actor(email),
                claude_chat_id=f"claude_chat_01{n}",
                claude_project_id=f"claude_proj_01{n}",
            )
        elif kind == 1:
            made = activity(
                "claude_file_uploaded",
                when,
                user_actor(email),
                claude_file_id=f"claude_file_01{n}",
                claude_project_id=f"claude_proj_01{n}",
            )
        elif kind == 2:
            made = activity("api_key_created", when, admin_api_key_actor(f"adminkey_01{n}"), api_key_id=f"apikey_01{n}")
        elif kind == 3:
            made = activity("sso_login_succeeded", when, user_actor(email))
        elif kind == 4:
            made = activity(
                "user_provisioned", when, scim_directory_sync_actor(f"directory_01{n}"), user_id=f"user_01{n}"
            )
        else:
            made = activity(
                "claude_project_viewed", when, api_actor(f"apikey_01{n}"), claude_project_id=f"claude_proj_01{n}"
            )
        made["id"] = f"activity_01{n}"
        out.append(made)
    return out


# -- the API ---------------------------------------------------------------------------------------


def error(
    status: int,
    type: str,
    message: str,
    request_id: str,
    headers: dict[str, str] | None = None,
    *,
    id_in_body: bool = True,
) -> Response:
    """The documented error shape: the ``request-id`` header always (compliance-errors: "Include the
    request-id header value when you escalate to support"), the body's ``request_id`` as
    upstream-apis.md records it unless ``id_in_body`` is off (compliance-errors shows none)."""
    body: dict[str, Any] = {"type": "error", "error": {"type": type, "message": message}}
    if id_in_body:
        body["request_id"] = request_id
    return Response(status, body, headers={"request-id": request_id, **(headers or {})})


class ActivityFeedAPI:
    """The Activity Feed. Call it with a :class:`Request` (a route handler) or run its own server."""

    def __init__(self, api_key: str, *, now: Callable[[], datetime] | None = None):
        self.api_key = api_key
        self.now = now or (lambda: datetime.now(UTC))
        self.activities: list[dict[str, Any]] = []
        self.visible_from: dict[str, datetime] = {}
        self.forbidden = False
        """True: the key lacks the read:compliance_activities scope (403)."""
        self.echo_key = False
        """True: a 401 quotes the key it was given, as a careless server would (a redaction test)."""
        self.faults: list[Callable[[str], Response]] = []
        self.record_accesses = True
        """Every page served records a compliance_api_accessed activity, as the real API does."""
        self.request_id_in_body = True
        """False: an error body without ``request_id`` (compliance-errors shows only the header)."""
        self._request_ids = itertools.count(1)
        self._access_ids = itertools.count(1)
        self.server = LoopbackServer({PATH: self})

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ActivityFeedAPI:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> ActivityFeedAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What ``PULLMODE_CLAUDE_COMPLIANCE_BASE_URL`` is set to."""
        return self.server.base_url

    @property
    def requests(self) -> list[Request]:
        return [r for r in self.server.requests if r.path == PATH]

    # -- data and faults -------------------------------------------------------------------------

    def add(self, *activities: dict[str, Any], visible_from: datetime | None = None) -> None:
        for item in activities:
            self.activities.append(item)
            if visible_from is not None:
                self.visible_from[item["id"]] = visible_from

    def inject_page(
        self, data: list[dict[str, Any]], *, has_more: bool, first_id: str | None, last_id: str | None
    ) -> None:
        """The next request (after the key check) gets this page: e.g. "nothing more yet", an empty
        ``data`` with ``has_more`` true and no ids (the page's fields: compliance-activity-feed)."""
        doc = {"data": data, "has_more": has_more, "first_id": first_id, "last_id": last_id}
        self.faults.append(lambda request_id: Response(200, doc, headers={"request-id": request_id}))

    def accesses(self) -> list[dict[str, Any]]:
        """The compliance_api_accessed activities recorded so far."""
        return [a for a in self.activities if a["type"] == OWN_ACCESS]

    def inject(
        self,
        status: int,
        *,
        retry_after: str | None = None,
        should_retry: bool | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next request (after the key check) gets this answer instead of a page."""
        types = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error", 503: "api_error"}

        def answer(request_id: str) -> Response:
            extra = dict(headers or {})
            if retry_after is not None:
                extra["retry-after"] = retry_after
            if should_retry is not None:
                extra["x-should-retry"] = "true" if should_retry else "false"
            if body is not None:
                return Response(status, body, headers={"Content-Type": "text/html", "request-id": request_id, **extra})
            if 300 <= status < 400:
                return Response(status, b"", headers={"request-id": request_id, **extra})
            message = {429: "Number of requests has exceeded your rate limit", 529: "Overloaded"}.get(
                status, "Internal server error"
            )
            return self._error(status, types.get(status, "api_error"), message, request_id, extra)

        self.faults.append(answer)

    # -- the route -------------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        response = self._answer(request)
        if response.status == 200 and isinstance(response.body, dict) and self.record_accesses:  # a page served
            self._record_access()
        return response

    def _record_access(self) -> None:
        """The compliance_api_accessed activity a served request leaves, queryable like any other.
        Its actor and extra fields are not documented: the key as an api_actor, no organization (as
        for sign-in and sign-out)."""
        n = next(self._access_ids)
        self.add(
            activity(
                OWN_ACCESS, self.now(), api_actor(ACCESS_KEY_ID), id=f"activity_02access{n:016d}", organization_id=None
            )
        )

    def _error(
        self, status: int, type: str, message: str, request_id: str, headers: dict[str, str] | None = None
    ) -> Response:
        return error(status, type, message, request_id, headers, id_in_body=self.request_id_in_body)

    def _answer(self, request: Request) -> Response:
        request_id = f"req_011CV{next(self._request_ids):018d}"
        presented = request.header("x-api-key")
        if presented != self.api_key:
            shown = f": {presented}" if self.echo_key and presented else ""
            return self._error(401, "authentication_error", f"invalid x-api-key{shown}", request_id)
        if self.forbidden:
            return self._error(
                403,
                "permission_error",
                "This API key does not have the read:compliance_activities scope",
                request_id,
            )
        version = request.header("anthropic-version")
        if version is None:
            return self._error(400, "invalid_request_error", "anthropic-version: header is required", request_id)
        if version != API_VERSION:
            return self._error(
                400, "invalid_request_error", f"anthropic-version: unknown version {version!r}", request_id
            )
        if self.faults:
            return self.faults.pop(0)(request_id)
        return self._list(request, request_id)

    def _list(self, request: Request, request_id: str) -> Response:
        def bad(message: str) -> Response:
            return self._error(400, "invalid_request_error", message, request_id)

        unknown = sorted(set(request.query) - KNOWN_PARAMS)
        if unknown:
            return bad(f"{unknown[0]}: unknown query parameter")
        try:
            limit = int(request.arg("limit") or DEFAULT_LIMIT)
        except ValueError:
            return bad("limit: must be an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return bad(f"limit: must be between 1 and {MAX_LIMIT}")
        after_id, before_id = request.arg("after_id"), request.arg("before_id")
        if after_id and before_id:
            return bad("after_id and before_id cannot both be set")
        bounds: dict[str, datetime] = {}
        for name in TIME_FILTERS:
            text = request.arg(name)
            if text is None:
                continue
            parsed = _parse_time(text)
            if parsed is None:
                return bad(f"{name}: invalid RFC 3339 timestamp")
            bounds[name] = parsed

        now = self.now()
        visible = [a for a in self.activities if self.visible_from.get(a["id"], now) <= now]
        by_id = {a["id"]: a for a in visible}
        cursor_id = after_id or before_id
        if cursor_id and cursor_id not in by_id:
            return bad(f"{'after_id' if after_id else 'before_id'}: no activity with id {cursor_id!r}")

        def key(a: dict[str, Any]) -> tuple[datetime, str]:
            return (_parse_time(a["created_at"]) or now, a["id"])

        def selected(a: dict[str, Any]) -> bool:
            when = key(a)[0]
            if "created_at.gte" in bounds and when < bounds["created_at.gte"]:
                return False
            if "created_at.gt" in bounds and when <= bounds["created_at.gt"]:
                return False
            if "created_at.lt" in bounds and when >= bounds["created_at.lt"]:
                return False
            if "created_at.lte" in bounds and when > bounds["created_at.lte"]:
                return False
            if a["type"] in request.query.get(EXCLUDE_FILTER, ()):
                return False
            for param, field in LIST_FILTERS.items():
                wanted = request.query.get(param)
                if wanted is None:
                    continue
                value = (a.get("actor") or {}).get("user_id") if field == "actor" else a.get(field)
                if value not in wanted:
                    return False
            return True

        newest_first = sorted((a for a in visible if selected(a)), key=key, reverse=True)
        if after_id:
            pivot = key(by_id[after_id])
            older = [a for a in newest_first if key(a) < pivot]
            page, has_more = older[:limit], len(older) > limit
        elif before_id:
            pivot = key(by_id[before_id])
            newer = [a for a in newest_first if key(a) > pivot]
            # The activities right after the cursor (the oldest of the newer ones), newest first.
            page, has_more = newer[-limit:], len(newer) > limit
        else:
            page, has_more = newest_first[:limit], len(newest_first) > limit
        return Response(
            200,
            {
                "data": page,
                "has_more": has_more,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            },
            headers={"request-id": request_id},
        )
