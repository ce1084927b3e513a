"""``pullmode pull``: one poll cycle now, through Dagster, on the poller's own path.

Same planner, job, run config, tags and settle step as the poller, in this process (no daemon needed).
Design: docs/design/poller.md#pullmode-pull
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dagster as dg

from ..definitions import Project, project_of
from ..defs.location import default_workspace, find_dg_project
from ..defs.names import PROCESS_TAG, job_name, poller_name
from ..defs.outgoing import secrets_for
from ..defs.pools import ensure_pool_limits
from ..defs.recovery import process_identity
from ..defs.sensors import (
    PollPlanner,
    PollPlanState,
    Prober,
    counted,
    probe_resource_defs,
    resources_prober,
    run_metadata,
    utc_now,
)
from ..engine.cursor import CursorFormatError
from ..engine.errors import ConfigError, PullmodeError
from ..engine.store.locks import SourceBusy
from .sensor_state import SensorCursors, code_location_origin, load_definitions


@dataclass
class PullOutcome:
    source: str
    ok: bool
    message: str
    run_id: str | None = None
    metadata: dict[str, Any] | None = None
    cursor: str | None = None
    interrupted: bool = False
    quiet: bool = False
    """The probe found nothing new: no run, a quiet poll recorded."""


def console_loggers(verbose: bool) -> dict[str, Any]:
    """Run config for an in-process run's console: its log only when asked for (the instance's
    event log keeps everything either way)."""
    return {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}}}


def failure_info(result: dg.ExecuteInProcessResult) -> tuple[str, dict[str, Any]]:
    """The step failure's one-line description and its metadata (plain values)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                metadata = {k: v.value for k, v in (data.user_failure_data.metadata or {}).items()}
                return data.user_failure_data.description, metadata
            if data.error:
                return (data.error.message or "").strip().splitlines()[0], {}
    return "the run failed", {}


def pull_once(
    *,
    pollers: dict[str, PollPlanner],
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursors: SensorCursors,
    name: str,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
    lock: Callable[..., AbstractContextManager[None]] | None = None,
    probe: Prober | None = None,
) -> PullOutcome:
    """One poll cycle of ``name`` holding the source's lock, so two pulls started at the same moment
    (two shells, or a shell and the daemon's run) never both run: the second is refused at once.
    With ``probe``, the poller's question comes first: nothing new records a quiet poll, no run.
    Everything it prints or returns is redacted with the source's secrets. A lock lost under the pull
    is a warning: the pull's own outcome stands (``--all`` goes on)."""
    redact = secrets_for(pollers[name].source).redact

    def say(line: str) -> None:
        echo(redact(line))

    try:
        with (lock or (lambda _, **__: nullcontext()))(name, on_lost=lambda m: say(f"{name}: warning: {m}")):
            outcome = _pull_locked(pollers, defs, instance, cursors, name, say, verbose, probe)
    except SourceBusy as exc:
        # A cursor set wrong by hand shows none: the pull that holds the source will say so.
        committed = stored_committed(cursors.get(poller_name(name)))
        outcome = PullOutcome(name, False, f"not pulled: {SourceBusy.reason(exc.holder)}", cursor=committed)
    except PullmodeError as exc:  # a stored cursor set wrong by hand or that cannot be sealed: refused, not pulled
        outcome = PullOutcome(name, False, f"not pulled: {exc}")
    return replace(
        outcome,
        message=redact(outcome.message),
        cursor=redact(outcome.cursor) if outcome.cursor is not None else None,
        metadata=redact.scrub(outcome.metadata),
    )


