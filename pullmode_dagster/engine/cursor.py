"""The cursor state: a small JSON document that says where the next pull starts.

The engine returns it with every pull; the caller commits it only after the pull's events are
safely in the store (in Dagster: after the run succeeded). Format, documented in the README::

    {"v": 1, "page_cursor": "...", "watermark": "2026-01-01T00:00:00.000000Z",
     "high_water": "...", "after_key": "..."}

- ``page_cursor``: the next page of an unfinished pagination (http_polling); resumed as is.
- ``watermark``: the newest ``event_timestamp`` of the last drained pull; templated into
  ``incrementalParams`` as ``${{cursor.watermark}}`` so the next pull starts after it.
- ``high_water``: the newest timestamp seen by an unfinished pagination; becomes the watermark when
  that pagination drains (it cannot earlier: newest-first APIs would skip the pages still to read).
- ``after_key``: the greatest S3 key fully processed (s3_polling).

Every field is optional; ``{}`` (or an empty sensor cursor) means "from the beginning".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .events import NormalizationError, normalize_timestamp

CURSOR_VERSION = 1


class CursorFormatError(ValueError):
    """A cursor document (say, one set by hand in the Dagster UI) is not valid."""


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


@dataclass(frozen=True)
class CursorState:
    page_cursor: str | None = None
    watermark: str | None = None
    high_water: str | None = None
    after_key: str | None = None

    @classmethod
    def from_json(cls, text: str | None) -> CursorState:
        doc = load_object(text, what="cursor")
        return cls() if doc is None else cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> CursorState:
        if not isinstance(doc, dict):
            raise CursorFormatError("cursor must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known - {"v"}
        if unknown:
            raise CursorFormatError(f"unknown cursor field(s): {', '.join(sorted(unknown))}")
        values = {}
        for key in known:
            value = doc.get(key)
            if value is not None and not isinstance(value, str):
                raise CursorFormatError(f"cursor field {key!r} must be a string or null")
            if value is not None and key in ("watermark", "high_water"):
                # Hand-set cursors may use any ISO 8601 spelling; stored ones are fixed-width.
                try:
                    value = normalize_timestamp(value)
                except NormalizationError:
                    raise CursorFormatError(f"cursor field {key!r} is not an ISO 8601 timestamp") from None
            values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"v": CURSOR_VERSION}
        doc.update({k: v for k, v in asdict(self).items() if v is not None})
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def is_empty(self) -> bool:
        return self == CursorState()

    def after_pull(self, *, resume: dict[str, str | None], newest: str | None, drained: bool) -> CursorState:
        """The state to commit after a pull that started from ``self``.

        ``resume`` holds the adapter's own position (``page_cursor``, ``after_key``); ``newest`` the
        newest normalized timestamp the pull saw; ``drained`` whether it reached the end.
        """
        high = _max(self.high_water, newest)
        if drained:
            return replace(self, **resume, watermark=_max(self.watermark, high), high_water=None)
        return replace(self, **resume, high_water=high)


def _max(a: str | None, b: str | None) -> str | None:
    """Timestamps are fixed-width ISO text (see events.TIMESTAMP_FORMAT): text order is time order."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
