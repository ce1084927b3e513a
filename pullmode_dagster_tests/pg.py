"""The machine's Postgres for tests: a fresh, uniquely named database per test, dropped afterwards.

Tests use Postgres for real (no mocks). The server is 127.0.0.1:5432 as user ``postgres`` (trust
auth), or whatever ``PULLMODE_TEST_PG_URL`` names (an admin connection able to create databases).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get("PULLMODE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "pullmode_test_"


def database_url(name: str) -> str:
    """The admin URL pointed at database ``name``."""
    return urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()


def connect(url: str) -> psycopg.Connection:
    """A plain autocommit connection, for what a test does behind the store's back."""
    return psycopg.connect(url, autocommit=True)


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (closing whatever still holds it open)."""
    name = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with connect(ADMIN_URL) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(name)
    finally:
        with connect(ADMIN_URL) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def blocked_by(admin: psycopg.Connection, blocker: psycopg.Connection) -> tuple[int, str] | None:
    """The session (pid, query) waiting on a lock ``blocker`` holds, if any."""
    return admin.execute(  # type: ignore[return-value]
        "SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [blocker.info.backend_pid]
    ).fetchone()
