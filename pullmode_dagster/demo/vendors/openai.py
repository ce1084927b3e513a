"""A fake OpenAI Compliance API (ChatGPT Enterprise), Logs Platform, on loopback.

It follows shared/reference/upstream-apis.md ("OpenAI Compliance API"), unconfirmed items included;
log files come from a second server (another origin), as signed URLs do.
Design: docs/design/demo.md#fake-openai-compliance-api
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..server import LoopbackServer, Request, Response

WORKSPACE_ID = "f7f33107-5fb9-4ee1-8922-3eae76b5b5a0"
ORG_ID = "org-AcmeCompliance0001"
EVENT_TYPES = (
    "AUTH_LOG",
    "AUDIT_LOG",
    "APP_LOG",
    "APP_AUTH_LOG",
    "CODEX_LOG",
    "CODEX_SECURITY_LOG",
    "CONVERSATION_MESSAGE_LOG",
    "CUSTOM_AGENTS_LOG",
    "COSTS",
)
MAX_LIMIT = 1000

_API_PATH = re.compile(r"^/v1/compliance/(?P<scope>workspaces|organizations)/(?P<id>[^/]+)/logs(?:/(?P<log>[^/]+))?$")
_SIGNED_PATH = re.compile(r"^/signed/(?P<log>[^/]+)$")


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def auth_log_record(
    event_id: str,
    timestamp: datetime,
    *,
    email: str | None,
    user_id: str = "user-abc123",
    action: str = "login",
    principal: str = WORKSPACE_ID,
) -> dict[str, Any]:
    """An AUTH_LOG record in the documented shape."""
    actor: dict[str, Any] = {"type": "user", "user_id": user_id}
    if email is not None:
        actor["user_email"] = email
    return {
        "event_id": event_id,
        "type": "AUTH_LOG",
        "timestamp": iso(timestamp),
        "principal": {"id": principal, "type": "workspace"},
        "actor": actor,
        "request_metadata": {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"},
        "action_data": {"action": action, "auth_method": "sso"},
    }


def costs_record(
    event_id: str,
    timestamp: datetime,
    *,
    email: str,
    user_id: str = "user-abc123",
    product: str = "chatgpt",
    model: str = "gpt-5",
    principal: str = WORKSPACE_ID,
) -> dict[str, Any]:
    """A COSTS record in the documented shape."""
    return {
        "event_id": event_id,
        "type": "COSTS",
        "timestamp": iso(timestamp),
        "principal": {"id": principal, "type": "workspace"},
        "payload": {
            "identity": {"user_id": user_id, "email": email},
            "product": product,
            "model": model,
            "measures": {"credits": 1.5, "messages": 3},
        },
    }


@dataclass
class LogFile:
    id: str
    event_type: str
    end_time: datetime
    body: bytes
    file_name: str
    principal: str

    def entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "end_time": iso(self.end_time),
            "file_name": self.file_name,
        }


def _error(status: int, message: str, code: str) -> Response:
    return Response(status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})


class ComplianceLogsAPI:
    """The Logs Platform (``api``) and the signed-URL file host (``storage``), each on its own port."""

    def __init__(self, api_key: str, *, workspace_id: str = WORKSPACE_ID, org_id: str = ORG_ID):
        self.api_key = api_key
        self.principals = {("workspaces", workspace_id), ("organizations", org_id)}
        self.workspace_id = workspace_id
        self.org_id = org_id
        self.files: list[LogFile] = []
        self.fail_downloads: set[str] = set()
        """Log ids whose download answers 500 (a broken file host)."""
        self.omit_fields: set[str] = set()
        """File-entry fields left out of listings (``end_time``, ``file_name``: unconfirmed ones)."""
        self.expired = False
        """True: the file host refuses every signed URL (403), as when a signature has expired."""
        self._signatures: dict[str, str] = {}
        self.api = LoopbackServer(fallback=self._serve_api)
        self.storage = LoopbackServer(fallback=self._serve_signed)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ComplianceLogsAPI:
        self.api.start()
        self.storage.start()
        return self

    def stop(self) -> None:
        self.api.stop()
        self.storage.stop()

    def __enter__(self) -> ComplianceLogsAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What ``PULLMODE_OPENAI_COMPLIANCE_BASE_URL`` is set to."""
        return self.api.url("/v1/compliance")

    # -- data ------------------------------------------------------------------------------------

    def add_file(
        self,
        event_type: str,
        records: list[dict[str, Any]] | None = None,
        *,
        end_time: datetime,
        body: bytes | None = None,
        principal: str | None = None,
        gzipped: bool = False,
    ) -> LogFile:
        """A log file of ``records`` (or of a raw ``body``) that ends at ``end_time``."""
        number = len(self.files) + 1
        data = body if body is not None else jsonl(records or [])
        if gzipped:
            data = gzip.compress(data)
        file = LogFile(
            id=f"log_{number:04d}_{secrets.token_hex(4)}",
            event_type=event_type,
            end_time=end_time,
            body=data,
            file_name=f"{event_type.lower()}_{end_time:%Y%m%dT%H%M%S}_{number:04d}.jsonl" + (".gz" if gzipped else ""),
            principal=principal or self.workspace_id,
        )
        self.files.append(file)
        return file

    # -- what was asked --------------------------------------------------------------------------

    def listings(self, event_type: str | None = None) -> list[Request]:
        return [
            r
            for r in self.api.requests
            if r.path.endswith("/logs") and (event_type is None or r.arg("event_type") == event_type)
        ]

    def downloads(self) -> list[str]:
        """The log ids whose download was asked of the API, in order."""
        return [m["log"] for r in self.api.requests if (m := _API_PATH.match(r.path)) and m["log"]]

    @property
    def storage_saw_authorization(self) -> bool:
        """Whether the signed-URL host ever received an Authorization header."""
        return any("authorization" in r.headers for r in self.storage.requests)

    # -- routes ----------------------------------------------------------------------------------

    def _serve_api(self, request: Request) -> Response:
        match = _API_PATH.match(request.path)
        if match is None:
            return _error(404, "Not found", "not_found")
        presented = request.header("authorization") or ""
        if presented != f"Bearer {self.api_key}":
            shown = presented.removeprefix("Bearer ") or "none"
            return _error(401, f"Incorrect API key provided: {shown}", "invalid_api_key")
        if (match["scope"], match["id"]) not in self.principals:
            return _error(404, f"No such {match['scope'][:-1]}", "not_found")
        if match["log"]:
            return self._download(match["id"], urllib.parse.unquote(match["log"]))
        return self._list(match["id"], request)

    def _list(self, principal: str, request: Request) -> Response:
        event_type = request.arg("event_type")
        if event_type not in EVENT_TYPES:
            return _error(400, "event_type is required and must be a known event type", "invalid_event_type")
        try:
            limit = int(request.arg("limit") or 100)
        except ValueError:
            return _error(400, "limit must be an integer", "invalid_limit")
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"limit must be between 1 and {MAX_LIMIT}", "invalid_limit")
        try:
            after = datetime.fromisoformat(request.arg("after") or "")
        except ValueError:
            after = None
        if after is None or after.tzinfo is None:
            return _error(400, "after must be an ISO 8601 timestamp with a timezone", "invalid_after")
        matching = sorted(
            (f for f in self.files if f.principal == principal and f.event_type == event_type and f.end_time >= after),
            key=lambda f: (f.end_time, f.id),
        )
        page = matching[:limit]
        return Response(
            200,
            {
                "data": [{k: v for k, v in f.entry().items() if k not in self.omit_fields} for f in page],
                "has_more": len(matching) > limit,
                "last_end_time": iso(page[-1].end_time) if page else None,
            },
        )

    def _download(self, principal: str, log_id: str) -> Response:
        file = next((f for f in self.files if f.id == log_id and f.principal == principal), None)
        if file is None:
            return _error(404, "No such log file", "not_found")
        if log_id in self.fail_downloads:
            return _error(500, "The server had an error while processing your request", "server_error")
        signature = secrets.token_urlsafe(16)
        self._signatures[signature] = log_id
        location = self.storage.url(f"/signed/{urllib.parse.quote(log_id)}?sig={signature}&expires=300")
        return Response(307, b"", headers={"Location": location})

    def _serve_signed(self, request: Request) -> Response:
        match = _SIGNED_PATH.match(request.path)
        log_id = urllib.parse.unquote(match["log"]) if match else None
        if log_id is None or self._signatures.get(request.arg("sig") or "") != log_id:
            return Response(403, "<Error><Code>AccessDenied</Code><Message>bad signature</Message></Error>")
        if self.expired:
            return Response(403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
        file = next(f for f in self.files if f.id == log_id)
        return Response(200, file.body, headers={"Content-Type": "application/jsonl"})
