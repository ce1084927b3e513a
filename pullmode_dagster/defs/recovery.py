"""Dead-run recovery: a pull whose process died must not hold its source.

Every poll run records the process that executes it; a run still "in progress" whose process is gone
(same host) is marked failed, and the poller commits its last checkpoint and pulls on.
Design: docs/design/poller.md#dead-run-recovery
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

PROCESS_TAG = "pullmode/process"
IN_PROGRESS = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its closing parenthesis.
    return stat.rsplit(")", 1)[1].split()[19]


def process_identity(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def owner_is_dead(identity: str) -> bool:
    """True only when the owner was on this host and is certainly gone."""
    parts = identity.rsplit(":", 2)
    if len(parts) != 3:
        return False
    host, pid_text, ticks = parts
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    current = _start_ticks(pid)
    return ticks != "?" and current is not None and current != ticks  # the pid was reused


def reap_if_dead(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    """Mark ``run`` failed when it is in progress but the process executing it is gone."""
    identity = run.tags.get(PROCESS_TAG)
    if run.status not in IN_PROGRESS or not identity or not owner_is_dead(identity):
        return run
    instance.report_run_failed(
        run,
        message=f"pullmode: the process that ran this pull ({identity}) is gone (killed, out of memory or "
        "crashed); marked failed so the source can pull again from its last checkpoint",
    )
    return instance.get_run_by_id(run.run_id) or run
