"""Bounded waits for tests: a child process's output read line by line with a deadline, and threads
joined with one. A regression then fails at once with what was expected and what was seen, instead of
hanging until pytest's global timeout."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO

EOF = object()
"""What the reader thread queues when the child closed its output."""


class LineReader:
    """Reads ``stream`` (a child's stdout, opened in text mode) in a daemon thread; ``next_line``
    waits for one line at most ``timeout`` seconds. ``describe`` (called only on a failure) adds
    context to the message: the child's exit code and stderr, say."""

    def __init__(self, stream: IO[str], describe: Callable[[], str] = lambda: ""):
        self.lines: queue.Queue[object] = queue.Queue()
        self.seen: list[str] = []
        self.describe = describe
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self.lines.put(line)
        except ValueError:  # the stream was closed under us: the test is over
            pass
        finally:
            self.lines.put(EOF)

    def next_line(self, timeout: float, expecting: str = "a line") -> str:
        """The next line without its newline; fails if none arrives within ``timeout`` seconds or the
        child closed its output."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(self._failure(f"no line within {timeout}s", expecting)) from None
        if line is EOF:
            self.lines.put(EOF)  # later reads fail the same way
            raise AssertionError(self._failure("the output ended", expecting))
        text = str(line).rstrip("\n")
        self.seen.append(text)
        return text

    def _failure(self, what: str, expecting: str) -> str:
        context = self.describe()
        return f"{what}, expecting {expecting}; read so far: {self.seen!r}" + (f"\n{context}" if context else "")


def join_all(threads: Iterable[threading.Thread], timeout: float) -> None:
    """Join every thread within ``timeout`` seconds in all; fails naming those still running."""
    deadline = time.monotonic() + timeout
    threads = list(threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"still running after {timeout}s (blocked?): {alive}"
