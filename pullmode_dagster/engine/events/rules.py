"""The field rules: the one place a record's extracted values become a normalized event's fields,
or raise the reason it becomes a reject. Nothing is dropped silently, and a record is stored only
when both stores can keep it faithfully.

Design (the rules, the fast paths): docs/design/normalization.md#the-normalized-event
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from .codec import ReprFloat, dumps
from .codegen import compile_function
from .model import MAX_TOKENS, MAX_YEAR, MIN_YEAR, EventRow

Check = Literal["timestamp", "non_negative", "non_empty", "json"]
"""A kind of rule a stored field obeys. ``timestamp``: :data:`TIMESTAMP_FORMAT` text (UTC) in years
:data:`MIN_YEAR` to :data:`MAX_YEAR`; ``non_negative``: a number, 0 or more; ``non_empty``: text
other than ``""``; ``json``: JSON text."""

FIELD_CHECKS: dict[str, Check] = {
    "source_event_id": "non_empty",
    "event_timestamp": "timestamp",
    "cost_usd": "non_negative",
    "tokens_input": "non_negative",
    "tokens_output": "non_negative",
    "raw_payload": "json",
}
"""What every stored event satisfies, field by field: the normalized shape. :func:`normalize_row`
guarantees it (with stricter rules besides: finite, whole, at most :data:`MAX_TOKENS`, no NUL in a
key); each store generates its integrity predicate (``TraceStore.INVALID_ROW``) from it, so the two
stores flag the same rows, and the tests hold normalization to the same examples."""

_SHOWN = 200
"""At most this many characters of a value are quoted in a reason."""


class NormalizationError(ValueError):
    """Why a record cannot be normalized; becomes a Reject's reason."""


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


def stable_event_id(raw: Any) -> str:
    """Fallback ``source_event_id`` when the mapping has none: a hash of the record's canonical
    JSON (keys sorted), so the same record pulled twice gets the same id and is deduplicated."""
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class OutOfRange(NormalizationError):
    """A timestamp that is one, but outside years :data:`MIN_YEAR`-:data:`MAX_YEAR` in UTC."""


TIMESTAMP_RANGE = f"years {MIN_YEAR}-{MAX_YEAR} in UTC"
_ISO_YEAR = re.compile(r"\s*[+-]?(\d{4,6})-\d\d-\d\d", re.ASCII).match


def _out_of_range(value: Any) -> OutOfRange:
    return OutOfRange(f"event_timestamp is out of range ({TIMESTAMP_RANGE}): {show(value)}")


def _parse_iso(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip())
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        if (year := _ISO_YEAR(value)) and not MIN_YEAR <= int(year[1]) <= MAX_YEAR:
            raise _out_of_range(value) from None  # 0000 or 10000: a date no datetime holds
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
    """Fixed-width UTC text, :data:`TIMESTAMP_FORMAT` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``) with the year
    always four digits, which ``strftime`` does not promise below the year 1000."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"


# The common shape of a timestamp (UTC or naive, whole seconds, milli- or microseconds) is the
# stored text already but for the fraction: it is checked and rewritten without building a datetime.
# Its hour (``YYYY-MM-DDTHH``, shared by a pull's neighbouring events) is checked once, then remembered.
_HOUR = re.compile(r"[1-9]\d{3}-\d\d-\d\dT(?:[01]\d|2[0-3])", re.ASCII).fullmatch
_MINUTE_SECOND = frozenset(f":{m:02d}:{s:02d}" for m in range(60) for s in range(60))
_UTC_REST = re.compile(r"(?:\.(\d{6}|\d{3}))?(?:Z|\+00:00)?", re.ASCII).fullmatch
_KNOWN_REST = {
    "Z": ".000000Z",
    "": ".000000Z",
    "+00:00": ".000000Z",
    **{f".{ms:03d}Z": f".{ms:03d}000Z" for ms in range(1000)},  # JavaScript's toISOString()
}
_valid_hours: dict[str, bool] = {}


def _valid_hour(text: str) -> bool:
    """Whether ``text`` is ``YYYY-MM-DDTHH`` of a real date in years 1000-9999, remembered."""
    if len(_valid_hours) >= 100_000:
        _valid_hours.clear()
    try:
        valid = _HOUR(text) is not None and date.fromisoformat(text[:10]).year >= MIN_YEAR
    except ValueError:
        valid = False
    _valid_hours[text] = valid
    return valid


def normalize_timestamp(value: Any) -> str:
    """:func:`format_timestamp` of :func:`parse_timestamp`, the common shape rewritten as text."""
    if type(value) is str and value[13:19] in _MINUTE_SECOND:
        hour = value[:13]
        if _valid_hours.get(hour) or _valid_hour(hour):
            rest = value[19:]
            end = _KNOWN_REST.get(rest)
            if end is None and (fraction := _UTC_REST(rest)) is not None:
                end = f".{fraction.group(1):0<6}Z"
            if end is not None:
                return value[:19] + end
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


_MAX_FLOAT = sys.float_info.max


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
    if value is None:
        return 0
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


@dataclass(frozen=True)
class FieldRule:
    """One field of :data:`EventRow` as Python text over the value's variable ``{v}``: ``rule`` calls
    the field's rule; when ``common`` holds (its common case) the field is ``result``, no call made.

    The one table of the rules' common cases: every row is built by code generated from it
    (:func:`row_expression`), here for :func:`normalize_row` and in :mod:`.mapping` for each
    ``eventMapping``, so a common case is written once and a record normalizes the same either way."""

    field: str
    rule: str
    common: str | None = None
    result: str = "{v}"

    def expression(self, name: str) -> str:
        """This field's value, for the variable ``name``."""
        call = self.rule.format(v=name)
        if self.common is None:
            return call
        return f"({self.result.format(v=name)} if {self.common.format(v=name)} else {call})"


