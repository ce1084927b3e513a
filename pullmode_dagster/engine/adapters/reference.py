"""What the reference connectors share (``claude_compliance``, ``openai_compliance``,
``copilot_studio``): the vendor's URL, auth, paging and mapping are fixed by the connector, so an
admin enters credentials and the one or two identifiers the vendor needs. An environment variable
may replace the vendor's endpoint, for tests and private gateways only; ``validate`` warns when one
is set."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import Field

from ..config import ConfigProblem, SourceConfig
from ..events import MAPPED_FIELDS
from ..http import DEFAULT_MAX_RESPONSE_BYTES

FIXED_HTTP_FIELDS = frozenset(
    {
        "url",
        "method",
        "headers",
        "params",
        "body",
        "authMode",
        "auth_mode",
        "eventsJsonPath",
        "events_json_path",
        "cursorJsonPath",
        "cursor_json_path",
        "cursorQueryParam",
        "cursor_query_param",
        "cursorHeader",
        "cursor_header",
        "hasMoreJsonPath",
        "has_more_json_path",
        "incrementalParams",
        "incremental_params",
        "windowParams",
        "window_params",
        "eventMapping",
        "event_mapping",
    }
)


class ReferenceSource(SourceConfig):
    """A one-click source: the vendor's API is built in. Limits may still be tuned."""

    FIXED_FIELDS: ClassVar[frozenset[str]] = FIXED_HTTP_FIELDS
    ENDPOINT_ENV: ClassVar[str]
    """The environment variable that replaces the vendor's endpoint (tests, private gateways)."""
    DEFAULT_ENDPOINT: ClassVar[str]

    max_pages_per_run: int = Field(default=50, ge=1, le=100_000)
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_requests_per_second: float | None = Field(default=None, gt=0)
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024, le=1 << 34)

    def endpoint(self) -> str:
        """The vendor's endpoint, or its override from the environment."""
        return (os.environ.get(self.ENDPOINT_ENV) or self.DEFAULT_ENDPOINT).rstrip("/")

    def warnings(self) -> list[ConfigProblem]:
        override = os.environ.get(self.ENDPOINT_ENV)
        if not override:
            return []
        return [
            (
                "adapter",
                f"{self.ENDPOINT_ENV} is set: requests go to {override.split('?')[0]} instead of "
                f"{self.DEFAULT_ENDPOINT} (meant for tests and private gateways only)",
            )
        ]

    def extract(self, record: dict[str, Any]) -> dict[str, Any]:
        """The normalized fields of one vendor record (see ``MAPPED_FIELDS``)."""
        raise NotImplementedError


__all__ = ["FIXED_HTTP_FIELDS", "MAPPED_FIELDS", "ReferenceSource"]
