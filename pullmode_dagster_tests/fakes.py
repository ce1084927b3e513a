"""Fake vendor APIs for tests: paginated event feeds in the styles the adapters must handle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pullmode_dagster.demo.server import Request, Response
from pullmode_dagster.engine.events.mapping import EventMapper
from pullmode_dagster.engine.events.model import NormalizedEvent
from pullmode_dagster.engine.events.rejects import Reject

T0 = datetime(2026, 3, 1, tzinfo=UTC)

EVENT_MAPPING = {
    "source_event_id": "$.id",
    "event_timestamp": "$.created_at",
    "actor": "$.actor.email",
    "action": "$.type",
    "target": "$.model",
    "cost_usd": "$.usage.cost_usd",
    "tokens_input": "$.usage.input_tokens",
    "tokens_output": "$.usage.output_tokens",
}
"""The eventMapping for the events ``make_events`` builds."""


def map_one(mapper: EventMapper, raw: Any, location: str, *, plain: bool = False) -> NormalizedEvent | Reject:
    """One record through a pull's own path (:meth:`EventMapper.map_page`): its event, or its reject
    named ``location``. ``plain``: ``raw`` is plain JSON as ``decode_json`` decodes it."""
    events, rejects = mapper.map_page([raw], location=location, where=lambda _: location, plain=plain)
    return events[0] if events else rejects[0]


def make_events(n: int, *, start: int = 0, t0: datetime = T0) -> list[dict[str, Any]]:
    """``n`` audit events, oldest first, one minute apart, ids ``evt_<i>``."""
    return [
        {
            "id": f"evt_{i:05d}",
            "created_at": (t0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
            "type": "completion",
            "model": "claude-sonnet",
            "actor": {"email": f"user{i % 7}@acme.example"},
            "usage": {"cost_usd": 0.25, "input_tokens": 100 + i, "output_tokens": 20},
        }
        for i in range(start, start + n)
    ]


class CursorFeed:
    """``{"data": [...], "next_cursor": "<offset>"}``, the body-cursor style; supports
    ``created_after`` (an incremental filter), an auth check, and failing after some pages."""

    def __init__(self, events: list[dict[str, Any]], *, page_size: int = 10, token: str | None = None):
        self.events = events
        self.page_size = page_size
        self.token = token
        self.fail_after_pages: int | None = None
        self.served_pages = 0

    def visible(self, request: Request) -> list[dict[str, Any]]:
        after = request.arg("created_after")
        events = self.events
        if after:
            bound = datetime.fromisoformat(after)
            events = [e for e in events if datetime.fromisoformat(e["created_at"]) > bound]
        return events

    def __call__(self, request: Request) -> Response:
        if self.token is not None and request.header("authorization") != f"Bearer {self.token}":
            return Response(401, {"error": "invalid token"})
        if self.fail_after_pages is not None and self.served_pages >= self.fail_after_pages:
            return Response(500, {"error": "internal"})
        self.served_pages += 1
        events = self.visible(request)
        offset = int(request.arg("cursor") or 0)
        page = events[offset : offset + self.page_size]
        more = offset + self.page_size < len(events)
        return Response(200, {"data": page, "next_cursor": str(offset + self.page_size) if more else None})
