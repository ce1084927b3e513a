"""The one retry policy, exercised through httpx.MockTransport: no sockets, no patching."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import httpx
import pytest

from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.fetch.redaction import Redactor
from pullmode_dagster.engine.fetch.session import HttpSession, RetryPolicy, parse_retry_after

from .helpers import Sleeps


def session(responses: list[httpx.Response | Exception], sleeps: Sleeps, **kw: object) -> HttpSession:
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    policy = RetryPolicy(max_attempts=4, backoff_initial=0.5, backoff_max=4)
    return HttpSession(retry=policy, transport=httpx.MockTransport(handle), sleep=sleeps, **kw)  # type: ignore[arg-type]


def test_retry_after_seconds_is_honoured_on_429(sleeps: Sleeps) -> None:
    http = session([httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json={})], sleeps)
    assert http.send("GET", "https://api.example/x", what="t").status_code == 200
    assert sleeps == [7.0]
    assert http.requests == 2


def test_5xx_and_timeouts_back_off_exponentially(sleeps: Sleeps) -> None:
    http = session(
        [httpx.Response(503), httpx.ReadTimeout("slow"), httpx.Response(502), httpx.Response(200, json={})],
        sleeps,
    )
    assert http.send("GET", "https://api.example/x", what="t").status_code == 200
    assert len(sleeps) == 3
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0 and 1.0 <= sleeps[2] <= 2.0


def test_gives_up_with_a_clear_error(sleeps: Sleeps) -> None:
    http = session([httpx.Response(500)] * 4, sleeps)
    with pytest.raises(PullError, match=r"page 3: HTTP 500 from https://api.example/x, gave up after 4 attempts"):
        http.send("GET", "https://api.example/x?token=abc", what="page 3")
    assert http.requests == 4


def test_client_errors_are_not_retried(sleeps: Sleeps) -> None:
    http = session([httpx.Response(403)], sleeps)
    assert http.send("GET", "https://api.example/x", what="t").status_code == 403
    assert sleeps == []


def test_network_error_message_is_redacted(sleeps: Sleeps) -> None:
    secret = "tok-123456789"
    http = session([httpx.ConnectError(f"cannot reach host for {secret}")] * 4, sleeps, redactor=Redactor([secret]))
    with pytest.raises(PullError) as info:
        http.send("GET", f"https://api.example/x/{secret}", what="t")
    assert secret not in str(info.value)
    assert "***" in str(info.value)


def test_rate_budget_spaces_requests(sleeps: Sleeps) -> None:
    http = session([httpx.Response(200, json={})] * 3, sleeps, max_requests_per_second=2)
    for _ in range(3):
        http.send("GET", "https://api.example/x", what="t")
    assert len(sleeps) == 2
    assert all(0.3 < s <= 0.5 for s in sleeps)


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_one_tls_context_per_process_and_ca_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every session shares the process's TLS context (loading the CA bundle per client cost a quiet
    poll more than its request); a different SSL_CERT_FILE still gets its own."""
    import certifi

    from pullmode_dagster.engine.fetch.session import tls_context

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    default = tls_context()
    assert tls_context() is default and default.verify_mode == ssl.CERT_REQUIRED
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    own = tls_context()
    assert own is not default and tls_context() is own
