"""The demo API: feeds shaped like the vendors' documented APIs, on loopback (Copilot Studio's
Dataverse and identity platform are ``vendors/copilot.py``, started beside it).

Design (the routes, the time grid): docs/design/demo.md#the-demo-api
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from .server import LoopbackServer, Request, Response
from .vendors.claude import PATH as CLAUDE_PATH
from .vendors.claude import ActivityFeedAPI, mixed_activities

DEMO_PORT = 8787
DEMO_TOKEN = "demo-token-not-a-secret"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
USERS = ("ana@acme.example", "bo@acme.example", "chen@acme.example", "dee@acme.example", "eli@acme.example")
MODELS = ("claude-sonnet-4", "claude-haiku-4", "gpt-5", "gpt-5-mini")


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pick(seq: tuple[str, ...], k: int, salt: str) -> str:
    return seq[int(hashlib.md5(f"{salt}{k}".encode()).hexdigest(), 16) % len(seq)]


class DemoFeed:
    """The indices of events visible now, on the fixed grid."""

    def __init__(self, *, spacing: int, history: timedelta, now: Any = None):
        self.spacing = spacing
        self.history = history
        self._now = now or (lambda: datetime.now(UTC))

    def indices(self, *, after: datetime | None = None) -> range:
        now = self._now()
        first_time = max(now - self.history, after + timedelta(seconds=1) if after else EPOCH)
        first = max(0, -(-int((first_time - EPOCH).total_seconds()) // self.spacing))
        last = int((now - EPOCH).total_seconds()) // self.spacing
        return range(first, last + 1)

    def time(self, k: int) -> datetime:
        return EPOCH + timedelta(seconds=k * self.spacing)


def _after(text: str | None) -> datetime | None:
    if not text:
        return None
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class DemoApi:
    """Route handlers over the feeds; ``server`` serves them."""

    def __init__(self, *, port: int = DEMO_PORT, token: str = DEMO_TOKEN, now: Any = None):
        self.token = token
        # The Anthropic Compliance Activity Feed (vendors/claude.py): one activity every 2 minutes
        # over the last day, in the documented shapes, the newest older than the connector's settle
        # margin (settleSeconds, 5 minutes by default) so that the first pull reads every one.
        self.claude = ActivityFeedAPI(token)
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1, minutes=10)
        self.claude.add(*mixed_activities(720, start, spacing=timedelta(minutes=2)))
        self.usage = DemoFeed(spacing=90, history=timedelta(days=1), now=now)
        self.server = LoopbackServer(
            {
                CLAUDE_PATH: self.claude,
                "/v1/usage/events": self.usage_events,
            },
            port=port,
        )

    def _denied(self, request: Request, header: str, expected: str) -> Response | None:
        if request.header(header) != expected:
            return Response(401, {"error": {"type": "authentication_error", "message": "invalid credentials"}})
        return None

    def usage_events(self, request: Request) -> Response:
        denied = self._denied(request, "authorization", f"Bearer {self.token}")
        if denied:
            return denied
        limit = min(int(request.arg("limit") or 200), 1000)
        ks = list(self.usage.indices(after=_after(request.arg("since"))))
        offset = int(request.arg("cursor") or 0)
        page = ks[offset : offset + limit]
        data = []
        for k in page:
            event: dict[str, Any] = {
                "id": f"use_{k}",
                "timestamp": int(self.usage.time(k).timestamp() * 1000),
                "user": _pick(USERS, k, "x"),
                "operation": "completion",
                "model": _pick(MODELS, k, "y"),
                "usage": {"input_tokens": 200 + k % 800, "output_tokens": 50 + k % 300},
                "cost": {"usd": round((200 + k % 800) * 3e-6 + (50 + k % 300) * 15e-6, 6)},
            }
            if k % 97 == 0:
                event["timestamp"] = None  # a record the source cannot date: it becomes a reject
            data.append(event)
        more = offset + limit < len(ks)
        return Response(200, {"data": data, "next_cursor": str(offset + limit) if more else None})
