"""Trace stores by URL: ``sqlite:///path.db`` (default) or ``postgresql://...`` (``postgres://`` too)."""

from __future__ import annotations

import os

from ..errors import PullmodeError
from .base import EVENT_COLUMNS, Integrity, TraceStore, WriteResult
from .sqlite import SqliteTraceStore

DEFAULT_STORE_URL = "sqlite:///.pullmode/trace_store.db"
STORE_URL_ENV = "PULLMODE_TRACE_STORE_URL"


def store_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL


def describe_store(url: str | None = None) -> str:
    """The store's URL as commands print it: a Postgres password never shows."""
    url = store_url(url)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import describe_url

        return f"postgresql://{describe_url(url)}"
    return url


def open_store(url: str | None = None) -> TraceStore:
    """Open the store at ``url`` (else ``$PULLMODE_TRACE_STORE_URL``, else the embedded default)."""
    url = store_url(url)
    if url.startswith("sqlite:///"):
        # sqlite:///relative/path.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
        return SqliteTraceStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        # Imported here: psycopg costs a tenth of a second to import, which SQLite users need not pay.
        from .postgres import PostgresTraceStore

        return PostgresTraceStore(url)
    scheme = url.split(":", 1)[0]
    raise PullmodeError(
        f"PULLMODE_TRACE_STORE_URL: unsupported scheme {scheme!r} "
        "(use sqlite:///path.db or postgresql://user:password@host:port/db)"
    )


__all__ = [
    "DEFAULT_STORE_URL",
    "EVENT_COLUMNS",
    "STORE_URL_ENV",
    "Integrity",
    "SqliteTraceStore",
    "TraceStore",
    "WriteResult",
    "describe_store",
    "open_store",
]
