"""Dead-run recovery: a pull whose process died must not hold its source.

Every run of a source (a poll or a window) records the process that executes it; a run still "in
progress" whose process is certainly gone (same host, boot and PID namespace, so the pid means the same
process here) is marked failed, and the poller commits its last checkpoint and pulls on. Whatever
cannot be checked from here is left to Dagster's run monitoring.
Design: docs/design/poller.md#dead-run-recovery
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import dagster as dg

from . import instance_api
from .names import EXECUTING, PROCESS_TAG

UNKNOWN = "?"

_IDENTITY = re.compile(
    r"(?P<host>.+):(?P<pid>\d+):(?P<start>\d+|\?):(?P<boot>[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}|\?)"
    r":(?P<pidns>\d+|\?)"
)
"""``host:pid:start:boot_id:pid_namespace`` (a field not known where it was recorded is ``?``). The tags
of older versions (``host:pid:start``) do not match: they say nothing of the boot or namespace."""


def _proc_is_ours() -> bool:
    """Whether /proc shows this process's PID namespace (it does not after ``unshare --pid`` without
    ``--mount-proc``): only then does ``/proc/<pid>`` name the process ``<pid>`` names here."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    if not _proc_is_ours():
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its closing parenthesis.
    return stat.rsplit(")", 1)[1].split()[19]


def _boot_id() -> str | None:
    """Random per boot of the machine, the same in every container on it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_namespace(pid: int | None = None) -> str | None:
    """The inode of the process's PID namespace (unique within one boot); None where unknown."""
    try:
        return str(os.stat(f"/proc/{'self' if pid is None else pid}/ns/pid").st_ino)
    except OSError:
        return None


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start:boot_id:pid_namespace`` of this process (or ``pid``, a process of ours)."""
    own = pid is None or pid == os.getpid()
    pid = os.getpid() if pid is None else pid
    namespace = _pid_namespace(None if own else pid)
    fields = (socket.gethostname(), str(pid), _start_ticks(pid), _boot_id(), namespace)
    return ":".join(field or UNKNOWN for field in fields)


def owner_is_dead(identity: str) -> bool:
    """True only when the owner certainly is gone: it ran on this host, in this boot and in this PID
    namespace, and its pid names no process here (or one started later: the pid was reused).

    Anything else (another host, boot or namespace, a field unknown on either side, a tag from an older
    version, which cannot tell a container sharing the host's name from this process's host) is not
    reaped: a live run taken for dead would be failed while it still writes, and pulled twice."""
    owner = _IDENTITY.fullmatch(identity)
    if owner is None:
        return False
    here = (socket.gethostname(), _boot_id(), _pid_namespace())
    there = (owner["host"], owner["boot"], owner["pidns"])
    if None in here or UNKNOWN in there or here != there:
        return False
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    current = _start_ticks(pid)
    return owner["start"] != UNKNOWN and current is not None and current != owner["start"]  # the pid was reused


def reap_if_dead(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    """Mark ``run`` failed when it is in progress but the process executing it is gone."""
    identity = run.tags.get(PROCESS_TAG)
    if run.status not in EXECUTING or not identity or not owner_is_dead(identity):
        return run
    instance_api.report_run_failed(
        instance,
        run,
        f"pullmode: the process that ran this pull ({identity}) is gone (killed, out of memory or "
        "crashed); marked failed so the source can pull again from its last checkpoint",
    )
    return instance.get_run_by_id(run.run_id) or run
