"""A fake Microsoft identity platform and a fake Dataverse environment holding Copilot Studio
conversation transcripts, on loopback, each on its own port (so on its own origin, as in real life).

It follows shared/reference/upstream-apis.md ("Microsoft Copilot Studio").
Design (errors, paging, token expiry, builders): docs/design/demo.md#fake-copilot-studio
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..server import LoopbackServer, Request, Response

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TENANT_DOMAIN = "contoso.onmicrosoft.com"
CLIENT_ID = "0e5b1c8a-3f4d-4c2e-9a61-7d8e2f4b5c90"
BOT_ID = "d3c2b1a0-9f8e-4d7c-8b6a-5f4e3d2c1b0a"
BOT_NAME = "Contoso Helpdesk"
API_PATH = "/api/data/v9.2/conversationtranscripts"
MAX_PAGE_SIZE = 5000

_TOKEN_PATH = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
_CLAUSE = re.compile(r"^createdon (?P<op>gt|ge|lt|le) (?P<value>\S+)$")
_BOT_CLAUSE = re.compile(r"^_bot_conversationtranscriptid_value eq (?P<guid>[0-9a-fA-F-]{36})$")
_ORDER_TERM = re.compile(r"^(?P<field>createdon|conversationtranscriptid)(?: (?P<dir>asc|desc))?$")
PRIMARY_KEY = "conversationtranscriptid"
_GUID_BYTE_ORDER = (10, 11, 12, 13, 14, 15, 8, 9, 6, 7, 4, 5, 0, 1, 2, 3)
"""The order SQL Server compares a uniqueidentifier's bytes in (of its .NET/``bytes_le`` layout):
the last group first. Dataverse sorts GUID columns this way, not as text."""
_COOKIE = re.compile(r'pagingcookie="(?P<inner>[^"]*)"')
_LAST = re.compile(r'<(?P<field>\w+) last="(?P<value>[^"]*)"')


def iso(value: datetime) -> str:
    """Dataverse's DateTimeOffset text: UTC, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def transcript(
    transcript_id: str | None,
    created: datetime,
    *,
    user: str | None = "29:1a2b3c4d5e",
    aad_object_id: str | None = None,
    bot_id: str = BOT_ID,
    bot_name: str | None = BOT_NAME,
    tenant_id: str = TENANT_ID,
    metadata: str | None = None,
    content: str | None = None,
    text: str = "I need a new laptop",
    design_mode: bool = False,
) -> dict[str, Any]:
    """A ``conversationtranscript`` row in the documented shape. ``metadata``/``content`` replace the
    generated JSON text as is (to store text that is not JSON); ``user=None`` has no user activity;
    ``design_mode`` makes it a maker's test chat (``isDesignMode`` in the ``ConversationInfo`` trace).
    Shapes: Microsoft Learn, "Download conversation transcripts in Power Apps" (``metadata``,
    ``content``'s activities); ``isDesignMode`` is unconfirmed (independent transcript parsers)."""
    conversation_id = uuid.uuid4().hex[:22]
    start = created - timedelta(minutes=35)
    epoch = int(start.timestamp())
    bot = {"id": bot_id, "role": 0}
    sender: dict[str, Any] = {"id": user, "role": 1}
    if aad_object_id is not None:
        sender["aadObjectId"] = aad_object_id
    activities: list[dict[str, Any]] = [
        {
            "valueType": "ConversationInfo",
            "id": uuid.uuid4().hex,
            "type": "trace",
            "timestamp": epoch,
            "from": bot,
            "value": {"isDesignMode": design_mode, "locale": "en-US"},
        }
    ]
    if user is not None:
        activities.append(
            {
                "id": uuid.uuid4().hex,
                "type": "message",
                "timestamp": epoch + 2,
                "from": sender,
                "channelId": "msteams",
                "textFormat": "plain",
                "text": text,
            }
        )
    activities += [
        {
            "id": uuid.uuid4().hex,
            "type": "message",
            "timestamp": epoch + 3,
            "from": bot,
            "text": "I can help with that. Which model would you like?",
        },
        {
            "valueType": "SessionInfo",
            "id": uuid.uuid4().hex,
            "type": "trace",
            "timestamp": epoch + 60,
            "from": bot,
            "value": {"outcome": "Resolved", "type": "Engaged", "turnCount": 2},
        },
    ]
    meta = {"BotId": bot_id, "AADTenantId": tenant_id}
    if bot_name is not None:
        meta["BotName"] = bot_name
    return {
        "@odata.etag": f'W/"{secrets.randbelow(10**7)}"',
        "conversationtranscriptid": transcript_id or str(uuid.uuid4()),
        "createdon": iso(created),
        "modifiedon": iso(created),
        "conversationstarttime": iso(start),
        "name": f"{conversation_id}_{bot_id}",
        "_bot_conversationtranscriptid_value": bot_id,
        "metadata": metadata if metadata is not None else json.dumps(meta),
        "schematype": "powervirtualagents",
        "schemaversion": "1.0.0.0",
        "content": content if content is not None else json.dumps({"activities": activities}),
        "statecode": 0,
        "statuscode": 1,
    }


