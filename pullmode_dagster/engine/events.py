"""The normalized event: the one place where a record becomes (or fails to become) one.

Every adapter hands raw records to :func:`normalize`; whatever it returns is either a valid
:class:`NormalizedEvent` or a :class:`Reject` that says why. Nothing is dropped silently.

A record is stored only when both stores can keep it faithfully; anything else is rejected with a
reason, and the Reject itself is always storable text:

- **Lone surrogates** (``"\\ud800"``: ``json.loads`` produces them) anywhere in the record: rejected.
  Such text is not Unicode, so it cannot be written as UTF-8, and its ``\\uXXXX`` escape breaks
  ``raw_payload::json`` on Postgres (the row would fail the integrity check and every JSON query
  over it). The reject keeps the record as ASCII-escaped JSON, which loses nothing.
- **NaN and Infinity** anywhere in the record: rejected (JSON cannot represent them, so there is no
  valid ``raw_payload``); the reject keeps them spelled ``NaN`` / ``Infinity``.
- **Nesting too deep to serialize**, circular or otherwise unserializable records: rejected; the
  reject keeps an iterative (depth-proof) rendering.
- **Timestamps**: years 1000-9999 in UTC only. Earlier years, or an offset that moves the instant
  outside 0001-9999, are rejected ("out of range"), so the stored text is always fixed width.
- **Tokens**: whole numbers 0 to 2^63-1 (a signed 64-bit integer: SQLite INTEGER, Postgres bigint),
  checked exactly on integers and integer strings; above that, rejected as out of range.
- **Cost**: a finite float; numbers or strings that overflow a float are rejected as out of range.
- **source_event_id** holding a NUL character: rejected (Postgres text cannot hold NUL and a key must
  be the same on both stores). A NUL in ``actor``/``action``/``target`` is kept (Postgres stores
  U+FFFD there; ``raw_payload`` keeps the ``\\u0000`` escape).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
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
"""Fixed width, so timestamps sort correctly as text in every store (years 1000-9999)."""

MIN_YEAR = 1000
"""Earliest year stored: below it the text is not fixed-width on every store."""

MAX_TOKENS = 2**63 - 1
"""Largest token count: a signed 64-bit integer (SQLite INTEGER, Postgres bigint)."""

_SHOWN = 200
"""At most this many characters of a value are quoted in a reason."""


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
    """A record that could not be normalized, kept with the reason and where it was found.

    Its text is always storable: a lone surrogate in ``reason``, ``raw_record`` or ``location``
    (whoever built the reject) is written as its ``\\uXXXX`` escape."""

    source_name: str
    reason: str
    raw_record: str
    location: str

    def __post_init__(self) -> None:
        for name in ("reason", "raw_record", "location"):
            text = getattr(self, name)
            if not text.isascii():
                safe = storable_text(text)
                if safe is not text:
                    object.__setattr__(self, name, safe)

    @property
    def record_hash(self) -> str:
        return hashlib.sha256(self.raw_record.encode("utf-8", "surrogatepass")).hexdigest()


class NormalizationError(ValueError):
    """Why a record cannot be normalized; becomes a Reject's reason."""


dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False).encode
"""Compact JSON text, as stored in ``raw_payload`` (one encoder, built once). NaN and Infinity raise
ValueError: they are not JSON."""

_ascii_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode


