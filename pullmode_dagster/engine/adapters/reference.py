"""What the reference connectors share (``claude_compliance``, ``openai_compliance``,
``copilot_studio``): the vendor's URL, auth, paging and mapping are fixed by the connector, so an
admin enters credentials and the one or two identifiers the vendor needs. An environment variable
may replace the vendor's endpoint, for tests and private gateways only; ``validate`` warns when one
is set."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any, ClassVar, get_args, get_origin

from pydantic import ValidationInfo, field_validator

from ..declare.models import ConfigProblem
from ..events.model import MAPPED_FIELDS
from .base import HttpSourceConfig

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


def rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, whole seconds unless there is a fraction: how the vendors' time
    filters take it."""
    value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace("+00:00", "Z")


def zoned_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp that carries its zone (a vendor's or a cursor's), else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def first_set(*values: Any) -> Any:
    """The first value that is set (not None, not an empty string): picking a record's field."""
    return next((v for v in values if v is not None and v != ""), None)


MAX_ACTOR_CHARS = 512
"""The longest actor a reference connector stores as it is. The Postgres store indexes ``actor``, and
an index entry holds at most 2704 bytes: a longer actor fails its whole batch (512 characters stay
below that even at 4 bytes each). The event model has no length rule of its own."""


def capped(value: Any, limit: int = MAX_ACTOR_CHARS) -> Any:
    """``value``, or, for text longer than ``limit`` characters, its start and the SHA-256 of the
    whole (``<start>...sha256:<16 hex digits>``), so two long values that share a start stay apart.
    The record keeps the whole value (``raw_payload``)."""
    if not isinstance(value, str) or len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    suffix = f"...sha256:{digest}"
    return value[: limit - len(suffix)] + suffix


def _is_tuple(annotation: Any) -> bool:
    """Whether a field's type is a tuple (``tuple[str, ...]``, or that or None)."""
    return get_origin(annotation) is tuple or any(get_origin(a) is tuple for a in get_args(annotation))


class ReferenceSource(HttpSourceConfig):
    """A one-click source: the vendor's API is built in. Limits may still be tuned."""

    FIXED_FIELDS: ClassVar[frozenset[str]] = FIXED_HTTP_FIELDS
    ENDPOINT_ENV: ClassVar[str]
    """The environment variable that replaces the vendor's endpoint (tests, private gateways)."""
    DEFAULT_ENDPOINT: ClassVar[str]

    @field_validator("*", mode="before")
    @classmethod
    def _lists_are_lists(cls, value: Any, info: ValidationInfo) -> Any:
        """A list in the source file (``eventTypes``, ``activityTypes``, ...) is kept as a tuple; a value
        that is no list is told so in the words of every list field (``botIds``), not "valid tuple"."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None or not _is_tuple(field.annotation) or isinstance(value, list | tuple):
            return value
        if value is None and type(None) in get_args(field.annotation):
            return value  # an optional list left empty: unset
        raise ValueError("Input should be a valid list")

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


__all__ = [
    "FIXED_HTTP_FIELDS",
    "MAPPED_FIELDS",
    "MAX_ACTOR_CHARS",
    "ReferenceSource",
    "capped",
    "first_set",
    "rfc3339",
    "zoned_time",
]
