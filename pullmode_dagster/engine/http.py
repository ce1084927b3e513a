"""The one HTTP client setup and the one retry policy.

Every request of every adapter goes through :class:`HttpSession.send`: timeouts, retries on 429,
5xx and network errors with exponential backoff that honours ``Retry-After``, an optional request
rate budget, and messages that never carry a secret. Tests hand in an ``httpx`` transport instead of
patching anything.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from .. import __version__
from .credentials import Redactor
from .errors import PullError

USER_AGENT = f"pullmode-dagster/{__version__}"
log = logging.getLogger("pullmode.http")


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a request again, and how long to wait first."""

    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    retry_after_max: float = 300.0
    retry_statuses: frozenset[int] = field(default=frozenset({408, 425, 429, 500, 502, 503, 504}))

    def backoff(self, attempt: int) -> float:
        """Exponential with jitter: attempt 1 waits about ``backoff_initial``, then doubles."""
        base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2)

    def wait_before_retry(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        return self.backoff(attempt)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def safe_url(url: httpx.URL | str) -> str:
    """Scheme, host and path only: query strings often carry tokens."""
    url = httpx.URL(str(url))
    return str(url.copy_with(query=None, fragment=None))


def same_origin(a: httpx.URL | str, b: httpx.URL | str) -> bool:
    """Credentials are only ever sent to the configured origin (scheme, host and port)."""
    a, b = httpx.URL(str(a)), httpx.URL(str(b))
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class HttpSession:
    """One pull's HTTP client. Use as a context manager; ``requests`` counts what was sent."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = None,
        redactor: Redactor | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | logging.LoggerAdapter[Any] | Any = log,
    ):
        self.retry = retry or RetryPolicy()
        self.redact = redactor or Redactor()
        self._sleep = sleep
        self._log = logger
        self._min_interval = 1.0 / max_requests_per_second if max_requests_per_second else 0.0
        self._last_sent = 0.0
        self.requests = 0
        self.retries = 0
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _pace(self) -> None:
        if self._min_interval:
            wait = self._last_sent + self._min_interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last_sent = time.monotonic()

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        content: str | bytes | None = None,
    ) -> httpx.Response:
        """Send with retries. Returns the final response (any status the policy does not retry);
        raises :class:`PullError` when every attempt failed. ``what`` names the request in messages."""
        where = self.redact(safe_url(url))
        problem = ""
        for attempt in range(1, self.retry.max_attempts + 1):
            self._pace()
            self.requests += 1
            response: httpx.Response | None = None
            try:
                response = self._client.request(method, url, headers=headers, params=params, content=content)
            except httpx.TimeoutException:
                problem = "timed out"
            except httpx.TransportError as exc:
                problem = f"network error: {self.redact(type(exc).__name__)}: {self.redact(exc)}"
            else:
                if response.status_code not in self.retry.retry_statuses:
                    return response
                problem = f"HTTP {response.status_code}"
            if attempt == self.retry.max_attempts:
                break
            wait = self.retry.wait_before_retry(attempt, response)
            self.retries += 1
            self._log.warning(
                f"{what}: {problem} from {where}; retry {attempt}/{self.retry.max_attempts - 1} in {wait:.1f}s"
            )
            self._sleep(wait)
        raise PullError(f"{what}: {problem} from {where}, gave up after {self.retry.max_attempts} attempts")
