"""Adapters by name. Each adapter module registers itself (``registry.register``); importing it
here is its one registration. A source file's ``adapter`` picks its config model and puller from
``ADAPTERS``."""

from __future__ import annotations

# Each import registers one adapter.
from . import claude_compliance, copilot_studio, custom, http_polling, openai_compliance, s3_polling  # noqa: F401
from .base import Page, ProbeAnswer, PullContext, Puller, Window
from .registry import ADAPTERS
from .s3_polling import S3ClientSpec

__all__ = ["ADAPTERS", "Page", "ProbeAnswer", "PullContext", "Puller", "S3ClientSpec", "Window"]
