"""``pullmode rewind``: set where a source's next pull starts, in its poller's stored cursor.

What ``dagster sensor cursor NAME_poller --set`` does (a bare cursor state, which the poller takes as
set by hand), with the checks a hand-set cursor misses: the cursor is validated and sealed as the
poller's are, and a pull in flight refuses it.
Design: docs/design/poller.md#rewinding-a-source
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..defs.names import poller_name
from ..defs.outgoing import CursorSeal
from ..defs.sensors import PollPlanState, utc_now
from ..engine.adapters.registry import check_position
from ..engine.cursor import CursorFormatError, CursorState, load_object
from ..engine.declare.models import SourceConfig
from ..engine.errors import PullmodeError
from ..engine.events.rules import format_timestamp
from ..engine.export import parse_time
from ..engine.store.locks import SourceBusy
from .pull import code_location_project, default_workspace, open_instance, stored_committed
from .sensor_state import SensorCursors


def requested_cursor(source: SourceConfig, *, to: str | None, cursor: str | None) -> CursorState:
    """The cursor ``--to`` (a watermark) or ``--cursor`` (any cursor state) asks for, validated as
    the source's pull would check it when it starts."""
    if to is not None:
        problem = source.watermark_rewind_problem()
        if problem:
            raise PullmodeError(
                f"source {source.name!r}: --to cannot rewind {source.adapter}: {problem}; give the cursor with --cursor"
            )
        return CursorState(watermark=format_timestamp(parse_time(to, option="--to")))
    try:
        doc = load_object(cursor, what="--cursor")
        if doc is None:
            raise CursorFormatError("--cursor is empty; {} means from the beginning")
        if "committed" in doc:
            raise CursorFormatError(
                "--cursor takes a cursor state (the poller cursor's `committed` part), not the poller's whole cursor"
            )
        state = CursorState.from_dict(doc)
        check_position(source, state)
    except CursorFormatError as exc:
        raise PullmodeError(f"source {source.name!r}: {exc}") from None
    return state


def rewind_source(
    name: str,
    *,
    to: str | None = None,
    cursor: str | None = None,
    workspace: Path | None = None,
    fallback_home: Path | None = None,
    echo: Callable[[str], None] = print,
) -> CursorState:
    """Set source ``name``'s committed cursor (refused while a pull of it is in flight); returns the
    cursor stored, sealed. The poller's next evaluation (or ``pullmode pull``) pulls from there."""
    workspace = workspace if workspace is not None else default_workspace()
    project = code_location_project(workspace)
    source = project.sources.get(name)  # a clear error for an unknown or invalid name
    seal = CursorSeal(source)
    wanted = seal(requested_cursor(source, to=to, cursor=cursor), "cursor")  # a secret in it is never stored
    sensor = poller_name(name)
    with open_instance(fallback_home) as instance:
        cursors = SensorCursors(instance, workspace)
        stored = cursors.get(sensor)
        try:
            state = PollPlanState.from_json(stored)
        except CursorFormatError:  # set wrong by hand: this replaces it; any run in progress still refuses
            state = PollPlanState()
        busy = project.pollers[name].in_flight(state, instance, utc_now())
        if busy is not None:
            raise PullmodeError(f"source {name!r}: not rewound: {busy}; rewind it once that run has ended")
        try:
            with project.defs.resources["trace_store"].lock(name):
                cursors.set(sensor, wanted.to_json())
        except SourceBusy as exc:  # a `pullmode pull` between its lock and its run
            raise PullmodeError(f"source {name!r}: not rewound: {SourceBusy.reason(exc.holder)}") from None
    was = stored_committed(stored)
    echo(
        seal.redact(
            f"{name}: cursor set to {wanted.to_json()}"
            + (f" (was {was})" if was is not None else "")
            + f"; the poller's next evaluation pulls from there (or now: pullmode pull {name})"
        )
    )
    return wanted
