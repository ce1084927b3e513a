"""Adapters by name. A source file's ``adapter`` picks its config model and its puller here."""

from __future__ import annotations

from .base import Page, PullContext, Puller, Window
from .http_polling import HttpPollingPuller, HttpPollingSource
from .s3_polling import S3ClientSpec, S3PollingPuller, S3PollingSource

ADAPTERS: dict[str, type[Puller]] = {
    "http_polling": HttpPollingPuller,
    "s3_polling": S3PollingPuller,
}

PLANNED_ADAPTERS = ("copilot_studio", "openai_compliance", "claude_compliance", "custom")
"""Named by the contract, not available in this version: reported as such, not as unknown."""

__all__ = [
    "ADAPTERS",
    "PLANNED_ADAPTERS",
    "HttpPollingSource",
    "Page",
    "PullContext",
    "Puller",
    "S3ClientSpec",
    "S3PollingSource",
    "Window",
]
