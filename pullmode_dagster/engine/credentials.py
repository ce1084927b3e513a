"""Credential refs and the redactor that keeps their values out of every message.

A ref says where a secret lives (``{env: VAR}`` or ``{file: path}``); it is resolved at the start of
every pull and never cached, so a rotated secret is picked up by the next pull.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from .errors import CredentialError

REDACTED = "***"


class CredentialRef(BaseModel):
    """Where one secret lives: exactly one of ``env`` or ``file``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a credential ref takes exactly one of {env: VAR} or {file: path}")
        return self

    def describe(self) -> str:
        """Where the secret lives, for messages (never the secret itself)."""
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def resolve(self, *, base_dir: Path | None = None) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise CredentialError(f"environment variable {self.env} is not set")
            return value
        path = Path(self.file or "")
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            # Secret files usually end with a newline that is not part of the secret.
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise CredentialError(f"cannot read file {path}: {exc.strerror or exc}") from None


def resolve_credentials(
    refs: Mapping[str, CredentialRef], *, source_name: str, base_dir: Path | None = None
) -> dict[str, str]:
    """Read every secret now. Errors name the source, the key and where the secret was expected."""
    values: dict[str, str] = {}
    for key, ref in refs.items():
        try:
            values[key] = ref.resolve(base_dir=base_dir)
        except CredentialError as exc:
            raise CredentialError(f"source {source_name!r}: credential {key!r}: {exc}") from None
    return values


class Redactor:
    """Replaces every known secret (and its URL-encoded form) with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()):
        forms: set[str] = set()
        for secret in secrets:
            # Very short values would shred every message; they are not secrets worth the name.
            if secret and len(secret) >= 4:
                forms.add(secret)
                forms.add(urllib.parse.quote(secret, safe=""))
                forms.add(urllib.parse.quote_plus(secret))
        # Longest first, so a secret that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: object) -> str:
        out = str(text)
        for form in self._forms:
            if form in out:
                out = out.replace(form, REDACTED)
        return out
