"""Adapters by name. Each adapter module registers itself (``registry.register``); importing it
here is its one registration. A source file's ``adapter`` picks its config model and puller from
``ADAPTERS``."""

from __future__ import annotations

# Each import registers one adapter.
from . import claude_compliance, copilot_studio, custom, http_polling, openai_compliance, s3_polling  # noqa: F401
from .base import Page, Position, ProbeAnswer, PullContext, Puller, Window
from .http_polling import HttpPollingSource
from .registry import ADAPTERS, Adapter, register
from .s3_polling import S3ClientSpec, S3PollingSource

__all__ = [
    "ADAPTERS",
    "Adapter",
    "HttpPollingSource",
    "Page",
    "Position",
    "ProbeAnswer",
    "PullContext",
    "Puller",
    "S3ClientSpec",
    "S3PollingSource",
    "Window",
    "register",
]
