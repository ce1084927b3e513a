"""Adapters by name. Each adapter module registers itself (``registry.register``); importing it
here is its one registration. A source file's ``adapter`` picks its config model and puller from
``ADAPTERS``."""

from __future__ import annotations

from . import http_polling, s3_polling  # noqa: F401 - each registers its adapter
from .base import Page, Position, PullContext, Puller, Window
from .http_polling import HttpPollingSource
from .registry import ADAPTERS, Adapter, register
from .s3_polling import S3ClientSpec, S3PollingSource

__all__ = [
    "ADAPTERS",
    "Adapter",
    "HttpPollingSource",
    "Page",
    "Position",
    "PullContext",
    "Puller",
    "S3ClientSpec",
    "S3PollingSource",
    "Window",
    "register",
]
