"""One pull per source at a time: a lock beside the trace store that the operating system releases.

A file lock (``flock``) next to a SQLite store, a session advisory lock on a Postgres store; both vanish
with the process that held them, and the lock is re-entrant within a process. A Postgres lock whose
session ends under the pull (a terminated backend) is reported to ``on_lost``, not raised: the pull's
own outcome stands.
Design: docs/design/trace-store.md#locks
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PullmodeError
from . import store_url

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger(__name__)

KEEPALIVE = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
"""TCP keepalives on the lock's session, which idles for the whole pull: a NAT or firewall that drops
quiet connections does not drop it, and a peer that vanished is noticed within about a minute."""

NO_IDLE_TIMEOUTS = (
    "SELECT set_config(name, '0', false) FROM pg_settings "
    "WHERE name IN ('idle_session_timeout', 'idle_in_transaction_session_timeout')"
)
"""The lock's session is idle by design: a server's ``idle_session_timeout`` would end it (and free the
lock) mid-pull. Through pg_settings, so that a server older than 14 (without the setting) is fine."""

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


def advisory_key(source: str) -> int:
    """``source``'s Postgres advisory lock key: the first 64 bits of a BLAKE2b digest, as a signed bigint.

    Distinct names get distinct keys in practice: a store holds at most thousands of sources, and the
    chance that any two of n names share a 64-bit key is about n^2 / 2^65 (3e-12 for 10,000 names).
    A 32-bit CRC collided for real names (``source_1999`` and ``source_1031462``), and anyone could
    make more; a collision here takes about 2^32 tries even when sought on purpose, by someone who
    could name sources anyway. The personalisation keeps the keys apart from other uses of BLAKE2b."""
    digest = hashlib.blake2b(source.encode(), digest_size=8, person=b"pullmode-lock").digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def source_lock(source: str, *, url: str | None = None, on_lost: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``source``'s lock for the block, or raise :class:`SourceBusy` at once (never waits).

    ``on_lost`` hears (one line) that the lock was lost before the block ended: its Postgres session
    ended (a terminated backend, a dropped connection). Default: a warning in this module's log."""
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
    with backend(url, source, on_lost or _log.warning):
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)


@contextmanager
def _file_lock(url: str, source: str, on_lost: Callable[[str], None]) -> Iterator[None]:
    """``on_lost`` is never called: a file lock lives as long as this process."""
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
def _postgres_lock(url: str, source: str, on_lost: Callable[[str], None]) -> Iterator[None]:
    import psycopg

    from .postgres import check_url, describe_url

    check_url(url)
    key = advisory_key(source)
    label = f"pullmode lock {source}: {holder_label()}"[:63]
    conn: psycopg.Connection[Any] | None = None
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name=label, **KEEPALIVE)
        conn.execute(NO_IDLE_TIMEOUTS)
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    except psycopg.Error:
        if conn is not None:
            conn.close()
        raise PullmodeError(
            f"source {source!r}: cannot reach the trace store at {describe_url(url)} to lock the source"
        ) from None
    try:
        if not (got and got[0]):
            raise SourceBusy(source, _holder(conn, key))
        try:
            yield
        finally:
            lost = _unlock(conn, key)
            if lost:
                on_lost(
                    f"source {source!r}: lost its lock during the pull ({lost}), so another pull of it may "
                    "have run alongside; the store keeps each event once"
                )
    finally:
        conn.close()


def _holder(conn: psycopg.Connection[Any], key: int) -> str:
    """Who holds ``key`` (the application name it connected with), as far as Postgres says."""
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.classid::bigint = %s AND l.objid::bigint = %s "
        "AND l.granted LIMIT 1",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),  # a bigint key shows as its two halves
    ).fetchone()
    return row[0].split(": ", 1)[-1] if row and row[0] else "another process"


def _unlock(conn: psycopg.Connection[Any], key: int) -> str | None:
    """Release ``key``; what went wrong when the lock was no longer held (its session ended), else None."""
    import psycopg

    try:
        released = conn.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone()
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or ['connection lost'])[0]}"
    return None if released and released[0] else "the session no longer held it"