def _aad_error(status: int, error: str, code: int, description: str, tenant: str = "") -> Response:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    text = (
        f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\n"
        f"Timestamp: {now:%Y-%m-%d %H:%M:%SZ}"
    )
    return Response(
        status,
        {
            "error": error,
            "error_description": text,
            "error_codes": [code],
            "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )


def _dataverse_error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


@dataclass
class Token:
    app: str
    resource: str
    expires_at: float
    revoked: bool = False


class CopilotStudioAPI:
    """The identity platform (``login``) and one Dataverse environment (``dataverse``)."""

    def __init__(
        self,
        client_secret: str,
        *,
        tenant_id: str = TENANT_ID,
        client_id: str = CLIENT_ID,
        token_lifetime: int = 3599,
        clock: Callable[[], float] = time.time,
    ):
        self.tenants = {tenant_id, TENANT_DOMAIN}
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.secret_expired = False
        self.token_lifetime = token_lifetime
        """``expires_in`` of new tokens, in seconds; they stop working after it (by ``clock``)."""
        self.clock = clock
        self.offset = 0.0
        """Seconds added to ``clock`` (``advance``, ``seconds_per_page``)."""
        self.seconds_per_page = 0.0
        self.revoke_after_pages: int | None = None
        """Revoke every token issued so far once this many pages were served (once)."""
        self.application_user = True
        """False: the app is no application user of the environment (403 on every data request)."""
        self.can_read = True
        """False: the application user's roles lack read access to conversation transcripts (403)."""
        self.next_link_base: str | None = None
        """Another base URL for next links (a misbehaving proxy): the client must not follow it."""
        self.stuck_link = False
        """True: every next link is the first page's again (a paging loop)."""
        self.fail_pages: set[int] = set()
        """Data requests (1-based, counting every request) answered 500."""
        self.rows: list[dict[str, Any]] = []
        self.tokens: dict[str, Token] = {}
        self.pages_served = 0
        self.login = LoopbackServer(fallback=self._serve_login)
        self.dataverse = LoopbackServer(fallback=self._serve_dataverse)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> CopilotStudioAPI:
        self.login.start()
        self.dataverse.start()
        return self

    def stop(self) -> None:
        self.login.stop()
        self.dataverse.stop()

    def __enter__(self) -> CopilotStudioAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def environment_url(self) -> str:
        """What a source's ``environmentUrl`` is set to."""
        return self.dataverse.base_url

    @property
    def token_url(self) -> str:
        """What ``PULLMODE_COPILOT_STUDIO_TOKEN_URL`` is set to (``{tenant_id}`` is filled in by the client)."""
        return self.login.url("/{tenant_id}/oauth2/v2.0/token")

    def now(self) -> float:
        return self.clock() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    # -- data ------------------------------------------------------------------------------------

    def add(self, *rows: dict[str, Any]) -> list[dict[str, Any]]:
        self.rows.extend(rows)
        return list(rows)

    def revoke_tokens(self) -> None:
        for token in self.tokens.values():
            token.revoked = True

    # -- what was asked --------------------------------------------------------------------------

    def token_requests(self) -> list[dict[str, str]]:
        """The forms the token endpoint received, in order."""
        return [
            dict(urllib.parse.parse_qsl(r.body.decode(), keep_blank_values=True))
            for r in self.login.requests
            if r.method == "POST"
        ]

    def data_requests(self) -> list[Request]:
        return [r for r in self.dataverse.requests if r.path == API_PATH]

    # -- the identity platform -------------------------------------------------------------------

    def _serve_login(self, request: Request) -> Response:
        match = _TOKEN_PATH.match(request.path)
        if match is None or request.method != "POST":
            return Response(404, "<html><body>Not found</body></html>", headers={"Content-Type": "text/html"})
        tenant = urllib.parse.unquote(match["tenant"])
        if tenant not in self.tenants:
            return _aad_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
                "into the correct cloud. Check with your subscription administrator, this may happen if there are "
                "no active subscriptions for the tenant.",
            )
        if not (request.header("content-type") or "").startswith("application/x-www-form-urlencoded"):
            return _aad_error(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            )
        form = dict(urllib.parse.parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id = form.get("client_id", "")
        if client_id != self.client_id:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        secret = form.get("client_secret")
        if not secret:
            return _aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if secret != self.client_secret:
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        if self.secret_expired:
            return _aad_error(
                401, "invalid_client", 7000222, f"The provided client secret keys for app '{client_id}' are expired."
            )
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
                "with /.default suffixed to the resource identifier (application ID URI).",
            )
        resource = scope.removesuffix("/.default")
        if resource != self.environment_url:
            return _aad_error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named {tenant}. This can "
                "happen if the application has not been installed by the administrator of the tenant.",
            )
        token = self._issue(client_id, resource)
        return Response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            },
        )

    def _issue(self, app: str, resource: str) -> str:
        def part(doc: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

        expires_at = self.now() + self.token_lifetime
        claims = {"aud": resource, "tid": self.tenant_id, "appid": app, "exp": int(expires_at)}
        token = f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.{secrets.token_urlsafe(32)}"
        self.tokens[token] = Token(app=app, resource=resource, expires_at=expires_at)
        return token

    # -- Dataverse -------------------------------------------------------------------------------

    def _unauthorized(self) -> Response:
        challenge = (
            'Bearer error=invalid_token, error_description="Error during token validation!", '
            f"authorization_uri=https://login.microsoftonline.com/{self.tenant_id}/oauth2/authorize, "
            f"resource_id={self.environment_url}/"
        )
        return Response(401, b"", headers={"WWW-Authenticate": challenge})

    def _serve_dataverse(self, request: Request) -> Response:
        if request.path != API_PATH:
            return _dataverse_error(
                404, "0x8006088a", f"Resource not found for the segment '{request.path.rsplit('/', 1)[-1]}'."
            )
        presented = (request.header("authorization") or "").removeprefix("Bearer ")
        token = self.tokens.get(presented)
        if token is None or token.revoked or token.expires_at <= self.now() or token.resource != self.environment_url:
            return self._unauthorized()
        if not self.application_user:
            return _dataverse_error(403, "0x80072560", "The user is not a member of the organization.")
        if not self.can_read:
            return _dataverse_error(
                403,
                "0x80040220",
                f"Principal user (Id={uuid.uuid5(uuid.NAMESPACE_OID, token.app)}, type=8, roleCount=1) is missing "
                "prvReadconversationtranscript privilege on OTC=10075 for entity 'conversationtranscript'.",
            )
        if len(self.data_requests()) in self.fail_pages:
            return _dataverse_error(500, "0x80040216", "An unexpected error occurred.")
        return self._page(request)

    def _page(self, request: Request) -> Response:
        if "$skip" in request.query:
            return _dataverse_error(400, "0x80060888", "The query parameter $skip is not supported")
        try:
            order = _order(request.arg("$orderby"))
            rows = _sorted(self._filtered(request.arg("$filter")), order)
            after = self._cookie(request.arg("$skiptoken"), order)
        except ValueError as exc:
            return _dataverse_error(400, "0x80060888", str(exc))
        if after is not None:
            rows = [r for r in rows if _follows(r, after, order)]
        size = self._page_size(request.header("prefer"))
        page = rows[:size]
        select = [f.strip() for f in (request.arg("$select") or "").split(",") if f.strip()]
        values = [
            {k: v for k, v in r.items() if k in select or k in ("@odata.etag", PRIMARY_KEY)} if select else dict(r)
            for r in page
        ]
        body: dict[str, Any] = {
            "@odata.context": f"{self.environment_url}/api/data/v9.2/$metadata#conversationtranscripts"
        }
        body["value"] = values
        if len(rows) > size:
            body["@odata.nextLink"] = self._next_link(request, page[-1], order)
        self.pages_served += 1
        self.offset += self.seconds_per_page
        if self.revoke_after_pages is not None and self.pages_served >= self.revoke_after_pages:
            self.revoke_after_pages = None
            self.revoke_tokens()
        return Response(200, body, headers={"Preference-Applied": f"odata.maxpagesize={size}", "OData-Version": "4.0"})

    @staticmethod
    def _page_size(prefer: str | None) -> int:
        for preference in (prefer or "").split(","):
            name, _, value = preference.strip().partition("=")
            if name == "odata.maxpagesize" and value.isdigit():
                return max(1, min(int(value), MAX_PAGE_SIZE))
        return MAX_PAGE_SIZE

    def _filtered(self, expression: str | None) -> list[dict[str, Any]]:
        """The rows ``$filter`` selects: clauses joined by ``and``, each a ``createdon`` comparison
        or a parenthesized ``or`` of ``_bot_conversationtranscriptid_value eq <guid>`` (Microsoft
        Learn, "Filter rows using OData": comparison, logical and grouping operators; a lookup is
        filtered by its ``_<name>_value`` property and an unquoted GUID)."""
        rows = list(self.rows)
        for clause in re.split(r"\s+and\s+", expression.strip()) if expression else ():
            text = clause.strip()
            grouped = text.startswith("(") and text.endswith(")")
            tests = [_atom(atom.strip()) for atom in re.split(r"\s+or\s+", text[1:-1] if grouped else text)]
            if len(tests) > 1 and not grouped:
                raise ValueError(f"Syntax error or unsupported clause in $filter: '{text}'")
            rows = [r for r in rows if any(test(r) for test in tests)]
        return rows

    def _next_link(self, request: Request, last: dict[str, Any], order: list[tuple[str, bool]]) -> str:
        """The next page's absolute URL: the request's query with a ``$skiptoken`` paging cookie that
        holds the last row's values of the ordering columns (double-encoded, as Dataverse's is:
        Microsoft Learn, "Page results using OData")."""
        inner = '<cookie page="{}">{}</cookie>'.format(
            self.pages_served + 1, "".join(f'<{f} last="{last[f]}" />' for f, _ in order)
        )
        cookie = (
            f'<cookie pagenumber="{self.pages_served + 2}" '
            f'pagingcookie="{urllib.parse.quote(urllib.parse.quote(inner, safe=""), safe="")}" istracking="False" />'
        )
        query = [(k, v) for k, vs in request.query.items() for v in vs if k != "$skiptoken"]
        if not self.stuck_link:
            query.append(("$skiptoken", cookie))
        base = self.next_link_base or self.environment_url
        return f"{base}{API_PATH}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe='$')}"

    @staticmethod
    def _cookie(skiptoken: str | None, order: list[tuple[str, bool]]) -> dict[str, str] | None:
        if not skiptoken:
            return None
        match = _COOKIE.search(skiptoken)
        if match is None:
            raise ValueError("The $skiptoken is not valid")
        inner = urllib.parse.unquote(urllib.parse.unquote(match["inner"]))
        last = {m["field"]: m["value"] for m in _LAST.finditer(inner)}
        if any(f not in last for f, _ in order):
            raise ValueError("The $skiptoken does not match the query's $orderby")
        return last


def _order(orderby: str | None) -> list[tuple[str, bool]]:
    """``$orderby`` as (column, descending) terms. Without one Dataverse orders by the primary key
    (Microsoft Learn, "Paging behaviors and ordering")."""
    if not orderby or not orderby.strip():
        return [(PRIMARY_KEY, False)]
    terms: list[tuple[str, bool]] = []
    for term in orderby.split(","):
        match = _ORDER_TERM.match(term.strip())
        if match is None:
            raise ValueError(f"$orderby '{orderby}' is not supported by this fake")
        terms.append((match["field"], match["dir"] == "desc"))
    return terms


def _sort_value(row: dict[str, Any], field: str) -> Any:
    value = row[field]
    if field == PRIMARY_KEY:
        try:
            raw = uuid.UUID(str(value).strip("{}")).bytes_le
        except ValueError:
            return str(value).encode()
        return bytes(raw[i] for i in _GUID_BYTE_ORDER)
    return value  # createdon: fixed-width UTC text (iso), so text order is time order


def _sorted(rows: list[dict[str, Any]], order: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """``rows`` in ``order``; rows equal in every ordering column keep the order they were written in."""
    for field, descending in reversed(order):
        rows = sorted(rows, key=lambda r, f=field: _sort_value(r, f), reverse=descending)
    return rows


def _follows(row: dict[str, Any], last: dict[str, str], order: list[tuple[str, bool]]) -> bool:
    """Whether ``row`` sorts after the row the paging cookie names. The cookie knows that row only by
    its ordering columns, so a row equal to it in all of them counts as served: with an ordering that
    is not unique (``createdon`` alone, kept to the second), rows sharing the last row's values at a
    page boundary are skipped. Microsoft Learn ("Paging behaviors and ordering"): proper page ordering
    requires unique values."""
    for field, descending in order:
        mine, theirs = _sort_value(row, field), _sort_value(last, field)
        if mine != theirs:
            return (mine < theirs) if descending else (mine > theirs)
    return False


def _atom(text: str) -> Callable[[dict[str, Any]], bool]:
    """One comparison of ``$filter`` as a test of a row."""
    bot = _BOT_CLAUSE.match(text)
    if bot is not None:
        guid = bot["guid"].lower()
        return lambda r: str(r.get("_bot_conversationtranscriptid_value") or "").lower() == guid
    match = _CLAUSE.match(text)
    if match is None:
        raise ValueError(f"Syntax error or unsupported clause in $filter: '{text}'")
    try:
        bound = datetime.fromisoformat(match["value"])
    except ValueError:
        raise ValueError(f"The DateTimeOffset literal '{match['value']}' is not valid") from None
    if bound.tzinfo is None:
        raise ValueError(f"The DateTimeOffset literal '{match['value']}' has no time zone")
    op = match["op"]
    return lambda r: _compare(datetime.fromisoformat(r["createdon"]), op, bound)


def _compare(value: datetime, op: str, bound: datetime) -> bool:
    return {"gt": value > bound, "ge": value >= bound, "lt": value < bound, "le": value <= bound}[op]
