"""Auth strategies for the one HTTP session, applied per request (``httpx.Auth``).

Each strategy is bound to the configured origin: a request to any other origin (a next link, a
redirect to a signed download URL) gets nothing from it. That is the one place the origin rule for
credentials lives. OAuth 2.0 client credentials caches its token for the token's lifetime within a
pull, and asks for a new one before expiry or once after a 401.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import httpx

from ..errors import PullError
from .redaction import Redactor
from .session import BadBody, safe_url, same_origin


class OriginAuth(httpx.Auth):
    """Adds credentials to requests on ``origin`` only."""

    def __init__(self, origin: str):
        self.origin = origin

    def applies(self, request: httpx.Request) -> bool:
        return same_origin(request.url, self.origin)


class HeaderAuth(OriginAuth):
    """Fixed credential headers (``x-api-key``, a templated ``Authorization``)."""

    def __init__(self, headers: Mapping[str, str], origin: str):
        super().__init__(origin)
        self.headers = dict(headers)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.applies(request):
            request.headers.update(self.headers)
        yield request


def bearer(token: str, origin: str) -> HeaderAuth:
    return HeaderAuth({"Authorization": f"Bearer {token}"}, origin)


class ClientCredentials(OriginAuth):
    """OAuth 2.0 client credentials (RFC 6749 §4.4), as the Microsoft identity platform speaks it.

    ``what`` names the source and the credential in messages; a token error is one line with the
    server's error code and description (``invalid_client``, ``AADSTS7000215: ...``), redacted."""

    SKEW_SECONDS = 60.0
    """A token is renewed this long before it expires."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str,
        origin: str,
        what: str,
        redact: Redactor,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(origin)
        self.token_url = token_url
        self.form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": scope,
        }
        self.what = what
        self.redact = redact
        self.clock = clock
        self.token: str | None = None
        self.expires_at = 0.0

    def _token_request(self) -> httpx.Request:
        return httpx.Request("POST", self.token_url, data=self.form, headers={"Accept": "application/json"})

    def _take(self, response: httpx.Response) -> None:
        where = safe_url(self.token_url)
        response.read()  # only token answers are read here: data pages stay streamed
        try:
            doc: Any = json.loads(response.content)
        except ValueError:
            doc = None
        if response.status_code in (429, 500, 502, 503, 504):
            # Transient: the session's retry policy tries the whole request again.
            raise BadBody(f"token endpoint {where} answered HTTP {response.status_code}")
        if response.status_code != 200 or not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            error = doc.get("error", "") if isinstance(doc, dict) else ""
            description = doc.get("error_description", "") if isinstance(doc, dict) else ""
            first = str(description).splitlines()[0] if description else ""
            detail = f"{error}: {first}" if error and first else error or first or "no access_token in the answer"
            raise PullError(
                self.redact(f"{self.what}: token request to {where} failed (HTTP {response.status_code}): {detail}")
            )
        self.token = doc["access_token"]
        try:
            lifetime = float(doc["expires_in"])  # 0 means "already expired", not "unknown"
        except (KeyError, TypeError, ValueError):
            lifetime = 3600.0
        self.expires_at = self.clock() + max(0.0, lifetime - self.SKEW_SECONDS)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self.applies(request):
            yield request
            return
        if self.token is None or self.clock() >= self.expires_at:
            self._take((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code == 401:
            # Revoked or expired early: one new token, one more try.
            self._take((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {self.token}"
            yield request
