"""The normalized event: the one place where a record becomes (or fails to become) one.

Every adapter hands raw records to :func:`normalize`; whatever it returns is either a valid
:class:`NormalizedEvent` or a :class:`Reject` that says why. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAPPED_FIELDS = (
    "source_event_id",
    "event_timestamp",
    "actor",
    "action",
    "target",
    "cost_usd",
    "tokens_input",
    "tokens_output",
)
"""The normalized fields ``eventMapping`` fills, in the seed's order."""

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""Fixed width, so timestamps sort correctly as text in every store."""


@dataclass(slots=True, frozen=True)
class NormalizedEvent:
    """The seed's canonical shape, plus where it came from."""

    source_name: str
    source_event_id: str
    event_timestamp: str
    actor: str | None
    action: str | None
    target: str | None
    cost_usd: float
    tokens_input: int
    tokens_output: int
    raw_payload: str
    organization_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True, frozen=True)
class Reject:
    """A record that could not be normalized, kept with the reason and where it was found."""

    source_name: str
    reason: str
    raw_record: str
    location: str

    @property
    def record_hash(self) -> str:
        return hashlib.sha256(self.raw_record.encode("utf-8", "surrogatepass")).hexdigest()


class NormalizationError(ValueError):
    """Why a record cannot be normalized; becomes a Reject's reason."""


dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
"""Compact JSON text, as stored in ``raw_payload`` (one encoder, built once)."""


def stable_event_id(raw: Any) -> str:
    """Fallback ``source_event_id`` when the mapping has none: a hash of the record's canonical
    JSON (keys sorted), so the same record pulled twice gets the same id and is deduplicated."""
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 (any offset; naive means UTC) or epoch seconds, milliseconds, micro- or nanoseconds."""
    if isinstance(value, bool) or value is None:
        raise NormalizationError(f"event_timestamp is not a timestamp: {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise NormalizationError(f"event_timestamp is not ISO 8601 or epoch: {value!r}") from None
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        value = number
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise NormalizationError(f"event_timestamp is not finite: {value!r}")
        magnitude = abs(value)
        # Epoch seconds pass 1e11 only in the year 5138; anything larger is a finer unit.
        if magnitude >= 1e17:
            value = value / 1e9
        elif magnitude >= 1e14:
            value = value / 1e6
        elif magnitude >= 1e11:
            value = value / 1e3
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise NormalizationError(f"event_timestamp is out of range: {value!r}") from None
    raise NormalizationError(f"event_timestamp is not a timestamp: {type(value).__name__}")


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def normalize_timestamp(value: Any) -> str:
    return format_timestamp(parse_timestamp(value))


def _number(field: str, value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise NormalizationError(f"{field} is not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise NormalizationError(f"{field} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise NormalizationError(f"{field} is not finite: {value!r}")
    if number < 0:
        raise NormalizationError(f"{field} is negative: {value!r}")
    return number


def normalize_cost(value: Any) -> float:
    return _number("cost_usd", value)


def normalize_count(field: str, value: Any) -> int:
    number = _number(field, value)
    if not number.is_integer():
        raise NormalizationError(f"{field} is not a whole number: {value!r}")
    return int(number)


def normalize_text(value: Any) -> str | None:
    """actor/action/target: strings as is, scalars as text, objects as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return dumps(value)


def normalize_event_id(value: Any) -> str:
    if isinstance(value, bool) or value is None or value == "":
        raise NormalizationError(f"source_event_id is empty: {value!r}")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise NormalizationError(f"source_event_id is not a string or number: {type(value).__name__}")


def normalize(
    *,
    source_name: str,
    organization_id: str | None,
    raw_payload: str,
    source_event_id: Any,
    event_timestamp: Any,
    actor: Any = None,
    action: Any = None,
    target: Any = None,
    cost_usd: Any = None,
    tokens_input: Any = None,
    tokens_output: Any = None,
) -> NormalizedEvent:
    """Validate and coerce one record's extracted fields. Raises :class:`NormalizationError`."""
    return NormalizedEvent(
        source_name=source_name,
        source_event_id=normalize_event_id(source_event_id),
        event_timestamp=normalize_timestamp(event_timestamp),
        actor=normalize_text(actor),
        action=normalize_text(action),
        target=normalize_text(target),
        cost_usd=normalize_cost(cost_usd),
        tokens_input=normalize_count("tokens_input", tokens_input),
        tokens_output=normalize_count("tokens_output", tokens_output),
        raw_payload=raw_payload,
        organization_id=organization_id,
    )