def _pull_locked(
    pollers: dict[str, PollPlanner],
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursors: SensorCursors,
    name: str,
    echo: Callable[[str], None],
    verbose: bool,
    probe: Prober | None = None,
) -> PullOutcome:
    poller = pollers[name]
    sensor = poller_name(name)
    state = PollPlanState.from_json(cursors.get(sensor))
    decision = poller.decide(state, instance=instance, now=utc_now(), force=True, via="cli", probe=probe)
    for line in decision.log if verbose else []:
        echo(f"{name}: {line}")
    cursors.set(sensor, decision.state.to_json())  # with a pull to run: announced in flight before it starts
    if decision.quiet is not None:
        # What the poller records for a quiet tick, reported to the instance here (no run, no sensor).
        quiet = counted(decision.quiet, poller.source, defs.resources["trace_store"])
        materialization = quiet.materialization(poller.key, decision.redact)
        instance.report_runless_asset_event(materialization)
        return PullOutcome(name, True, decision.quiet.line(name), cursor=decision.state.committed.to_json(), quiet=True)
    request = decision.run_request
    if request is None:
        return PullOutcome(
            name, False, f"not pulled: {decision.skip_reason}", cursor=decision.state.committed.to_json()
        )
    # Same run config as the poller's request; the console shows the run's log only with -v (the
    # event log in the instance keeps everything, as for any run), so a failure is one line.
    result = defs.resolve_job_def(job_name(name)).execute_in_process(
        run_config=dg.RunConfig(ops=request.run_config["ops"], loggers=console_loggers(verbose)),
        instance=instance,
        partition_key=request.partition_key,
        tags={**request.tags, PROCESS_TAG: process_identity()},
        raise_on_error=False,
    )
    log: list[str] = []
    settled, _ = poller.settle(decision.state, instance, utc_now(), log)
    committed: str | None = settled.committed.to_json()
    stored = cursors.get(sensor)
    if set_by_hand(stored):
        # Rewound while the run ran: the cursor set wins (the next pull or evaluation starts there).
        echo(f"{name}: the cursor was set by hand while run {result.run_id} ran: its end cursor is not committed")
        log, committed = [], stored_committed(stored)
    else:
        cursors.set(sensor, settled.to_json())
    for line in log if verbose else []:
        echo(f"{name}: {line}")
    if not result.success:
        message, metadata = failure_info(result)
        return PullOutcome(
            name,
            False,
            f"FAILED: {message}",
            result.run_id,
            cursor=committed,
            interrupted=bool(metadata.get("interrupted")),
        )
    metadata = run_metadata(instance, result.run_id, poller.key) or {}
    return PullOutcome(name, True, "ok", result.run_id, metadata, committed)


def set_by_hand(text: str | None) -> bool:
    """Whether a stored poller cursor was set by hand since a poller or a pull last wrote it (one
    that does not parse counts: it was set by hand, and the next pull reports it)."""
    try:
        return PollPlanState.from_json(text).set_by_hand
    except CursorFormatError:
        return True


def stored_committed(text: str | None) -> str | None:
    """The committed cursor of a stored poller cursor (None: it does not parse)."""
    try:
        return PollPlanState.from_json(text).committed.to_json()
    except CursorFormatError:
        return None


def code_location_project(workspace: Path | None) -> Project:
    """The project of the code location whose pollers the command acts for (``workspace``'s, else
    the dg project's here, else ``pullmode_dagster.definitions``), loaded as its code server loads
    it: the sources directory, translator and resources it was built with."""
    return project_of(load_definitions(code_location_origin(workspace)))


def open_instance(fallback_home: Path | None = None) -> dg.DagsterInstance:
    """The instance ``dagster dev`` would use from here: ``$DAGSTER_HOME``; else the current
    directory when it holds a ``dagster.yaml`` (the repository root, or a dg project's); else
    ``fallback_home``.

    Opening a brand-new SQLite instance creates its tables; two ``pullmode pull`` started at the
    same moment would both try (``table run_tags already exists``), so opening takes turns.

    A ``$DAGSTER_HOME`` that is not a directory is refused, as Dagster's own commands refuse it, not
    created: a typo would otherwise open a new, empty instance, where every poller starts from the
    beginning and the alert sensor forgets what it sent."""
    import os

    project = find_dg_project(Path.cwd())
    # Where a dagster.yaml is read from with DAGSTER_HOME unset: the dg project's root (a command in
    # a dg project runs from there, as dg does) or the repository root.
    here = f"the dg project's root ({project.root})" if project else "the repository root"
    if os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"]).expanduser()
        if not home.is_dir():
            what = "is not a directory" if home.exists() else "does not exist"
            raise PullmodeError(
                f"DAGSTER_HOME={home} {what}: point it at the directory holding the instance's dagster.yaml "
                f"(mkdir -p {home} to start a new instance there), or unset it to use ./dagster.yaml from {here}"
            )
    elif Path("dagster.yaml").exists():
        home = Path.cwd()
    elif fallback_home is not None:
        fallback_home.mkdir(parents=True, exist_ok=True)
        home = fallback_home.resolve()
    elif project is not None:
        raise PullmodeError(
            f"no Dagster instance: the dg project {project.root} has no dagster.yaml (without one, `dg dev` keeps "
            "runs and cursors in a temporary directory it deletes on exit). Add a dagster.yaml there, as "
            "examples/dg_project's (storage in .pullmode/dagster, shared by `dg dev` and `pullmode`), or set "
            "DAGSTER_HOME to the directory holding the instance's dagster.yaml"
        )
    else:
        raise PullmodeError(
            "no Dagster instance: set DAGSTER_HOME to the directory holding dagster.yaml, or run from the "
            "repository root"
        )
    with _exclusive(home / ".pullmode-instance.lock"):
        return dg.DagsterInstance.from_config(str(home))


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """A blocking file lock, held for a moment (instance setup), released by the OS if we die."""
    import fcntl
    import os

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def summarize(outcome: PullOutcome) -> str:
    if outcome.quiet:
        return outcome.message
    if not outcome.ok:
        run = f" (run {outcome.run_id})" if outcome.run_id else ""
        cursor = f"; committed cursor {outcome.cursor}" if outcome.cursor else ""
        return f"{outcome.source}: {outcome.message}{run}{cursor}"
    m = outcome.metadata or {}
    return (
        f"{outcome.source}: {m.get('events_written', 0)} written, {m.get('duplicates_skipped', 0)} duplicates "
        f"skipped, {m.get('rejected', 0)} rejected, "
        + (f"{m['files']} files, " if m.get("files") else f"{m.get('pages', 0)} pages, ")
        + f"{m.get('bytes', 0)} bytes; "
        f"committed cursor {outcome.cursor} (run {outcome.run_id})"
    )


