"""``pullmode pull``: one poll cycle now, through Dagster, on the poller's own path.

The same :class:`~.sensors.Poller` decides (refusing when a pull is in flight), the same job runs
with the same run config and tags, recorded in the instance, and the same settle step commits the
cursor only when that run succeeded. It runs in this process, so it needs no daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from .assets import asset_key
from .sensor_state import SensorCursors
from .sensors import Poller, PollerState, job_name, poller_name, run_metadata, utc_now


@dataclass
class PullOutcome:
    source: str
    ok: bool
    message: str
    run_id: str | None = None
    metadata: dict[str, Any] | None = None
    cursor: str | None = None


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error:
                return (data.error.message or "").strip()
    return "the run failed"


def pull_once(
    *,
    pollers: dict[str, Poller],
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursors: SensorCursors,
    name: str,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
) -> PullOutcome:
    poller = pollers[name]
    sensor = poller_name(name)
    state = PollerState.from_json(cursors.get(sensor))
    decision = poller.decide(state, instance=instance, now=utc_now(), force=True, via="cli")
    for line in decision.log if verbose else []:
        echo(f"{name}: {line}")
    if decision.run_request is None:
        cursors.set(sensor, decision.state.to_json())
        return PullOutcome(
            name, False, f"not pulled: {decision.skip_reason}", cursor=decision.state.committed.to_json()
        )
    request = decision.run_request
    cursors.set(sensor, decision.state.to_json())  # announce the pull in flight before it starts
    # Same run config as the poller's request; only the console logger is quieter (the event log
    # in the instance keeps everything, as for any run).
    console = {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}}
    result = defs.resolve_job_def(job_name(name)).execute_in_process(
        run_config={**request.run_config, "loggers": console},
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        raise_on_error=False,
    )
    log: list[str] = []
    settled, _ = poller.settle(decision.state, instance, utc_now(), log)
    cursors.set(sensor, settled.to_json())
    for line in log if verbose else []:
        echo(f"{name}: {line}")
    if not result.success:
        return PullOutcome(
            name, False, f"FAILED: {failure_message(result)}", result.run_id, cursor=settled.committed.to_json()
        )
    metadata = run_metadata(instance, result.run_id, asset_key(name)) or {}
    return PullOutcome(name, True, "ok", result.run_id, metadata, settled.committed.to_json())


def default_workspace() -> Path | None:
    path = Path("workspace.yaml")
    return path if path.exists() else None


def open_instance(fallback_home: Path | None = None) -> dg.DagsterInstance:
    """The instance ``dagster dev`` would use from here: ``$DAGSTER_HOME``; else the current
    directory when it holds a ``dagster.yaml`` (the repository root); else ``fallback_home``."""
    import os

    from dagster._core.instance.ref import InstanceRef

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    if Path("dagster.yaml").exists():
        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(Path.cwd())))
    if fallback_home is not None:
        fallback_home.mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(fallback_home.resolve())))
    from ..engine.errors import PullmodeError

    raise PullmodeError(
        "no Dagster instance: set DAGSTER_HOME to the directory holding dagster.yaml, or run from the repository root"
    )


def summarize(outcome: PullOutcome) -> str:
    if not outcome.ok:
        run = f" (run {outcome.run_id})" if outcome.run_id else ""
        return f"{outcome.source}: {outcome.message}{run}; committed cursor stays {outcome.cursor}"
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
    resources: dict[str, object] | None = None,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
) -> list[PullOutcome]:
    """One poll cycle for each named source (or every enabled one), through Dagster."""
    from ..definitions import build_project
    from ..engine.errors import ConfigError

    project = build_project(resources=resources)
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
        raise ConfigError([f"no source to pull in {project.sources.directory}"])
    outcomes = []
    with open_instance(fallback_home) as instance:
        cursors = SensorCursors(instance, workspace if workspace is not None else default_workspace())
        for name in names:
            outcome = pull_once(
                pollers=project.pollers,
                defs=project.defs,
                instance=instance,
                cursors=cursors,
                name=name,
                echo=echo,
                verbose=verbose,
            )
            echo(summarize(outcome))
            outcomes.append(outcome)
    return outcomes
