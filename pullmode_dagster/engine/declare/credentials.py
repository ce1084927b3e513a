"""Credential refs: where each secret lives, read afresh at every pull (redaction: ``fetch/redaction.py``).

A ref says where a secret lives (``{env: VAR}`` or ``{file: path}``); it is resolved at the start of
every pull and never cached, so a rotated secret is picked up by the next pull.
:meth:`ResolvedCredentials.for_source` is the one place a pull's secrets are read and its redactor
built; the engine and the Dagster asset both use what it returns.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from ..errors import CredentialError
from ..fetch.redaction import Redactor
from .files import read_capped

MAX_SECRET_FILE_BYTES = 64 * 1024
"""A secret file holds one secret: anything larger is the wrong file (or an endless one)."""

_CONTROL = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r") | {"\x7f"}


def _shown(text: object) -> str:
    """A variable name or path for a one-line message (quoted when it holds a line break or such)."""
    text = str(text)
    return text if text.isprintable() else repr(text)


class CredentialRef(BaseModel):
    """Where one secret lives: exactly one of ``env`` or ``file``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: str | None = None

    @field_validator("env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "=" in value or "\0" in value):
            raise ValueError("must name an environment variable (not empty, no '=' or NUL character)")
        return value

    @field_validator("file")
    @classmethod
    def _file_path(cls, value: str | None) -> str | None:
        if value is not None and (not value or "\0" in value):
            raise ValueError("must be a file path (not empty, no NUL character)")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a credential ref takes exactly one of {env: VAR} or {file: path}")
        return self

    def describe(self) -> str:
        """Where the secret lives, for messages (never the secret itself)."""
        return f"environment variable {_shown(self.env)}" if self.env else f"file {_shown(self.file)}"

    def resolve(self, *, base_dir: Path | None = None) -> str:
        """The secret, read now. Every failure is a :class:`CredentialError` saying where the secret
        was expected and why it could not be used, never what the secret holds."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise CredentialError(f"{self.describe()} is not set")
            try:
                # Bytes that are not UTF-8 arrive as lone surrogates and would fail later, mid-request.
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise CredentialError(f"{self.describe()} holds bytes that are not UTF-8 text") from None
            return value
        path = Path(self.file or "")
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return _read_secret_file(path)


def _read_secret_file(path: Path) -> str:
    """At most ``MAX_SECRET_FILE_BYTES`` of a regular file, as UTF-8, less one trailing newline.

    The type is checked before the file is opened (a FIFO would block an ordinary open forever,
    ``/dev/zero`` never ends), and again on the open descriptor, opened non-blocking."""
    where = _shown(path)
    try:
        data = read_capped(path, MAX_SECRET_FILE_BYTES, lambda st: _check_secret_file(where, st))
    except CredentialError:
        raise
    except FileNotFoundError:
        raise CredentialError(f"cannot read file {where}: no such file") from None
    except OSError as exc:
        raise CredentialError(f"cannot read file {where}: {exc.strerror or type(exc).__name__}") from None
    except ValueError:  # a path the OS cannot take
        raise CredentialError(f"cannot read file {where}: not a usable path") from None
    if data is None:
        raise CredentialError(
            f"file {where} is larger than {MAX_SECRET_FILE_BYTES} bytes; a secret file holds one secret"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"file {where} is not UTF-8 text (a binary file?)") from None
    if _CONTROL.intersection(text):
        raise CredentialError(f"file {where} holds control characters (a binary file?)")
    # Secret files usually end with a newline that is not part of the secret: exactly one is dropped.
    return text.removesuffix("\n").removesuffix("\r")


def _check_secret_file(where: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise CredentialError(f"file {where} is a directory, not a secret file")
    if not stat.S_ISREG(st.st_mode):
        raise CredentialError(f"file {where} is not a regular file (a FIFO, socket or device); not read")
    if st.st_size > MAX_SECRET_FILE_BYTES:
        raise CredentialError(
            f"file {where} is larger than {MAX_SECRET_FILE_BYTES} bytes; a secret file holds one secret"
        )


def resolve_credentials(
    refs: Mapping[str, CredentialRef], *, source_name: str, base_dir: Path | None = None
) -> dict[str, str]:
    """Read every secret now (never cached: a rotated secret is used by the next pull). Errors name
    the source, the key and where the secret was expected, never the value."""
    values: dict[str, str] = {}
    for key, ref in refs.items():
        try:
            values[key] = ref.resolve(base_dir=base_dir)
        except CredentialError as exc:
            raise CredentialError(f"source {source_name!r}: credential {key!r}: {exc}") from None
    return values


class CredentialedSource(Protocol):
    """What reading a source's secrets needs of it: a :class:`~.models.SourceConfig` (which holds
    :class:`CredentialRef` fields, so this module does not import it back)."""

    @property
    def name(self) -> str: ...
    @property
    def credentials(self) -> Mapping[str, CredentialRef]: ...
    @property
    def file(self) -> Path | None: ...


class ResolvedCredentials:
    """One pull's secrets with the redactor built from them, so whoever reports the pull's errors
    (the engine, the Dagster asset) redacts with exactly the secrets the pull uses. Built once per
    pull: the redactor's pattern costs something to compile."""

    __slots__ = ("redact", "values")

    def __init__(self, values: Mapping[str, str] | None = None):
        self.values: dict[str, str] = dict(values or {})
        self.redact = Redactor(self.values.values())

    @classmethod
    def for_source(cls, source: CredentialedSource) -> ResolvedCredentials:
        """``source``'s credential refs, read now (a relative file ref is relative to the source's file)."""
        base_dir = source.file.parent if source.file else None
        return cls(resolve_credentials(source.credentials, source_name=source.name, base_dir=base_dir))

    @classmethod
    def available(cls, source: CredentialedSource) -> ResolvedCredentials:
        """Those of ``source``'s secrets that can be read now, for whoever only redacts or seals (the
        poller, ``pullmode pull``, alerts): a missing one fails the pull that needs it, not them."""
        base_dir = source.file.parent if source.file else None
        values: dict[str, str] = {}
        for key, ref in source.credentials.items():
            try:
                values[key] = ref.resolve(base_dir=base_dir)
            except CredentialError:
                continue
        return cls(values)

    def __repr__(self) -> str:
        return f"ResolvedCredentials(keys={sorted(self.values)!r})"  # never the values
