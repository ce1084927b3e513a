"""Small helpers every test file shares: the ids a store holds, a free port, fakes for sleeping and
for a monotonic clock, the instance config of the daemon tests. One home for each (they were written
once per test file)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from pullmode_dagster.engine.events.model import NormalizedEvent

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]


def stored_ids(store: Any, source: str | None = None, *, key: Callable[[str], Any] | None = None) -> list[str]:
    """The ``source_event_id`` of every row ``store`` holds (of ``source`` only, when given), sorted
    (by ``key``, when given)."""
    return sorted((r["source_event_id"] for r in store.tail(source=source, limit=10**7)), key=key)


def ev(i: int, source: str = "s", **fields: Any) -> NormalizedEvent:
    """Event ``e{i}`` of ``source`` at 2026-03-01T00:00:(i mod 60), payload ``{"i": i}``; keyword
    arguments (``NormalizedEvent``'s field names) replace any field."""
    stamp = f"2026-03-01T00:00:{i % 60:02d}.000000Z"
    event = NormalizedEvent(source, f"e{i}", stamp, "a", "act", "t", 0.5, 1, 2, json.dumps({"i": i}), "org")
    return replace(event, **fields)


def wait_for(
    probe: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "",
    process: subprocess.Popen[Any] | None = None,
    *,
    interval: float = 0.02,
) -> Any:
    """Poll ``probe`` every ``interval`` seconds until it returns something truthy (a session
    reaching a lock wait, say), and return that; fail after ``timeout`` seconds, or as soon as
    ``process``, when given, has exited."""
    deadline = time.monotonic() + timeout
    what = what or str(probe)
    while True:
        value = probe()
        if value:
            return value
        assert process is None or process.poll() is None, f"{process.args} exited ({process.returncode}): {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (for a server the test starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sleeps(list[float]):
    """Records the waits a pull asked for (Retry-After, backoff) instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class StepClock(Generic[T]):
    """A clock that only moves when told to (``clock.now += 60``): monotonic seconds for a pull's
    deadlines, a ``datetime`` for a sensor's cron (``dagster_helpers.Clock``)."""

    def __init__(self, now: T) -> None:
        self.now = now

    def __call__(self) -> T:
        return self.now


def install_quick_config(home: Path) -> None:
    """The repository's dagster.yaml as ``home``/dagster.yaml, with the run queue looked at every
    second, not every 5: the daemon tests wait for runs, not for the queue. Everything else (the
    pools, their limit, run monitoring) is as shipped."""
    config = (REPO / "dagster.yaml").read_text()
    quick = "class: QueuedRunCoordinator\n  config:\n    dequeue_interval_seconds: 1\n"
    assert "class: QueuedRunCoordinator\n" in config
    (home / "dagster.yaml").write_text(config.replace("class: QueuedRunCoordinator\n", quick, 1))
