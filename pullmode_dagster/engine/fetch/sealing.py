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

import functools
import json
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any
from urllib.parse import unquote, unquote_plus

from ..errors import PullError
from .redaction import ENCODINGS, MIN_SECRET_LENGTH, Redactor, literal_pattern

MARKER = re.compile(r"\$\{\{credentials\.(?P<key>\w+)(?::(?P<form>\w+))?\}\}")
"""``${{credentials.key}}``, ``${{credentials.key:url}}``: what a sealed position holds."""

_DOLLARS = re.compile(r"\$+\{\{")
"""A run of ``$`` before ``{{``: how sealed text tells a marker from text a server wrote (below)."""
_ESCAPE = re.compile(r"\$+(?=\{\{)")
_TRAILING_DOLLARS = re.compile(r"\$+$")


def marker(key: str, form: str) -> str:
    return "${{credentials." + key + (f":{form}" if form else "") + "}}"


def _double(run: re.Match[str]) -> str:
    return run[0] * 2


@functools.lru_cache(maxsize=256)
def _marker_patterns(credentials: tuple[tuple[str, str], ...]) -> tuple[dict[str, str], re.Pattern[str] | None]:
    """Each credential's spellings and their markers, built once per process for the same
    credentials (a poller evaluation and a pull each build a sealer)."""
    markers: dict[str, str] = {}
    for key, value in credentials:
        if len(value) >= MIN_SECRET_LENGTH:
            for form, encode in ENCODINGS.items():  # "" first: the shortest marker wins a tie
                text = encode(value)
                if len(text) >= MIN_SECRET_LENGTH:
                    markers.setdefault(text, marker(key, form))
    # Exact text (case-sensitive: a marker must reproduce it), longest first, one pass: no marker is
    # ever rewritten by a later replacement.
    return markers, literal_pattern(markers, ignore_case=False)


