"""A fake OpenAI Compliance API (ChatGPT Enterprise), Logs Platform, on loopback.

It follows shared/reference/upstream-apis.md ("OpenAI Compliance API"), unconfirmed items included;
log files come from a second server (another origin), as signed URLs do. Where each shape comes from:

- OpenAI's own quickstart, https://cookbook.openai.com/examples/chatgpt/compliance_api/logs_platform
  (openai/openai-cookbook examples/chatgpt/compliance_api/logs_platform.ipynb): the Bearer key, the
  ``workspaces/{id}`` / ``organizations/{org-id}`` scope, ``GET .../logs?event_type=&limit=&after=``
  -> ``{"data": [{"id"}], "has_more", "last_end_time"}``, paging by ``after = last_end_time``, and
  ``GET .../logs/{id}`` (redirects followed) returning JSONL.
- Third-party clients, as upstream-apis.md records them ("unconfirmed"): the entries' ``event_type``,
  ``end_time``, ``file_name``, ``file_size``, ``file_sha256``; the 307 to a signed URL on another host;
  ``last_end_time`` null on an empty page; the inclusive ``after``; the record shapes below; the event
  type names as Elastic's integration, a Go client and a transcription of the reference send them
  (``CONVERSATION_MESSAGE``; Fivetran's ``CONVERSATION_MESSAGE_LOG``,
  https://fivetran.com/docs/connectors/applications/openai-compliance-platform, is a table name); an
  open list (RunReveal offers 12 types, https://docs.runreveal.com/sources/source-types/chatgpt-compliance);
  ``COSTS`` listed only under ``organizations/{org-...}``.
Design: docs/design/demo.md#fake-openai-compliance-api
"""

from __future__ import annotations

import gzip
import hashlib
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
    "CONVERSATION_MESSAGE",
    "CUSTOM_AGENTS_LOG",
    "COSTS",
)
"""The types this fake lists (upstream-apis.md's; the vendor's own list is open: see
``ComplianceLogsAPI.event_types``). Any other ``event_type`` is a 400, as an unknown one would be."""
ORGANIZATION_ONLY = ("COSTS",)
"""Listed only under ``organizations/{org-...}`` (upstream-apis.md): a workspace's listing has none."""
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
    credits: float = 1.5,
    usd: float | None = None,
    principal: str = ORG_ID,
) -> dict[str, Any]:
    """A COSTS record as upstream-apis.md describes it: ``payload{identity{user_id,email},product,
    model}`` and ``billing[]`` in credits. A USD estimate is often absent; the public material does not
    spell one out, so ``usd`` adds it as a billing entry whose unit says USD."""
    billing: list[dict[str, Any]] = [{"unit": "credits", "amount": credits}]
    if usd is not None:
        billing.append({"unit": "usd", "amount": usd})
    return {
        "event_id": event_id,
        "type": "COSTS",
        "timestamp": iso(timestamp),
        "principal": {"id": principal, "type": "organization"},
        "payload": {"identity": {"user_id": user_id, "email": email}, "product": product, "model": model},
        "billing": billing,
    }


def conversation_message_record(event_id: str, timestamp: datetime, *, email: str) -> dict[str, Any]:
    """A CONVERSATION_MESSAGE record. Its body is not described publicly: this is AUTH_LOG's envelope
    (``event_id``, ``type``, ``timestamp``, ``actor``) around a message, enough to follow the stream."""
    return {
        "event_id": event_id,
        "type": "CONVERSATION_MESSAGE",
        "timestamp": iso(timestamp),
        "actor": {"type": "user", "user_id": "user-abc123", "user_email": email},
        "message": {"role": "user", "content": "hello"},
    }


