"""The one redaction rule: no secret leaves the process in any form a server or a library may give it.

A :class:`Redactor` built from the pull's resolved secrets replaces each secret in every encoding it may
come back in. Redact the whole text first, truncate afterwards.
Design: docs/design/http-and-secrets.md#redaction
"""

from __future__ import annotations

import base64
import html
import json
import re
import urllib.parse
from collections.abc import Iterable

REDACTED = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values would shred every message; they are not secrets worth the name."""


def secret_forms(secret: str) -> set[str]:
    """Every spelling of ``secret`` this project, a server or a library may produce."""
    pieces = {secret.strip("\r\n")} | {line.strip() for line in secret.splitlines()}
    forms: set[str] = set()
    for piece in pieces:
        if len(piece) < MIN_SECRET_LENGTH:
            continue
        for text in (piece, piece.replace("\n", "\r\n")):
            forms.add(text)
            forms.add(urllib.parse.quote(text, safe=""))
            forms.add(urllib.parse.quote(text))
            forms.add(urllib.parse.quote_plus(text))
            for ascii_only in (False, True):
                escaped = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
                forms.add(escaped)
                forms.add(escaped.replace("/", "\\/"))
            forms.add(html.escape(text))
            forms.add(html.escape(text, quote=False))
            for b64 in (base64.b64encode(text.encode()).decode(), base64.urlsafe_b64encode(text.encode()).decode()):
                forms.add(b64)
                forms.add(b64.rstrip("="))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces every known secret, in every form, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()):
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= secret_forms(secret)
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: object) -> str:
        out = str(text)
        return self._pattern.sub(REDACTED, out) if self._pattern is not None else out

    def finds(self, text: str) -> bool:
        """Whether ``text`` holds a secret in any form."""
        return self._pattern is not None and self._pattern.search(text) is not None