class Sealer:
    """Seals and unseals positions with one pull's credentials; built once per pull (or sensor
    evaluation): its pattern costs something to compile.

    Only markers the sealer wrote are ever filled in. Sealing a server's text escapes it first: each
    run of ``$`` before ``{{`` (and before a marker) is doubled, so in sealed text an even run before
    ``{{`` is the server's text (half as many ``$``) and an odd run is the sealer's marker after half
    of the rest; a server that plants ``${{credentials.token}}`` in a link gets that text back, never
    the token. Compatibility: cursors sealed before escaping (legacy) held markers and the server's
    own ``${{`` behind a single ``$``; they read the same today (an odd run of one), except the
    ambiguous cases, which no reading can tell apart: a server text that was itself a marker (still
    filled in, as before; rewind the cursor) and a run of two or more ``$`` before ``{{`` in a
    server text (read halved). A cursor that is already sealed (stored, or handed to a run) is
    resealed (:meth:`reseal_position`): its markers and escapes are kept, a secret in clear sealed.
    """

    def __init__(self, credentials: Mapping[str, str], redact: Redactor):
        self.credentials = dict(credentials)
        self.redact = redact
        self._markers, self._pattern = _marker_patterns(tuple(sorted(self.credentials.items())))

    def seal(self, text: str, *, escape: bool = True) -> str:
        """``text`` with every credential spelling a marker reproduces replaced by that marker;
        ``escape``: ``text`` is a server's (or a puller's), whose marker-like text is escaped."""
        out: list[str] = []
        pos = 0
        for found in self._pattern.finditer(text) if self._pattern is not None else ():
            before = text[pos : found.start()]
            before = _ESCAPE.sub(_double, before) if escape else before
            out.append(_TRAILING_DOLLARS.sub(_double, before) + self._markers[found[0]])
            pos = found.end()
        out.append(_ESCAPE.sub(_double, text[pos:]) if escape else text[pos:])
        return "".join(out)

    @staticmethod
    def _parts(text: str) -> list[tuple[str, str, str, re.Match[str] | None]]:
        """Sealed ``text`` as (plain text, a token as sealed, what the token's run of ``$`` stands
        for, the marker it ends in, if any); the last has only plain text."""
        parts: list[tuple[str, str, str, re.Match[str] | None]] = []
        pos, plain = 0, ""
        while (run := _DOLLARS.search(text, pos)) is not None:
            dollars = len(run[0]) - 2
            found = MARKER.match(text, run.end() - 3) if dollars % 2 else None
            if dollars % 2 == 0:  # the server's text, escaped
                parts.append((plain + text[pos : run.start()], run[0], "$" * (dollars // 2) + "{{", None))
                plain, pos = "", run.end()
            elif found is None:  # not written by a sealer (legacy text): kept as it is
                plain, pos = plain + text[pos : run.end()], run.end()
            else:
                token = text[run.start() : found.end()]
                parts.append((plain + text[pos : run.start()], token, "$" * (dollars // 2), found))
                plain, pos = "", found.end()
        parts.append((plain + text[pos:], "", "", None))
        return parts

    def unseal(self, text: str, *, source: str) -> str:
        """``text`` with every marker replaced by the exact spelling it stands for, and escaped text
        back as the server wrote it."""
        if "{{" not in text:
            return text

        def fill(found: re.Match[str]) -> str:
            key, form = found["key"], found["form"] or ""
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

        return "".join(plain + run + (fill(found) if found else "") for plain, _, run, found in self._parts(text))

    def reseal(self, text: str) -> str:
        """Sealed ``text`` (stored, or set by hand) with a secret left in clear sealed too; its
        markers and escapes are kept as they are (sealing it again would escape them)."""
        return "".join(self.seal(plain, escape=False) + token for plain, token, _, _ in self._parts(text))

    def holds_secret(self, text: str) -> bool:
        """Whether ``text`` holds a secret in any form the redactor knows, outside its markers."""
        return self.redact.finds(MARKER.sub(" ", text))

    def seal_position(self, position: Mapping[str, Any], *, source: str, what: str = "cursor") -> dict[str, Any]:
        """A puller's ``position`` (the server's text) sealed; a :class:`PullError` naming the source
        and the field when a secret is left in clear (the position is then never stored or shown)."""
        return self._walk(dict(position), partial(self._seal_text, self.seal), source=source, path=(), what=what)

    def reseal_position(self, position: Mapping[str, Any], *, source: str, what: str = "cursor") -> dict[str, Any]:
        """A stored position (sealed before, set by hand, or stored in clear by an older version)
        sealed, keeping its markers; refused as :meth:`seal_position` refuses."""
        return self._walk(dict(position), partial(self._seal_text, self.reseal), source=source, path=(), what=what)

    def unseal_position(self, position: Mapping[str, Any], *, source: str) -> dict[str, Any]:
        return self._walk(
            dict(position), lambda t, **_: self.unseal(t, source=source), source=source, path=(), what="unsealed"
        )

    def _seal_text(
        self, seal: Callable[[str], str], text: str, *, source: str, path: tuple[str, ...], what: str
    ) -> str:
        sealed = seal(text)
        field = ".".join(path) or "(position)"
        if self.holds_secret(sealed):
            raise PullError(
                f"source {source!r}: {what} field {field!r} holds a credential in a spelling that cannot be "
                "sealed (no encoding reproduces it exactly); refused, never stored or shown"
            )
        if self._split_across_parameters(sealed):
            raise PullError(
                f"source {source!r}: {what} field {field!r} holds a credential split across query parameters, "
                "which cannot be sealed; refused, never stored or shown"
            )
        return sealed

    def _split_across_parameters(self, sealed: str) -> bool:
        """Whether the values of the query in ``sealed``, joined in order (as they are, and
        decoded), spell a credential that no one value holds: pieces cannot be sealed one by one
        (a piece is not a secret), but the whole is cheap to find in a link."""
        if "=" not in sealed or not self.redact:
            return False
        query = MARKER.sub("\x00", sealed).partition("?")[2] if "?" in sealed else sealed
        values = [pair.partition("=")[2] for pair in re.split("[&;]", query)]
        if len(values) < 2:
            return False
        joined = "".join(values)
        return any(map(self.redact.finds, (joined, unquote(joined), unquote_plus(joined))))

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
        # A number cannot hold a marker: one that spells a secret (a numeric key) is refused.
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and what != "unsealed" and self.redact.finds(json.dumps(value)):
            field = ".".join(path) or "(position)"
            raise PullError(
                f"source {source!r}: {what} field {field!r} is a number that spells a credential, which "
                "cannot be sealed; refused, never stored or shown"
            )
        return value