def app_auth_log_record(event_id: str, timestamp: datetime, *, email: str, action: str) -> dict[str, Any]:
    """An APP_AUTH_LOG record: AUTH_LOG's envelope with the verb at the top level, ``action``
    (upstream-apis.md)."""
    return {
        "event_id": event_id,
        "type": "APP_AUTH_LOG",
        "timestamp": iso(timestamp),
        "actor": {"type": "user", "user_id": "user-abc123", "user_email": email},
        "action": action,
        "app": {"id": "app-connector-1", "name": "GitHub"},
    }


def codex_log_record(
    event_id: str,
    timestamp: datetime,
    *,
    email: str,
    verb: str = "task.completed",
    model: str = "gpt-5-codex",
    input_tokens: int = 1200,
    output_tokens: int = 340,
) -> dict[str, Any]:
    """A CODEX_LOG record: the verb in ``event_type``, the model and token counts in
    ``event_details{model, token_usage{input_tokens, output_tokens}}`` (upstream-apis.md)."""
    return {
        "event_id": event_id,
        "type": "CODEX_LOG",
        "timestamp": iso(timestamp),
        "actor": {"type": "user", "user_id": "user-abc123", "user_email": email},
        "event_type": verb,
        "event_details": {
            "model": model,
            "surface": "cli",
            "token_usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
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
    listed_sha256: str | None = None
    """What the listing gives as ``file_sha256``; None: the body's SHA-256 in hex."""

    def entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "end_time": iso(self.end_time),
            "file_name": self.file_name,
            "file_size": len(self.body),
            "file_sha256": self.listed_sha256 or hashlib.sha256(self.body).hexdigest(),
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
        self.omit_fields: set[str] = {"file_size", "file_sha256"}
        """File-entry fields left out of listings (all unconfirmed; entries "may carry" ``file_size``
        and ``file_sha256``, so by default they do not: a test that wants them removes them here)."""
        self.event_types = set(EVENT_TYPES)
        """The types the API lists (the vendor adds some over time: a test adds one here)."""
        self.damaged_downloads: dict[str, int] = {}
        """Log id -> how many of its next downloads the file host serves cut short (its last line
        missing, still a 200): what a digest check is for."""
        self.pending: set[str] = set()
        """Event types whose listing says ``has_more`` true even on its last page: more is being
        written, none is there yet. Past the last file that is an empty page with ``last_end_time``
        null; from the last file's end (the inclusive ``after``) it is that file again, with its end
        as ``last_end_time``."""
        self.expired = False
        """True: the file host refuses every signed URL (403), as when a signature has expired."""
        self.signature_mismatch = False
        """True: the file host refuses every signed URL as S3 does when a signature does not match: 403
        ``SignatureDoesNotMatch``, the body quoting the signature it was given, the string it signed
        (the query among it) and the URL (Amazon S3 API Reference, "Error responses",
        https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)."""
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
            principal=principal or (self.org_id if event_type in ORGANIZATION_ONLY else self.workspace_id),
        )
        if event_type in ORGANIZATION_ONLY and file.principal != self.org_id:
            raise ValueError(f"{event_type} files exist only under organizations/{self.org_id}")
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
        if event_type not in self.event_types:
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
                "has_more": len(matching) > limit or event_type in self.pending,
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
        if self.signature_mismatch:
            signature = request.arg("sig") or ""
            query = request.url.partition("?")[2]
            return Response(
                403,
                "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not "
                f"match the signature you provided.</Message><SignatureProvided>{signature}</SignatureProvided>"
                f"<StringToSign>GET\n{request.path}\n{query}</StringToSign>"
                f"<URL>{request.url.replace('&', '&amp;')}</URL></Error>",
                headers={"Content-Type": "application/xml"},
            )
        file = next(f for f in self.files if f.id == log_id)
        body = file.body
        if self.damaged_downloads.get(log_id, 0) > 0:
            self.damaged_downloads[log_id] -= 1
            body = body[: body.rstrip(b"\n").rfind(b"\n") + 1]  # the last line lost in transfer
        return Response(200, body, headers={"Content-Type": "application/jsonl"})