def is_utf8(text: str) -> bool:
    """False when ``text`` holds a lone surrogate (it cannot be written as UTF-8)."""
    if text.isascii():  # O(1) in CPython
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str) -> str:
    """``text``, with any lone surrogate written as its ``\\uXXXX`` escape (for reject text only)."""
    if is_utf8(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def show(value: Any) -> str:
    """``repr(value)`` for a reason: ASCII-safe for surrogates, shortened, never raising."""
    try:
        text = repr(value)
    except ValueError:  # an int too large to write in decimal
        return f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else "<unprintable>"
    except RecursionError:
        return f"<a deeply nested {type(value).__name__}>"
    text = storable_text(text)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def unserializable_reason(exc: BaseException) -> str:
    """Why ``dumps`` failed, in words."""
    if isinstance(exc, RecursionError):
        return "record is nested too deeply to write as JSON"
    message = str(exc)
    if "JSON compliant" in message:
        return "record holds NaN or Infinity, which JSON cannot represent"
    if "Circular reference" in message:
        return "record refers to itself (circular reference)"
    if "integer string conversion" in message:
        return "record holds an integer too large to write as JSON (over 4300 digits)"
    return f"record is not JSON-serializable: {message}"


_SURROGATE = re.compile("[\ud800-\udfff]")


def invalid_unicode_reason(text: str) -> str:
    """The reason for a record whose JSON text holds a lone surrogate (``is_utf8`` said False)."""
    found = _SURROGATE.search(text)
    which = f"\\u{ord(found.group()):04x}" if found else "?"
    return f"record holds invalid Unicode: a lone surrogate ({which}), which cannot be stored as text"


def raw_text(raw: Any) -> str:
    """A reject's ``raw_record`` when the record has no storable compact JSON: ASCII-escaped JSON
    (lone surrogates as ``\\uXXXX``, NaN and Infinity as Python's json spells them), else, for a
    record too deep, circular or holding huge integers, an iterative rendering that never fails."""
    try:
        return _ascii_dumps(raw)
    except (TypeError, ValueError, RecursionError):
        return _render(raw)


class _Token(str):
    """Literal output of :func:`_render`, as opposed to a value still to render."""


class _Close:
    __slots__ = ("key", "text")

    def __init__(self, text: str, key: int):
        self.text, self.key = text, key


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, int):
        try:
            return int.__repr__(value)
        except ValueError:  # over 4300 digits: hex is exact and not limited
            return hex(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    try:
        return encode_basestring_ascii(str(value))
    except Exception:
        return encode_basestring_ascii(f"<{type(value).__name__}>")


def _render(raw: Any) -> str:
    """JSON-like ASCII text of ``raw`` with an explicit stack: no depth limit, cycles marked."""
    out: list[str] = []
    todo: list[Any] = [raw]
    open_ids: set[int] = set()
    while todo:
        item = todo.pop()
        if type(item) is _Token:
            out.append(item)
        elif type(item) is _Close:
            out.append(item.text)
            open_ids.discard(item.key)
        elif isinstance(item, dict | list | tuple):
            key = id(item)
            if key in open_ids:
                out.append('"<circular>"')
                continue
            open_ids.add(key)
            parts: list[Any] = []
            if isinstance(item, dict):
                out.append("{")
                for i, (k, v) in enumerate(item.items()):
                    parts.append(
                        _Token(("," if i else "") + (_scalar(k) if isinstance(k, str) else f'"{_scalar(k)}"') + ":")
                    )
                    parts.append(v)
                parts.append(_Close("}", key))
            else:
                out.append("[")
                for i, v in enumerate(item):
                    if i:
                        parts.append(_Token(","))
                    parts.append(v)
                parts.append(_Close("]", key))
            todo.extend(reversed(parts))
        else:
            out.append(_scalar(item))
    return "".join(out)


def stable_event_id(raw: Any) -> str:
    """Fallback ``source_event_id`` when the mapping has none: a hash of the record's canonical
    JSON (keys sorted), so the same record pulled twice gets the same id and is deduplicated."""
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _out_of_range(value: Any) -> NormalizationError:
    return NormalizationError(f"event_timestamp is out of range (years {MIN_YEAR}-9999 in UTC): {show(value)}")


def _parse_iso(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip())
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise NormalizationError(f"event_timestamp is not ISO 8601 or epoch: {show(value)}") from None
    except OverflowError:  # the offset moves it before year 1 or after 9999
        raise _out_of_range(value) from None
    if parsed.year < MIN_YEAR:
        raise _out_of_range(value)
    return parsed


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 (any offset; naive means UTC) or epoch seconds, milliseconds, micro- or nanoseconds.

    The result is in UTC, in years 1000-9999; anything else raises :class:`NormalizationError`."""
    original = value
    if isinstance(value, bool) or value is None:
        raise NormalizationError(f"event_timestamp is not a timestamp: {show(value)}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return _parse_iso(original)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise NormalizationError(f"event_timestamp is not finite: {show(original)}")
        try:
            magnitude = abs(value)
            # Epoch seconds pass 1e11 only in the year 5138; anything larger is a finer unit.
            if magnitude >= 1e17:
                value = value / 1e9
            elif magnitude >= 1e14:
                value = value / 1e6
            elif magnitude >= 1e11:
                value = value / 1e3
            parsed = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise _out_of_range(original) from None
        if parsed.year < MIN_YEAR:
            raise _out_of_range(original)
        return parsed
    raise NormalizationError(f"event_timestamp is not a timestamp: {type(value).__name__}")


def format_timestamp(value: datetime) -> str:
    """Fixed-width UTC text, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (the year always has four digits)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"


def normalize_timestamp(value: Any) -> str:
    return format_timestamp(parse_timestamp(value))


def _number(field: str, value: Any) -> float:
    """A finite, non-negative float (-0.0 becomes 0.0)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise NormalizationError(f"{field} is not a number: {show(value)}")
    try:
        number = float(value)
    except ValueError:
        raise NormalizationError(f"{field} is not a number: {show(value)}") from None
    except OverflowError:  # an int beyond the float range
        raise NormalizationError(f"{field} is out of range: {show(value)}") from None
    if not math.isfinite(number):
        # "1e999" overflows to inf: out of range; "inf", "NaN" or a float inf are not finite.
        if math.isinf(number) and not (isinstance(value, float) or "inf" in value.lower()):
            raise NormalizationError(f"{field} is out of range: {show(value)}")
        raise NormalizationError(f"{field} is not finite: {show(value)}")
    if number < 0:
        raise NormalizationError(f"{field} is negative: {show(value)}")
    return number + 0.0


def normalize_cost(value: Any) -> float:
    return _number("cost_usd", value)


def _count_in_range(field: str, value: Any, number: int) -> int:
    if number < 0:
        raise NormalizationError(f"{field} is negative: {show(value)}")
    if number > MAX_TOKENS:
        raise NormalizationError(f"{field} is out of range (above 2^63-1): {show(value)}")
    return number


def normalize_count(field: str, value: Any) -> int:
    """A whole number 0..2^63-1; integers and integer strings are checked exactly (no float)."""
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value  # the common case
    if isinstance(value, int) and not isinstance(value, bool):
        return _count_in_range(field, value, int(value))
    if isinstance(value, str):
        try:
            return _count_in_range(field, value, int(value))
        except ValueError as exc:
            if isinstance(exc, NormalizationError):
                raise
            # Not an integer string ("2.0", "1e3", "abc"): the float rules below.
    number = _number(field, value)
    if not number.is_integer():
        raise NormalizationError(f"{field} is not a whole number: {show(value)}")
    return _count_in_range(field, value, int(number))


def normalize_text(value: Any, field: str = "text") -> str | None:
    """actor/action/target: strings as is, scalars as text, objects as compact JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int):
        try:
            text = str(value)
        except ValueError:  # over 4300 digits
            raise NormalizationError(f"{field} is out of range: {show(value)}") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise NormalizationError(f"{field} is not finite: {show(value)}")
        text = str(value)
    else:
        try:
            text = dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise NormalizationError(f"{field}: {unserializable_reason(exc)}") from None
    if not is_utf8(text):
        raise NormalizationError(f"{field} holds invalid Unicode (a lone surrogate): {show(text)}")
    return text


def normalize_event_id(value: Any) -> str:
    if isinstance(value, bool) or value is None or value == "":
        raise NormalizationError(f"source_event_id is empty: {show(value)}")
    if isinstance(value, str):
        text = value
    elif isinstance(value, int):
        try:
            text = str(value)
        except ValueError:
            raise NormalizationError(f"source_event_id is out of range: {show(value)}") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise NormalizationError(f"source_event_id is not finite: {show(value)}")
        text = str(value)
    else:
        raise NormalizationError(f"source_event_id is not a string or number: {type(value).__name__}")
    if "\x00" in text:
        raise NormalizationError(f"source_event_id holds a NUL character, which Postgres cannot store: {show(text)}")
    if not is_utf8(text):
        raise NormalizationError(f"source_event_id holds invalid Unicode (a lone surrogate): {show(text)}")
    return text


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
        actor=normalize_text(actor, "actor"),
        action=normalize_text(action, "action"),
        target=normalize_text(target, "target"),
        cost_usd=normalize_cost(cost_usd),
        tokens_input=normalize_count("tokens_input", tokens_input),
        tokens_output=normalize_count("tokens_output", tokens_output),
        raw_payload=raw_payload,
        organization_id=organization_id,
    )
