"""Retention and erasure, the parts that are not SQL: how old is too old, and whether a rejected
record is an actor's (a reject has no ``actor`` column: it could not be normalized).

What ``pullmode prune`` and ``pullmode erase`` do with them is in docs/retention-and-erasure.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from ..errors import PullmodeError
from ..events.jsonpath import MISSING, compile_path
from ..events.rules import normalize_text, show

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


MAX_ACTOR_CHARS = 1_000
"""The longest ``--actor`` taken: emails and vendors' ids are far shorter, so a longer one is a
paste gone wrong (and its search patterns would pass SQLite's limit on a LIKE pattern)."""


def check_actor(actor: str) -> str:
    """``actor`` as ``erase`` takes it, or an error saying what is wrong with it."""
    if not actor:
        raise PullmodeError("--actor: give the actor as stored in the actor column (an email, a user id), not empty")
    if len(actor) > MAX_ACTOR_CHARS:
        raise PullmodeError(
            f"--actor: at most {MAX_ACTOR_CHARS:,} characters, got {len(actor):,}: give the actor as stored in the "
            "actor column (an email, a user id)"
        )
    return actor


def spellings(value: str) -> list[str]:
    """``value`` as it may be written in a record's raw text: itself and its JSON escapes."""
    return list(dict.fromkeys([value, json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1]]))


ActorRule = Callable[[dict[str, Any]], Any]
"""How a source's pull takes the actor of a record (an object): the raw value, None when it has none."""


def actor_rule(source: object | None) -> tuple[ActorRule | None, bool]:
    """The rule the pull of ``source`` takes each record's actor by, and whether that actor may be
    built from several fields (a reference connector's code: ``issuer|subject``), not written as
    one value: its ``eventMapping`` ``actor`` path, else its connector's ``extract``. None when the
    source is unknown (its file removed or invalid) or maps no actor."""
    if source is None:
        return None, False
    mapping = getattr(source, "event_mapping", None)
    if mapping is not None:
        if mapping.actor is None:
            return None, False
        path = compile_path(mapping.actor)
        return (lambda record: None if (found := path.first(record)) is MISSING else found), False
    extract = getattr(source, "extract", None)
    if extract is None:
        return None, False
    return (lambda record: extract(record).get("actor")), True


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*(?:"|$)')
"""A JSON string in text that is not JSON, or the string it ends in (a record cut short)."""


class ActorMatch:
    """Whether a rejected record of one source is the actor's (a reject has no ``actor`` column: it
    could not be normalized). Only the record's raw text counts, never its reason or location (the
    project's words: ``page 1, record 3``, ``not a timestamp``):

    - with the source's actor rule (its ``eventMapping`` path or its connector's code), the actor
      the pull would have stored, when the rule finds one: ``42`` at the actor path is user ``42``,
      ``"input_tokens": 42`` beside it is not;
    - else (the source unknown, the rule finding none, text that is not JSON) a string value that
      is exactly the actor, at any depth: a number or a key never is, nor a longer string holding it.
      In text that is not JSON: a quoted JSON string, or a CSV field, that is exactly the actor (a
      field that reads as a number excepted: a count looks the same).
    """

    def __init__(self, actor: str, source: object | None = None):
        self.actor = actor
        self._rule, composed = actor_rule(source)
        self.patterns: list[str] | None = None if composed else spellings(actor)
        """Substrings a record of the actor's holds (one at least): a database picks candidates by
        them. None when the actor may be built from several fields: every record is a candidate."""

    def __call__(self, record: str) -> bool:
        try:
            doc = json.loads(record)
        except (ValueError, RecursionError):
            return self._in_text(record)
        if self._rule is not None and isinstance(doc, dict):
            found = self._by_rule(self._rule, doc)
            if found is not None:
                return found == self.actor
        return self._in_strings(doc)

    def _by_rule(self, rule: ActorRule, doc: dict[str, Any]) -> str | None:
        """The actor the pull would have stored for ``doc`` by ``rule``, None when it cannot tell."""
        try:
            return normalize_text(rule(doc), "actor")
        except Exception:  # the record is malformed (why it was rejected): the rule cannot tell
            return None

    def _in_strings(self, doc: Any) -> bool:
        stack = [doc]
        while stack:  # a loop, not recursion: a rejected record may be nested deeper than Python recurses
            item = stack.pop()
            if isinstance(item, str):
                if item == self.actor:
                    return True
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return False

    def _in_text(self, text: str) -> bool:
        for literal in _STRING_LITERAL.findall(text):
            try:
                if json.loads(literal if len(literal) > 1 and literal.endswith('"') else f'{literal}"') == self.actor:
                    return True
            except ValueError:
                continue
        if _NUMBER.fullmatch(self.actor):
            return False
        try:
            return any(self.actor in row for row in csv.reader(io.StringIO(text, newline="")))
        except csv.Error:
            return False
