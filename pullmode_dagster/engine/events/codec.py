"""The JSON codec: pages decoded and raw payloads written with msgspec, ~5x faster than the stdlib,
to exactly the values and text ``json`` gives (what it cannot promise takes the general path).

Design: docs/design/normalization.md#the-normalized-event
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import msgspec

dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False).encode
"""Compact JSON text, as stored in ``raw_payload`` (one encoder, built once). NaN and Infinity raise
ValueError: they are not JSON."""


class ReprFloat(float):
    """A float that :func:`plain_payloads` writes as ``repr`` does: one below 1e-4 or from 1e16 in
    magnitude (a cheap model call costs 4.5e-05), which msgspec would spell otherwise (``0.000045``,
    and ``1e16`` for ``1e+16``). Otherwise a float: equal, hashed, printed and written by ``json``
    the same; the field rules store it as a plain float."""

    __slots__ = ()


def _write_repr_float(value: Any) -> msgspec.Raw:
    if type(value) is ReprFloat:
        return msgspec.Raw(float.__repr__(value).encode())
    raise TypeError(f"not plain JSON: {type(value).__name__}")  # the general path writes it


_msgspec_encode = msgspec.json.Encoder(enc_hook=_write_repr_float).encode


def _plain_float(text: str) -> float:
    """A JSON number as ``float()`` reads it; one msgspec would write otherwise than ``repr`` as
    :class:`ReprFloat`; one beyond the float range (``1e999``) stops the fast decoding."""
    value = float(text)
    if 1e-4 <= value < 1e16 or -1e16 < value <= -1e-4 or value == 0.0:
        return value  # msgspec writes it as repr does
    if math.isinf(value):
        raise ValueError("a number beyond the float range: json.loads reads it, the document is not plain")
    return ReprFloat(value)


decode_plain = msgspec.json.Decoder(float_hook=_plain_float).decode
"""A plain JSON document (see :func:`decode_json`), or one of :data:`NOT_PLAIN` raised. One decoder
for every document (it keeps no state between calls): an NDJSON file is one call a line."""

NOT_PLAIN = (msgspec.DecodeError, ValueError, RecursionError)
"""What :func:`decode_plain` raises for a document that is not plain JSON (or not JSON at all)."""


def decode_json(data: bytes) -> tuple[Any, bool]:
    """A JSON document, and whether it is *plain*: only dicts with str keys, lists, str, int, bool,
    None and finite floats, no lone surrogate, so that :func:`plain_payloads` writes its records.

    msgspec decodes to the same values as ``json.loads``, about 2x faster: floats through ``float()``
    as in ``json.loads``, those msgspec would write otherwise than ``repr`` as :class:`ReprFloat`.
    What only ``json.loads`` accepts (lone surrogate escapes, NaN, Infinity, a BOM, UTF-16) is
    decoded by it, as always, and is not plain: such records take the general path, which rejects
    what cannot be stored. ``json.loads``' errors (ValueError, RecursionError) are the errors of this
    function."""
    try:
        return decode_plain(data), True
    except NOT_PLAIN:
        return json.loads(data), False


_DEEP = 500
"""Records with this many brackets may nest deep enough for ``dumps`` to give up (a reject): they
take the general path, so both ways give the same outcome."""


def plain_payloads(records: Sequence[Any]) -> list[str | None]:
    """``dumps`` of each record of a plain JSON page (see :func:`decode_json`), 5x faster; None for
    a record that is not an object or nests so deep that ``dumps`` might give up: that record takes
    the general path."""
    encode = _msgspec_encode
    payloads: list[str | None] = []
    for raw in records:
        data = None
        if type(raw) is dict:
            try:
                data = encode(raw)
            except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
                pass
            else:
                if len(data) >= 2 * _DEEP and data.count(b"[") + data.count(b"{") >= _DEEP:
                    data = None
        payloads.append(None if data is None else data.decode())
    return payloads
