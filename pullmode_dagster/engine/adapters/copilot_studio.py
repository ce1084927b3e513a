"""``copilot_studio``: Microsoft Copilot Studio conversation transcripts, read from Dataverse.

Reads ``conversationtranscripts`` with the Dataverse Web API (OAuth 2.0 client credentials), ordered by
``createdon asc, conversationtranscriptid asc`` (a unique order, so paging neither skips nor repeats
rows that share a second), following ``@odata.nextLink`` (position ``{"next_link"}``); a drained pull
resumes at ``createdon ge <watermark>``. Optional: only some agents (``botIds``, filtered by the
server), no maker test chats (``excludeTestChats``, left out here).
Design: docs/connectors/copilot_studio.md#design-notes
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from ..cursor import CursorState
from ..declare.models import ConfigProblem
from ..errors import PullError
from ..events.rules import parse_timestamp
from ..fetch.auth import ClientCredentials
from ..fetch.session import BadBody, json_body, safe_url, same_origin
from .base import NEW, Page, Position, ProbeAnswer, Puller, Window
from .reference import ReferenceSource, first_set, zoned_time
from .registry import Adapter, register

API_PATH = "/api/data/v9.2/conversationtranscripts"
ORDER_BY = "createdon asc,conversationtranscriptid asc"
"""Dataverse pages with a cookie holding the last row's ordering values; ``createdon`` alone (kept to
the second) is not unique, so the primary key breaks ties (Microsoft Learn, "Paging behaviors and
ordering": proper page ordering requires unique values)."""
BOT_LOOKUP = "_bot_conversationtranscriptid_value"
"""The transcript's agent: the Web API property of its ``bot_conversationtranscriptid`` lookup."""
ACTION = "conversation_transcript"
"""The normalized ``action`` of every transcript: one row is one whole conversation."""

DEFAULT_PAGE_SIZE = 100
"""Transcripts per page (``Prefer: odata.maxpagesize``). A transcript carries its whole conversation
(tens to hundreds of KB), so 100 keeps a page far below ``maxResponseBytes``; Dataverse allows 5000."""
MAX_PAGE_SIZE = 5000

CLOUD_AUTHORITIES = {
    "public": "login.microsoftonline.com",
    # GCC (moderate) tenants live in the commercial Entra ID: same authority as public.
    "usgov": "login.microsoftonline.com",
    "usgovhigh": "login.microsoftonline.us",
    "dod": "login.microsoftonline.us",
    "china": "login.partner.microsoftonline.cn",
}
"""The Microsoft identity platform authority of each cloud (national clouds documentation)."""

Cloud = Literal["public", "usgov", "usgovhigh", "dod", "china"]

_ENVIRONMENT_DOMAINS = (
    (".microsoftdynamics.us", "login.microsoftonline.us", "a US Government GCC High", "usgovhigh"),
    (".appsplatform.us", "login.microsoftonline.us", "a US Government DoD", "dod"),
    (".dynamics.cn", "login.partner.microsoftonline.cn", "a China (21Vianet)", "china"),
    (".dynamics.com", "login.microsoftonline.com", "a commercial or GCC", "public (or usgov for GCC)"),
)
"""Dataverse domains and the authority their tenants sign in at: a mismatch with ``cloud`` is warned."""

CREDENTIALS = {
    "tenant_id": "the Entra tenant id (a GUID) or its domain, e.g. contoso.onmicrosoft.com",
    "client_id": "the application (client) id of the Entra app registration",
    "client_secret": "a client secret of that app registration (its Value, not its Secret ID)",
}

AADSTS_HINTS: dict[int, tuple[str | None, str]] = {
    7000215: (
        "credentials.client_secret",
        "the client secret is not valid for this app (enter the secret's Value, not its Secret ID)",
    ),
    7000222: ("credentials.client_secret", "the client secret has expired; create a new one in the app registration"),
    7000218: ("credentials.client_secret", "no client secret reached the token endpoint"),
    700016: (
        "credentials.client_id",
        "no application with this client id in the tenant (check client_id, and that "
        "tenant_id is the tenant the app is registered in)",
    ),
    7000112: ("credentials.client_id", "the application is disabled in the tenant"),
    90002: ("credentials.tenant_id", "the tenant was not found{cloud}"),
    900023: ("credentials.tenant_id", "not a valid tenant id (a GUID) or tenant domain name"),
    500011: ("environmentUrl", "the tenant has no resource by this environment URL{cloud}"),
    1002012: ("environmentUrl", "the scope built from environmentUrl is not valid"),
    70011: ("environmentUrl", "the scope built from environmentUrl is not valid"),
    53003: (None, "the token request was blocked by a Conditional Access policy of the tenant"),
}
"""What an AADSTS code says about the source's entries: the field at fault and a hint."""

_AADSTS = re.compile(r"AADSTS(\d+)")
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
"""A whole GUID (``fullmatch``: ``$`` would let a trailing newline through)."""


_HOST = re.compile(r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
"""A DNS host name as httpx leaves it (lower case, IDNA-encoded), matched whole (``fullmatch``)."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _environment_url_problem(value: str) -> str | None:
    """Why ``value`` is not a Dataverse environment URL, or None. Never quotes the value."""
    example = "such as https://contoso.crm.dynamics.com"
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        return f"must be the environment's URL, {example}"
    if url.scheme not in ("http", "https") or not url.host:
        return f"must be an absolute https:// URL, {example}"
    if not (_HOST.fullmatch(url.host) or _is_ip(url.host)) or (url.port is not None and not 0 < url.port < 65536):
        return f"must be the environment's URL, {example}: its host or port is not valid"
    if url.scheme == "http" and not _is_loopback(url.host):
        return "must be https:// (plain http is accepted only on a loopback host, for tests)"
    if url.userinfo:
        return "must not hold a user name or password"
    if url.query or url.fragment:
        return f"must not have a query or a fragment; enter the environment's root URL, {example}"
    if url.path not in ("", "/"):
        return f"must be the environment's root URL, {example}, without a path such as /api/data/v9.2"
    return None


def _json_object(value: Any) -> dict[str, Any]:
    """``metadata`` and ``content`` are JSON text in a string column: their object, or {} when the
    text is not a JSON object (the record is still stored; the fields it would give stay null)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str | bytes) or not value:
        return {}
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


USER_ROLES = (1, "1", "user")
"""``from.role`` of a user's activity: 1 in Copilot Studio transcripts (0 is the agent); Bot Framework's
own spelling is ``"user"``."""


def transcript_user(content: dict[str, Any]) -> Any:
    """The user of a conversation: ``from.aadObjectId`` (else ``from.id``) of the first activity
    whose ``from.role`` is the user's. E.g. ``{"activities": [{"from": {"id": "bot", "role": 0}},
    {"from": {"id": "29:1x", "aadObjectId": "5f0c...", "role": 1}}]}`` gives ``"5f0c..."``."""
    activities = content.get("activities")
    if not isinstance(activities, list):
        return None
    for activity in activities:
        sender = activity.get("from") if isinstance(activity, dict) else None
        if isinstance(sender, dict) and sender.get("role") in USER_ROLES:
            user = first_set(sender.get("aadObjectId"), sender.get("id"))
            if user is not None:
                return user
    return None


def is_test_chat(content: dict[str, Any]) -> bool:
    """Whether a transcript is a maker's test chat in Copilot Studio: its ``ConversationInfo`` trace
    activity says ``"isDesignMode": true``, e.g. ``{"activities": [{"type": "trace", "valueType":
    "ConversationInfo", "value": {"isDesignMode": true, "locale": "en-US"}}, ...]}``."""
    activities = content.get("activities")
    if not isinstance(activities, list):
        return False
    return any(
        isinstance(a, dict)
        and a.get("valueType") == "ConversationInfo"
        and isinstance(a.get("value"), dict)
        and a["value"].get("isDesignMode") is True
        for a in activities
    )


def odata_time(value: datetime, *, ceil: bool = False) -> str:
    """A DateTimeOffset literal in UTC, to the second (Dataverse keeps ``createdon`` to the second):
    floored for ``ge``, or ``ceil``-ed for ``lt``, so the filter never cuts inside a second."""
    value = value.astimezone(UTC)
    if value.microsecond:
        value = value.replace(microsecond=0) + (timedelta(seconds=1) if ceil else timedelta(0))
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


NOT_A_MEMBER = "0x80072560"
"""Dataverse's error code for a caller that is no user of the environment."""


def _dataverse_code(response: httpx.Response) -> str | None:
    """The ``error.code`` of a Dataverse error body (``{"error": {"code": "0x...", "message": ...}}``)."""
    try:
        doc = json.loads(response.content)
    except (ValueError, RecursionError):
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code.lower() if isinstance(code, str) else None


class CopilotStudioSource(ReferenceSource):
    """A ``copilot_studio`` source file."""

    ENDPOINT_ENV: ClassVar[str] = "PULLMODE_COPILOT_STUDIO_TOKEN_URL"
    DEFAULT_ENDPOINT: ClassVar[str] = "https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token"

    adapter: Literal["copilot_studio"]
    environment_url: str = Field(description="the Dataverse environment, e.g. https://contoso.crm.dynamics.com")
    cloud: Cloud = Field(default="public", description="the Microsoft cloud the tenant signs in at")
    max_page_size: int = Field(
        default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="transcripts per page (odata.maxpagesize)"
    )
    bot_ids: list[str] | None = Field(
        default=None, description="only the transcripts of these agents (their Dataverse bot ids, GUIDs)"
    )
    exclude_test_chats: bool = Field(
        default=False, description="leave out the transcripts of makers' test chats in Copilot Studio"
    )

    @property
    def agents(self) -> list[str]:
        """``botIds`` as the filter spells them: lower case, each once, in the order given."""
        return list(dict.fromkeys(b.strip().lower() for b in self.bot_ids or ()))

    def bot_filter(self) -> str | None:
        """The ``$filter`` clause of ``botIds`` (None: every agent)."""
        if not self.agents:
            return None
        either = " or ".join(f"{BOT_LOOKUP} eq {agent}" for agent in self.agents)
        return f"({either})" if len(self.agents) > 1 else either

    @property
    def environment(self) -> str:
        """The environment's root URL, without a trailing slash: the origin credentials go to."""
        return str(httpx.URL(self.environment_url).copy_with(path="/")).rstrip("/")

    @property
    def scope(self) -> str:
        return f"{self.environment}/.default"

    def authority_template(self) -> str:
        """The token URL template of ``cloud`` (``{tenant_id}`` still in it)."""
        return f"https://{CLOUD_AUTHORITIES[self.cloud]}/{{tenant_id}}/oauth2/v2.0/token"

    def endpoint(self) -> str:
        """The token URL template: ``PULLMODE_COPILOT_STUDIO_TOKEN_URL``, else the cloud's."""
        return os.environ.get(self.ENDPOINT_ENV) or self.authority_template()

    def token_url(self, tenant_id: str) -> str:
        """The token URL with ``tenant_id`` filled in (URL-encoded: it is one path segment)."""
        return self.endpoint().replace("{tenant_id}", urllib.parse.quote(tenant_id.strip(), safe=""))

    def problems(self) -> list[ConfigProblem]:
        problems: list[ConfigProblem] = []
        problem = _environment_url_problem(self.environment_url)
        if problem:
            problems.append(("environmentUrl", problem))
        for key, meaning in CREDENTIALS.items():
            if key not in self.credentials:
                problems.append((f"credentials.{key}", f"required: {meaning}"))
        for key in self.credentials:
            if key not in CREDENTIALS:
                problems.append(
                    (
                        f"credentials.{key}",
                        "copilot_studio takes three credentials: tenant_id, client_id, client_secret",
                    )
                )
        if self.bot_ids is not None and not self.bot_ids:
            problems.append(("botIds", "is empty; list at least one agent id, or leave botIds out to read every agent"))
        for i, agent in enumerate(self.bot_ids or ()):
            if not _GUID.fullmatch(agent.strip()):
                problems.append(
                    (
                        f"botIds[{i}]",
                        "must be an agent's id in the environment (its botid, a GUID such as "
                        f"8f3c2b1a-9d8e-4f7c-8b6a-5e4d3c2b1a09, as a stored transcript's {BOT_LOOKUP} holds it)",
                    )
                )
        return problems

    def warnings(self) -> list[ConfigProblem]:
        warnings: list[ConfigProblem] = []
        override = os.environ.get(self.ENDPOINT_ENV)
        if override:
            shown = safe_url(override).replace("%7Btenant_id%7D", "{tenant_id}")
            warnings.append(
                (
                    "adapter",
                    f"{self.ENDPOINT_ENV} is set: token requests go to {shown} instead of "
                    f"{self.authority_template()} (meant for tests and private gateways only)",
                )
            )
        host = (httpx.URL(self.environment_url).host or "").lower()
        authority = CLOUD_AUTHORITIES[self.cloud]
        for suffix, expected, kind, clouds in _ENVIRONMENT_DOMAINS:
            if host.endswith(suffix):
                if expected != authority:
                    warnings.append(
                        (
                            "cloud",
                            f"environmentUrl is {kind} environment (*{suffix}), whose tenants sign in at {expected}, "
                            f"but cloud {self.cloud} signs in at {authority}; set cloud: {clouds}",
                        )
                    )
                break
        return warnings

    def describe(self) -> str:
        where = safe_url(f"{self.environment}{API_PATH}")
        which = f" of {len(self.agents)} agent(s)" if self.agents else ""
        which += " without makers' test chats" if self.exclude_test_chats else ""
        return f"Pulls Copilot Studio conversation transcripts{which} from {where} (copilot_studio)"

    def extract(self, record: dict[str, Any]) -> dict[str, Any]:
        """One ``conversationtranscript`` row: the agent from ``metadata`` (else the bot lookup), the
        user from ``content``. Text that is not JSON in either leaves those fields null."""
        metadata = _json_object(record.get("metadata"))
        content = _json_object(record.get("content"))
        return {
            "source_event_id": record.get("conversationtranscriptid"),
            "event_timestamp": record.get("createdon"),
            "actor": transcript_user(content),
            "action": ACTION,
            "target": first_set(
                metadata.get("BotName"), record.get("_bot_conversationtranscriptid_value"), metadata.get("BotId")
            ),
        }


class EntraClientCredentials(ClientCredentials):
    """The engine's client credentials, whose token errors name the entry at fault by AADSTS code:
    ``source 'x': token request refused, check credentials.client_secret: the client secret is not
    valid ... (HTTP 401 invalid_client from <token URL>: AADSTS7000215: Invalid client secret ...)``."""

    def __init__(self, *, cloud_note: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.cloud_note = cloud_note

    def _take(self, response: httpx.Response) -> None:
        try:
            super()._take(response)
        except PullError:
            better = self._explain(response)
            if better is None:
                raise
            raise PullError(self.redact(better)) from None

    def _explain(self, response: httpx.Response) -> str | None:
        try:
            doc: Any = json.loads(response.content)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        description = str(doc.get("error_description") or "")
        # Redacted whole before it is cut: a cut could leave a prefix of a secret the redactor cannot see.
        first = self.redact(description).splitlines()[0].strip()[:400] if description.strip() else ""
        codes = doc.get("error_codes")
        code = codes[0] if isinstance(codes, list) and codes and isinstance(codes[0], int) else None
        if code is None and (found := _AADSTS.search(first)):
            code = int(found[1])
        if code not in AADSTS_HINTS:
            return None
        field, hint = AADSTS_HINTS[code]
        check = f"check {field}: " if field else ""
        error = str(doc.get("error") or "error")
        return (
            f"{self.what}: token request refused, {check}{hint.format(cloud=self.cloud_note)} "
            f"(HTTP {response.status_code} {error} from {safe_url(self.token_url)}: {first or f'AADSTS{code}'})"
        )


class TranscriptPosition(Position):
    next_link: str | None = None
    """The ``@odata.nextLink`` of an unfinished pagination: the next pull requests it as is."""
    left_out_through: str | None = None
    """The ``createdon`` of the newest transcript left out (a test chat) after the newest stored one:
    the next pull's filter starts there rather than at the watermark, so what was left out is not read
    again on every poll. Never a future time (``Puller.not_future``): one found in a cursor is ignored."""

    @field_validator("left_out_through")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is not None and zoned_time(value) is None:
            raise ValueError("must be an ISO 8601 timestamp with a zone (the createdon of a test chat left out)")
        return value


class CopilotStudioPuller(Puller):
    config_model = CopilotStudioSource
    position_model = TranscriptPosition
    source: CopilotStudioSource
    left_out = 0
    """Test chat transcripts this pull left out (``excludeTestChats``)."""

    def _auth(self) -> EntraClientCredentials:
        src = self.source
        for key in CREDENTIALS:
            if not self.credentials.get(key, "").strip():
                raise PullError(f"source {src.name!r}: credential {key!r} is empty")
        token_url = self.token_url()
        signs_in_at = httpx.URL(token_url).netloc.decode()
        if os.environ.get(src.ENDPOINT_ENV):
            signs_in_at += f", from {src.ENDPOINT_ENV}"
        cloud_note = f" in cloud {src.cloud} ({signs_in_at})"
        return EntraClientCredentials(
            token_url=token_url,
            client_id=self.credentials["client_id"].strip(),
            client_secret=self.credentials["client_secret"],
            scope=src.scope,
            origin=src.environment,
            what=f"source {src.name!r}",
            redact=self.redact,
            clock=self.context.clock,
            cloud_note=cloud_note,
        )

    def token_url(self) -> str:
        url = self.source.token_url(self.credentials["tenant_id"])
        try:
            valid = url.startswith(("http://", "https://")) and bool(httpx.URL(url).host)
        except httpx.InvalidURL:
            valid = False
        if not valid:
            raise PullError(f"source {self.source.name!r}: {self.source.ENDPOINT_ENV} must be an absolute http(s) URL")
        return url

    def _first_request(self, start: CursorState, window: Window | None) -> tuple[dict[str, str], str | None]:
        """The query of a first page, and the stored next link to resume from instead (if any).

        ``ge``, not a keyset on (``createdon``, id): a transcript written later in the watermark's
        second may have a lower id (GUIDs are not issued in order), and only re-reading that second
        (the store skips what it holds) finds it."""
        bots = self.source.bot_filter()
        if window is not None:
            where = f"createdon ge {odata_time(window.start)} and createdon lt {odata_time(window.end, ceil=True)}"
            return {"$filter": where + (f" and {bots}" if bots else ""), "$orderby": ORDER_BY}, None
        position = self.position(start)
        since = parse_timestamp(start.watermark) if start.watermark else self.source.start_datetime
        left_out = self.not_future(zoned_time(position.left_out_through)) if self.source.exclude_test_chats else None
        if left_out is not None and left_out > since:
            since = left_out
        where = f"createdon ge {odata_time(since)}" + (f" and {bots}" if bots else "")
        params = {"$filter": where, "$orderby": ORDER_BY}
        link = position.next_link
        if link is not None and not (
            link.startswith(("http://", "https://")) and same_origin(link, self.source.environment)
        ):
            raise PullError(
                f"source {self.source.name!r}: the cursor's next_link is not on environmentUrl "
                f"({self.redact(safe_url(link)) if link.startswith(('http://', 'https://')) else 'not a URL'}); "
                "rewind the cursor"
            )
        return params, link

    def probe(self, start: CursorState) -> ProbeAnswer:
        """The run's first request with ``odata.maxpagesize=1`` (Dataverse's ``$top=1``) and its
        ``createdon ge <watermark>`` filter, inclusive: the last stored transcript again is not news,
        nor is a test chat left out (``excludeTestChats``; the filter starts at the newest one left
        out); a stored next link is an unfinished pull, news without asking."""
        if self.position(start).next_link is not None:
            return NEW
        return self.first_page_probe(start, max_page_size=1)

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        src = self.source
        params, link = self._first_request(start, window)
        # Spelled as Dataverse's documentation spells it: $filter=createdon%20ge%20...&$orderby=createdon%20asc,...
        url = f"{src.environment}{API_PATH}?" + "&".join(
            f"{k}={urllib.parse.quote(v, safe=':,()')}" for k, v in params.items()
        )
        headers = {
            "Prefer": f"odata.maxpagesize={src.max_page_size}",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "Accept": "application/json",
        }
        fixed = dict(start.position) if window is not None else None
        seen: set[str] = {link} if link else set()
        keep = _Keep(self, start)
        with self.session(auth=self._auth()) as http:
            for number in self.page_numbers():
                what = f"source {src.name!r}: page {number}"
                try:
                    response = http.send(
                        "GET",
                        link or url,
                        what=what,
                        headers=headers,
                        accept=lambda r, what=what: self._page_body(r, what),
                    )
                finally:
                    self.requests = http.requests
                self._check(response, what)
                records, next_link = response.extensions["accepted"]
                if next_link is not None and not same_origin(next_link, src.environment):
                    # Refused before the page is handed on, so no cursor ever stores such a link.
                    raise PullError(
                        f"{what}: the next page link is on another origin ({self.redact(safe_url(next_link))}), "
                        f"not on environmentUrl; not requested (the access token goes to {safe_url(src.environment)} "
                        "only)"
                    )
                yield Page(
                    records=keep(records),
                    nbytes=len(response.content),
                    location=f"page {number}",
                    resume=fixed if fixed is not None else {"next_link": next_link, **keep.position()},
                    drained=next_link is None,
                )
                if next_link is None:
                    return
                if next_link in seen:
                    raise PullError(
                        f"{what}: pagination loop: the response returned an @odata.nextLink already requested in "
                        "this pull"
                    )
                seen.add(next_link)
                link = next_link

    def close(self) -> None:
        super().close()
        if self.left_out:
            self.context.logger.info(
                f"{self.source.name}: {self.left_out} test chat transcript(s) left out (excludeTestChats)"
            )

    def _page_body(self, response: httpx.Response, what: str) -> tuple[list[Any], str | None]:
        """The page's transcripts and its next link. A body that is not the promised JSON raises
        BadBody, and the request is tried again."""
        doc = json_body(response, what)
        if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
            raise BadBody("body has no 'value' array")
        link = doc.get("@odata.nextLink")
        if link is not None and not (isinstance(link, str) and link.startswith(("http://", "https://"))):
            raise PullError(f"{what}: @odata.nextLink is not an absolute URL")
        return doc["value"], link or None

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 300:
            return
        where = self.redact(safe_url(response.request.url))
        snippet = self.quote(response.text) if response.content else ""
        hint = {
            401: "the environment refused a fresh access token (is the app an application user in this environment? "
            "are environmentUrl and cloud right?)",
            403: "the application user may not read conversation transcripts (give it a security role with read "
            "access to Conversation Transcript)",
            404: "not found (check environmentUrl: a Dataverse environment with Copilot Studio; Dataverse for Teams "
            "and developer environments keep no transcripts)",
        }.get(status, "redirect (redirects are not followed)" if status < 400 else "error")
        if status == 403 and _dataverse_code(response) == NOT_A_MEMBER:
            hint = (
                "the app is not an application user of this environment (add it under Application users in the "
                "Power Platform admin center)"
            )
        raise PullError(f"{what}: HTTP {status} {hint} from {where}" + (f": {snippet}" if snippet else ""))


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return a if b is None or (a is not None and a >= b) else b


class _Keep:
    """What a pull keeps of each page: every transcript, or (``excludeTestChats``) all but makers'
    test chats, remembering the newest one left out after the newest kept (``left_out_through``).
    A transcript dated in the future (past ``Puller.not_future``'s horizon) is kept or left out all
    the same, but its date is not remembered: as the next filter's start it would skip every
    transcript written until then, as the engine's watermark rule says."""

    def __init__(self, puller: CopilotStudioPuller, start: CursorState):
        self.puller = puller
        self.active = puller.source.exclude_test_chats
        self.newest_kept = _later(zoned_time(start.watermark), zoned_time(start.high_water))
        left_out = zoned_time(puller.position(start).left_out_through) if self.active else None
        self.newest_left_out = puller.not_future(left_out)

    def __call__(self, records: list[Any]) -> list[Any]:
        if not self.active:
            return records
        kept: list[Any] = []
        for record in records:
            test = isinstance(record, dict) and is_test_chat(_json_object(record.get("content")))
            created = self.puller.not_future(zoned_time(record.get("createdon"))) if isinstance(record, dict) else None
            if test:
                self.puller.left_out += 1
                self.newest_left_out = _later(self.newest_left_out, created)
            else:
                kept.append(record)
                self.newest_kept = _later(self.newest_kept, created)
        return kept

    def position(self) -> dict[str, Any]:
        """``left_out_through`` while the newest transcript left out is newer than the newest kept."""
        left_out, kept = self.newest_left_out, self.newest_kept
        if left_out is None or (kept is not None and left_out <= kept):
            return {}
        return {"left_out_through": odata_time(left_out)}


register(Adapter("copilot_studio", CopilotStudioSource, CopilotStudioPuller, kind="microsoft"))