_TEXT = "type({v}) is str and {v}.isascii()"
_COUNT = "type({v}) is int and 0 <= {v} <= MAX_TOKENS"

ROW_RULES: tuple[FieldRule, ...] = (
    FieldRule("source_event_id", "normalize_event_id({v})", _TEXT + " and {v} and '\\x00' not in {v}"),
    FieldRule("event_timestamp", "normalize_timestamp({v})"),  # its common shape: see normalize_timestamp
    FieldRule("actor", "normalize_text({v}, 'actor')", _TEXT),
    FieldRule("action", "normalize_text({v}, 'action')", _TEXT),
    FieldRule("target", "normalize_text({v}, 'target')", _TEXT),
    # A plain float (-0.0 becomes 0.0).
    FieldRule(
        "cost_usd",
        "normalize_cost({v})",
        "(type({v}) is float or type({v}) is ReprFloat) and 0.0 <= {v} <= MAX_FLOAT",
        "{v} + 0.0",
    ),
    FieldRule("tokens_input", "normalize_count('tokens_input', {v})", _COUNT),
    FieldRule("tokens_output", "normalize_count('tokens_output', {v})", _COUNT),
)
"""Each mapped field's rule in ``MAPPED_FIELDS`` order (the first that fails is the reason)."""

ROW_NAMESPACE: dict[str, Any] = {
    "ReprFloat": ReprFloat,
    "MAX_FLOAT": _MAX_FLOAT,
    "MAX_TOKENS": MAX_TOKENS,
    "normalize_event_id": normalize_event_id,
    "normalize_timestamp": normalize_timestamp,
    "normalize_text": normalize_text,
    "normalize_cost": normalize_cost,
    "normalize_count": normalize_count,
}
"""The names :data:`ROW_RULES`' text uses, for the generated code's namespace."""


def row_expression(values: dict[str, str], unmapped: dict[str, str] | None = None) -> str:
    """The tuple of an :data:`EventRow`, as Python text: ``source_name``, each field of ``values``
    (field -> the variable holding its value) through :data:`ROW_RULES`, ``raw_payload`` and
    ``organization_id``. A field not in ``values`` is ``unmapped[field]``, the text of a constant."""
    fields = [
        rule.expression(values[rule.field]) if rule.field in values else (unmapped or {})[rule.field]
        for rule in ROW_RULES
    ]
    lines = ["source_name", *fields, "raw_payload", "organization_id"]
    return "(\n            " + ",\n            ".join(lines) + ",\n        )"  # a field a line, for tracebacks


_ROW_SOURCE = f"""\
def normalize_row(*, source_name, organization_id, raw_payload, source_event_id, event_timestamp,
                  actor=None, action=None, target=None, cost_usd=None, tokens_input=None, tokens_output=None):
    return {row_expression({rule.field: rule.field for rule in ROW_RULES})}
"""

normalize_row: Callable[..., EventRow] = compile_function(
    _ROW_SOURCE, "normalize_row", title="pullmode_dagster normalize_row", namespace=dict(ROW_NAMESPACE)
)
"""``normalize_row(*, source_name, organization_id, raw_payload, source_event_id, event_timestamp,
actor=None, action=None, target=None, cost_usd=None, tokens_input=None, tokens_output=None)``:
validate and coerce one record's extracted fields into an :data:`EventRow`, each field's rule in
:data:`ROW_RULES` order (the first that fails is the reason). Raises :class:`NormalizationError`.
Generated from :data:`ROW_RULES`, the rules' common cases inlined."""

_NONE_ROW = normalize_row(
    source_name="", organization_id=None, raw_payload="", source_event_id="x", event_timestamp="2026-01-01T00:00:00Z"
)
UNMAPPED: dict[str, str] = {rule.field: repr(value) for rule, value in zip(ROW_RULES[2:], _NONE_ROW[3:-2], strict=True)}
"""Each optional field's value (as Python text) when a mapping has no path for it: its rule's value of None."""
