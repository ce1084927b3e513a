"""The cursor state: a small JSON document that says where the next pull starts.

The engine owns ``watermark`` and ``high_water``; every other field is the adapter's *position*. The
caller commits it only after the pull's events are safely in the store.
Design: docs/design/poller.md#the-cursor-state
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, ClassVar

from .errors import PullmodeError
from .events.rules import TIMESTAMP_RANGE, NormalizationError, OutOfRange, normalize_timestamp, show

CURSOR_VERSION = 1


class CursorFormatError(PullmodeError, ValueError):
    """A cursor document (say, one set by hand in the Dagster UI) is not valid: a project error, so
    a command reports it for its source and goes on with the others."""


def load_object(text: str | None, *, what: str) -> dict[str, Any] | None:
    """A JSON object from a hand-editable cursor; None for empty text."""
    if text is None or not text.strip():
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CursorFormatError(f"{what} is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(doc, dict):
        raise CursorFormatError(f"{what} must be a JSON object")
    return doc


ENGINE_FIELDS = ("watermark", "high_water")


@dataclass(frozen=True)
class CursorState:
    FUTURE_SKEW: ClassVar[timedelta] = timedelta(minutes=5)
    """How far past the pull's clock an event may be dated and still become the watermark (the
    engine's rule, ``pull.py``); an adapter's own time-based position keeps to it too
    (``Puller.not_future``): events still to come, dated now, would sort before a later one."""

    watermark: str | None = None
    high_water: str | None = None
    position: Mapping[str, Any] = field(default_factory=dict)
    """The adapter's own part: JSON values only, validated by the adapter (``Puller.position_model``)."""

    @classmethod
    def from_json(cls, text: str | None) -> CursorState:
        doc = load_object(text, what="cursor")
        return cls() if doc is None else cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> CursorState:
        if not isinstance(doc, dict):
            raise CursorFormatError("cursor must be a JSON object")
        values: dict[str, Any] = {}
        for key in ENGINE_FIELDS:
            value = doc.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise CursorFormatError(f"cursor field {key!r} must be a string or null")
            # Hand-set cursors may use any ISO 8601 spelling; stored ones are fixed-width.
            # The stores' range: every watermark a pull computes is in it, and one set outside it
            # (a year typed 0026) would never compare with stored timestamps as time.
            try:
                values[key] = normalize_timestamp(value)
            except OutOfRange:
                raise CursorFormatError(
                    f"cursor field {key!r} is out of range ({TIMESTAMP_RANGE}): {show(value)}"
                ) from None
            except NormalizationError:
                raise CursorFormatError(f"cursor field {key!r} is not an ISO 8601 timestamp: {show(value)}") from None
        position = {k: v for k, v in doc.items() if k not in (*ENGINE_FIELDS, "v") and v is not None}
        return cls(**values, position=position)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"v": CURSOR_VERSION, **self.position}
        doc.update({k: getattr(self, k) for k in ENGINE_FIELDS if getattr(self, k) is not None})
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def after_pull(self, *, resume: Mapping[str, Any], newest: str | None, drained: bool) -> CursorState:
        """The state to commit after a pull that started from ``self``.

        ``resume`` is the adapter's whole position after the page (None values are dropped);
        ``newest`` the newest normalized timestamp the pull saw; ``drained`` whether it reached the end.
        """
        position = {k: v for k, v in resume.items() if v is not None}
        high = _max(self.high_water, newest)
        if drained:
            return replace(self, position=position, watermark=_max(self.watermark, high), high_water=None)
        return replace(self, position=position, high_water=high)


def _max(a: str | None, b: str | None) -> str | None:
    """Timestamps are fixed-width ISO text (see events.model.TIMESTAMP_FORMAT): text order is time order."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
