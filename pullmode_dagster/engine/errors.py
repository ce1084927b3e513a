"""Errors users see. Every message names the source (and the field, for configuration problems)
and is built from redacted text only, so it can be logged or shown in the UI as is."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn


class Problem(str):
    """One line about a source file, and the name of the source it belongs to.

    Code that must decide which source a problem is about (``pullmode preview NAME`` refusing only
    when NAME's own file is broken) reads ``source`` rather than searching the text for the name.
    It is a ``str`` so that printing, joining and comparing it are those of the line itself: every
    message stays byte-identical. ``source`` is None for a problem that names no source (the
    directory is missing, a file is not one YAML mapping)."""

    source: str | None

    def __new__(cls, text: str, source: str | None = None) -> Problem:
        self = super().__new__(cls, text)
        object.__setattr__(self, "source", source)
        return self

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.source)


class PullmodeError(Exception):
    """Base class: the message is safe to show (no secret in it).

    ``report`` is set when a pull failed part-way: what it wrote before the failure."""

    report: Any = None


class ConfigError(PullmodeError):
    """A source file is invalid. ``problems`` holds one line per problem (a plain line becomes a
    :class:`Problem` of no source)."""

    def __init__(self, problems: Iterable[str]):
        self.problems = [p if isinstance(p, Problem) else Problem(p) for p in problems]
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.problems,)  # pickles (process pools) with its own argument


class CredentialError(PullmodeError):
    """A credential ref could not be resolved (variable unset, file missing)."""


class PullError(PullmodeError):
    """A pull failed: HTTP error after retries, a pagination loop, an unreadable response."""
