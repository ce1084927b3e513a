"""Reading a small local file (a source file, a secret file) that might be anything: never block on
a FIFO or a device, never read past a cap."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_capped(path: Path, cap: int, check: Callable[[os.stat_result], None]) -> bytes | None:
    """At most ``cap`` bytes of ``path``; None when the file holds more. ``check`` vets the file's
    type and size (raising its caller's own error) before it is opened and again on the open
    descriptor, which is non-blocking. OS errors propagate."""
    check(os.stat(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        check(os.fstat(fd))
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = os.read(fd, cap + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return None if size > cap else b"".join(chunks)