def pull_sources(
    names: list[str],
    *,
    all_sources: bool = False,
    workspace: Path | None = None,
    fallback_home: Path | None = None,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
    always_run: bool = False,
) -> list[PullOutcome]:
    """One poll cycle for each named source (or every enabled one) of the code location ``workspace``
    names (default ``./workspace.yaml``, see :func:`code_location_project`), through Dagster: the
    poller's probe first (nothing new: a quiet poll, no run), unless ``always_run``."""
    if not verbose and not logging.getLogger().handlers:
        # Without -v the console gets one line per source. A library that logs an error with its
        # traceback (SQLAlchemy closing a connection a Ctrl-C interrupted) would otherwise reach
        # stderr through Python's last-resort handler; the instance's event log keeps the run's story.
        logging.getLogger().addHandler(logging.NullHandler())
    workspace = workspace if workspace is not None else default_workspace()
    project = code_location_project(workspace)
    if all_sources:
        skipped = sorted(n for n, s in project.sources.sources.items() if not s.enabled)
        for name in skipped:
            echo(f"{name}: disabled, not pulled")
        names = sorted(n for n, s in project.sources.sources.items() if s.enabled)
        for invalid in project.sources.invalid:
            for problem in invalid.problems:
                echo(f"left out: {problem}")
    else:
        for name in names:
            project.sources.get(name)  # a clear error for an unknown or invalid name
    if not names:
        raise ConfigError([f"no source to pull in {project.sources.where}"])
    outcomes: list[PullOutcome] = []
    trace_store = project.defs.resources["trace_store"]
    with (
        terminate_as_interrupt(),
        open_instance(fallback_home) as instance,
        probe_resources(project.defs, instance, skip=always_run) as resources,
    ):
        cursors = SensorCursors(instance, workspace)
        # This pull runs in process, outside the run queue; the queue then holds the source's
        # other runs (a backfill's) while it runs, once its pool has a limit.
        ensure_pool_limits(instance, project.sources.sources)
        for name in names:
            try:
                outcome = pull_once(
                    pollers=project.pollers,
                    defs=project.defs,
                    instance=instance,
                    cursors=cursors,
                    name=name,
                    echo=echo,
                    verbose=verbose,
                    lock=trace_store.lock,
                    probe=None
                    if resources is None
                    else resources_prober(project.pollers[name].source, resources, logging.getLogger("pullmode")),
                )
            except KeyboardInterrupt:
                # Outside the run itself (which ends as failed with its checkpoint, below): nothing
                # to keep; an announced pull is forgotten by the next one, its owner being gone.
                outcome = PullOutcome(name, False, "interrupted (SIGINT or SIGTERM)", interrupted=True)
            echo(summarize(outcome))
            outcomes.append(outcome)
            if outcome.interrupted:
                break
    return outcomes


@contextmanager
def probe_resources(defs: dg.Definitions, instance: dg.DagsterInstance, *, skip: bool) -> Iterator[Any]:
    """The resources the probe uses, initialized as Dagster would for the sensor (a setting bound to
    an environment variable is read now); None with ``--always-run``. On the instance already open:
    without one, Dagster builds an ephemeral instance for them (a tenth of an idle pull's CPU)."""
    if skip:
        yield None
        return
    wanted = probe_resource_defs(defs.resources)
    with dg.build_resources(wanted, instance=instance) as resources:
        yield resources


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends ``pullmode pull`` the way Ctrl-C does: the run in progress fails with its
    checkpoint recorded (Dagster raises the interrupt inside the step), and no further source
    starts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
