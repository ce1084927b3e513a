"""Retention and erasure, the parts that are not SQL: how old is too old, and whether a rejected
record mentions an actor (a reject has no ``actor`` column: it could not be normalized).

What ``pullmode prune`` and ``pullmode erase`` do with them is in docs/retention-and-erasure.md.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, time, timedelta

from ..errors import PullmodeError
from ..events.rules import show

MAX_RETENTION_DAYS = 36_500
"""A retention beyond a century is a typo (and keeps everything this project can store anyway)."""
RETENTION_ENV = "PULLMODE_RETENTION_DAYS"
"""The store's retention in days, for every source without ``retentionDays`` (unset: kept forever)."""


def check_days(days: int, *, what: str) -> int:
    """``days`` as a retention, or an error naming ``what`` set it."""
    if days < 1:
        raise PullmodeError(f"{what}: must be at least 1 day, got {days}")
    if days > MAX_RETENTION_DAYS:
        raise PullmodeError(f"{what}: at most {MAX_RETENTION_DAYS} days, got {days}")
    return days


def store_retention_days() -> int | None:
    """``$PULLMODE_RETENTION_DAYS``: None when unset or empty; anything but a whole number of days
    from 1 is an error (a typo must not mean "keep forever", nor "delete everything")."""
    raw = os.environ.get(RETENTION_ENV, "").strip()
    if not raw:
        return None
    try:
        days = int(raw)
    except ValueError:
        raise PullmodeError(f"{RETENTION_ENV}: not a whole number of days: {show(raw)}") from None
    return check_days(days, what=RETENTION_ENV)


def cutoff(days: int, now: datetime | None = None) -> datetime:
    """Events dated before this are past a retention of ``days``: midnight UTC, ``days`` days before
    today. Whole UTC days, so two runs on one day (a dry run, then the prune) delete the same rows,
    and a daily partition is deleted whole, never cut in two."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=days), time(), tzinfo=UTC)


_DELIMITERS = frozenset(" \t\r\n\"'`,;:|<>()[]{}=/\\")
"""What may stand either side of an actor inside a longer text: ``alice@acme.example`` is in
``"Alice <alice@acme.example>"`` and ``users/alice@acme.example``, but not in
``malice@acme.example`` nor ``alice@acme.example.org``."""


def spellings(value: str) -> list[str]:
    """``value`` as it may be written in a record's raw text: itself and its JSON escapes."""
    return list(dict.fromkeys([value, json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1]]))


def delimited(text: str, value: str) -> bool:
    """Whether ``value`` occurs in ``text`` as a whole (text, or delimiters, either side)."""
    at = text.find(value)
    while at >= 0:
        end = at + len(value)
        if (at == 0 or text[at - 1] in _DELIMITERS) and (end == len(text) or text[end] in _DELIMITERS):
            return True
        at = text.find(value, at + 1)
    return False


def mentions(record: str, value: str) -> bool:
    """Whether a rejected record's raw text mentions ``value``: as JSON, a string (or key) at any
    depth that is ``value`` or holds it whole, or a number spelled as it; text that is not JSON (a
    bad NDJSON line, a CSV row) holds it whole, as written or JSON-escaped."""
    try:
        doc = json.loads(record)
    except (ValueError, RecursionError):
        return any(delimited(record, spelled) for spelled in spellings(value))
    stack = [doc]
    while stack:  # a loop, not recursion: a rejected record may be nested deeper than Python recurses
        item = stack.pop()
        if isinstance(item, str):
            if delimited(item, value):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool) and json.dumps(item) == value:
            return True
    return False
