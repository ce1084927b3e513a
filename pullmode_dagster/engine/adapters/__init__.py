"""Adapters by name. A source file's ``adapter`` picks its config model and its puller here."""

from __future__ import annotations

from .base import Page, PullContext, Puller, Window
from .http_polling import HttpPollingPuller, HttpPollingSource

ADAPTERS: dict[str, type[Puller]] = {
    "http_polling": HttpPollingPuller,
}

PLANNED_ADAPTERS = ("s3_polling", "copilot_studio", "openai_compliance", "claude_compliance", "custom")
"""Named by the contract, not available in this version: reported as such, not as unknown."""

__all__ = ["ADAPTERS", "PLANNED_ADAPTERS", "HttpPollingSource", "Page", "PullContext", "Puller", "Window"]
