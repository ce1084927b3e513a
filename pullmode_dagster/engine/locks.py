"""One pull per source at a time: a lock beside the trace store that the operating system releases.

A file lock (``flock``) next to a SQLite store, a session advisory lock on a Postgres store; both vanish
with the process that held them, and the lock is re-entrant within a process.
Design: docs/design/trace-store.md#locks
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import PullmodeError
from .store import store_url

LOCK_CLASS = 0x706D  # "pm": the first key of pullmode's Postgres advisory locks

_held: dict[tuple[str, str], int] = {}
_guard = threading.Lock()


class SourceBusy(PullmodeError):
    """Another process is pulling this source right now: ``holder`` says which."""

    def __init__(self, source: str, holder: str):
        super().__init__(f"source {source!r}: {self.reason(holder)}")
        self.source, self.holder = source, holder

    def __reduce__(self) -> tuple[type[SourceBusy], tuple[str, str]]:
        return SourceBusy, (self.source, self.holder)  # pickles (process pools) with its own arguments

    @staticmethod
    def reason(holder: str) -> str:
        return f"another pull is running ({holder})"


def holder_label() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


@contextmanager
def source_lock(source: str, *, url: str | None = None) -> Iterator[None]:
    """Hold ``source``'s lock for the block, or raise :class:`SourceBusy` at once (never waits)."""
    url = store_url(url)
    key = (url, source)
    with _guard:
        if _held.get(key):
            _held[key] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    backend = _postgres_lock if url.startswith(("postgresql://", "postgres://")) else _file_lock
    with backend(url, source):
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)


@contextmanager
def _file_lock(url: str, source: str) -> Iterator[None]:
    path = url.removeprefix("sqlite:///")
    if path == ":memory:":
        yield  # a store private to this process: the in-process count above is the whole lock
        return
    lock_dir = Path(path + ".locks")
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{source}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise SourceBusy(source, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_label().encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _postgres_lock(url: str, source: str) -> Iterator[None]:
    import psycopg

    from .store.postgres import describe_url

    objid = zlib.crc32(source.encode()) - (1 << 31)  # a stable signed 32-bit key per source
    label = f"pullmode lock {source}: {holder_label()}"[:63]
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name=label)
    except psycopg.Error:
        raise PullmodeError(
            f"source {source!r}: cannot reach the trace store at {describe_url(url)} to lock the source"
        ) from None
    with conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, objid)).fetchone()
        if not (got and got[0]):
            row = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted LIMIT 1",
                (LOCK_CLASS, objid & 0xFFFFFFFF),
            ).fetchone()
            holder = row[0].split(": ", 1)[-1] if row and row[0] else "another process"
            raise SourceBusy(source, holder)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, objid))
