"""A record that could not be normalized: the :class:`Reject` kept with its reason, and the text
of the record it keeps (``raw_text``), which never fails whatever the record holds."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from .rules import storable_text


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


_ascii_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode


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
