"""Sealed positions: a credential a server echoed into a cursor is stored as a marker, never in clear.

The one chokepoint every adapter's position passes (``engine/pull.py``): sealed before it leaves the
pull (each page's resume, so every checkpoint, ``cursor_after`` and the report), unsealed when a pull
starts. A marker ``${{credentials.<key>:<form>}}`` names the credential and the encoding of
:data:`~.redaction.ENCODINGS` that reproduces the matched text exactly (hex case included; no form is
the text itself), so the adapter gets back exactly what the server sent. A position that still holds
a secret after sealing (a spelling no encoding reproduces, such as mixed-case hex) is refused.
Design: docs/design/http-and-secrets.md#sealed-cursors
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import PullError
from .redaction import ENCODINGS, MIN_SECRET_LENGTH, Redactor

MARKER = re.compile(r"\$\{\{credentials\.(?P<key>\w+)(?::(?P<form>\w+))?\}\}")
"""``${{credentials.key}}``, ``${{credentials.key:url}}``: what a sealed position holds."""


def marker(key: str, form: str) -> str:
    return "${{credentials." + key + (f":{form}" if form else "") + "}}"


class Sealer:
    """Seals and unseals positions with one pull's credentials; built once per pull (or sensor
    evaluation): its pattern costs something to compile."""

    def __init__(self, credentials: Mapping[str, str], redact: Redactor):
        self.credentials = dict(credentials)
        self.redact = redact
        markers: dict[str, str] = {}
        for key, value in self.credentials.items():
            if len(value) >= MIN_SECRET_LENGTH:
                for form, encode in ENCODINGS.items():  # "" first: the shortest marker wins a tie
                    markers.setdefault(encode(value), marker(key, form))
        self._markers = markers
        # Exact text (case-sensitive: a marker must reproduce it), longest first, one pass: no
        # marker is ever rewritten by a later replacement.
        ordered = sorted(markers, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def seal(self, text: str) -> str:
        """``text`` with every credential spelling a marker reproduces replaced by that marker."""
        return self._pattern.sub(lambda m: self._markers[m[0]], text) if self._pattern is not None else text

    def unseal(self, text: str, *, source: str) -> str:
        """``text`` with every marker replaced by the exact spelling it stands for."""

        def fill(match: re.Match[str]) -> str:
            key, form = match["key"], match["form"] or ""
            value = self.credentials.get(key)
            if value is None:
                raise PullError(
                    f"source {source!r}: the stored cursor refers to credential {key!r}, which the source no "
                    "longer declares; rewind the cursor"
                )
            encode = ENCODINGS.get(form)
            if encode is None:
                raise PullError(
                    f"source {source!r}: the stored cursor marks credential {key!r} with an unknown encoding "
                    f"{form!r}; rewind the cursor"
                )
            return encode(value)

        return MARKER.sub(fill, text) if "${{credentials." in text else text

    def holds_secret(self, text: str) -> bool:
        """Whether ``text`` holds a secret in any form the redactor knows, outside its markers."""
        return self.redact.finds(MARKER.sub(" ", text))

    def seal_position(self, position: Mapping[str, Any], *, source: str, what: str = "cursor") -> dict[str, Any]:
        """``position`` sealed; a :class:`PullError` naming the source and the field when a secret
        is left in clear (the position is then never stored or shown)."""
        return self._walk(dict(position), self._seal_text, source=source, path=(), what=what)

    def unseal_position(self, position: Mapping[str, Any], *, source: str) -> dict[str, Any]:
        return self._walk(dict(position), lambda t, **_: self.unseal(t, source=source), source=source, path=())

    def _seal_text(self, text: str, *, source: str, path: tuple[str, ...], what: str) -> str:
        sealed = self.seal(text)
        if self.holds_secret(sealed):
            field = ".".join(path) or "(position)"
            raise PullError(
                f"source {source!r}: {what} field {field!r} holds a credential in a spelling that cannot be "
                "sealed (no encoding reproduces it exactly); refused, never stored or shown"
            )
        return sealed

    def _walk(self, value: Any, text: Any, *, source: str, path: tuple[str, ...], what: str = "cursor") -> Any:
        """``value`` (JSON) with ``text`` applied to every string, keys included."""
        if isinstance(value, str):
            return text(value, source=source, path=path, what=what)
        if isinstance(value, dict):
            return {
                text(str(k), source=source, path=(*path, str(k)), what=what): self._walk(
                    v, text, source=source, path=(*path, str(k)), what=what
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._walk(v, text, source=source, path=(*path, str(i)), what=what) for i, v in enumerate(value)]
        return value
