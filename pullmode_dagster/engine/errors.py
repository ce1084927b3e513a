"""Errors users see. Every message names the source (and the field, for configuration problems)
and is built from redacted text only, so it can be logged or shown in the UI as is."""

from __future__ import annotations

from typing import Any


class PullmodeError(Exception):
    """Base class: the message is safe to show (no secret in it).

    ``report`` is set when a pull failed part-way: what it wrote before the failure."""

    report: Any = None


class ConfigError(PullmodeError):
    """A source file is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CredentialError(PullmodeError):
    """A credential ref could not be resolved (variable unset, file missing)."""


class PullError(PullmodeError):
    """A pull failed: HTTP error after retries, a pagination loop, an unreadable response."""
