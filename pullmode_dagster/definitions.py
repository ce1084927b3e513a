"""The code location: ``workspace.yaml`` loads this module (``dagster dev`` from the repository root).

Every valid source in ``$PULLMODE_SOURCES_DIR`` becomes an asset ``ingestion/<name>``, a job
``<name>_pull`` and a sensor ``<name>_poller``. A file that fails validation, or a source whose
definitions fail to build, does not take the others down: it is left out, and a placeholder asset
under the key it would have had shows its problems in the UI.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass

import dagster as dg

from .defs.alerts import build_alert_sensor
from .defs.assets import GROUP, build_invalid_source_asset, build_source_asset, invalid_asset_name
from .defs.io_manager import EVENTS_IO_MANAGER_KEY, TraceStoreEventsIOManager
from .defs.names import SOURCE_TAG, job_name
from .defs.resources import default_resources
from .defs.sensors import (
    Clock,
    PollerResources,
    PollPlanner,
    build_poller_sensor,
    utc_now,
)
from .defs.translator import PullmodeTranslator
from .engine.adapters import ADAPTERS
from .engine.declare.loading import InvalidSource, SourceSet, load_sources, one_line
from .engine.declare.models import SourceConfig
from .engine.errors import Problem, PullmodeError

log = logging.getLogger("pullmode")


@dataclass
class Project:
    """The Definitions plus what ``pullmode pull`` needs to walk the pollers' path."""

    defs: dg.Definitions
    pollers: dict[str, PollPlanner]
    sources: SourceSet


@dataclass(frozen=True)
class _SourceDefs:
    """One source's part of the code location."""

    asset: dg.AssetsDefinition
    job: dg.UnresolvedAssetJobDefinition
    sensor: dg.SensorDefinition
    poller: PollPlanner


def _source_defs(
    source: SourceConfig, resources: PollerResources, clock: Clock, translator: PullmodeTranslator
) -> _SourceDefs:
    asset = build_source_asset(source, translator)
    job = dg.define_asset_job(
        job_name(source.name),
        selection=dg.AssetSelection.assets(asset.key),
        tags={SOURCE_TAG: source.name},
        description=f"One pull of {source.name}.",
        # One step: run it in the run worker's process rather than paying a step subprocess
        # (a second import of the code location) on every poll.
        executor_def=dg.in_process_executor,
    )
    poller = PollPlanner(source, asset)
    sensor = build_poller_sensor(source, job, poller, resources, clock=clock)
    return _SourceDefs(asset, job, sensor, poller)


def _leave_out(sources: SourceSet, source: SourceConfig, exc: Exception) -> None:
    """A source whose definitions do not build joins the invalid files: a placeholder asset shows
    why, and the other sources load (one source's problem must not take the code location down)."""
    reason = one_line(f"{type(exc).__name__}: {exc}", limit=300)
    problem = Problem(
        f"{source.file or sources.where}: source {source.name!r}: its Dagster definitions could not be built "
        f"({reason}); please report it",
        source.name,
    )
    del sources.sources[source.name]
    sources.problems.append(problem)
    sources.invalid.append(InvalidSource(source.file or sources.directories[0], source.name, (problem,)))


def _definitions(
    built: dict[str, _SourceDefs],
    sources: SourceSet,
    resources: dict[str, object],
    translator: PullmodeTranslator,
    clock: Clock,
) -> dg.Definitions:
    assets = [b.asset for b in built.values()]
    taken = set(built)
    for invalid in sources.invalid:
        name = invalid_asset_name(invalid, taken)
        taken.add(name)
        assets.append(build_invalid_source_asset(invalid, name, translator))
    # The alert sensor watches the freshness of the enabled sources (a source turned off is not news).
    alerts = build_alert_sensor(
        [name for name, b in built.items() if b.poller.source.enabled],
        clock=clock,
        keys={name: b.asset.key for name, b in built.items()},
    )
    sensors = [*(b.sensor for b in built.values()), alerts]
    return dg.Definitions(assets=assets, jobs=[b.job for b in built.values()], sensors=sensors, resources=resources)


def _resolves(defs: dg.Definitions) -> Exception | None:
    """Dagster checks some things only when it resolves the Definitions (cached: loading it again is free)."""
    try:
        defs.get_repository_def()
    except Exception as exc:
        return exc
    return None


def build_project(
    directory: str | os.PathLike[str] | None = None,
    *,
    resources: dict[str, object] | None = None,
    clock: Clock = utc_now,
    translator: PullmodeTranslator | None = None,
) -> Project:
    """The code location's pieces. ``translator`` shapes each source's asset (key, group, tags,
    owners, metadata, blocking checks): :class:`PullmodeTranslator`'s defaults when None."""
    translator = translator or PullmodeTranslator()
    sources = load_sources(directory, adapters=ADAPTERS)
    needs_s3 = any("s3" in ADAPTERS[s.adapter].resources for s in sources.sources.values())
    bound = {**default_resources(s3=needs_s3), **(resources or {})}
    # Downstream assets read the events from the same store the pulls write to.
    bound.setdefault(EVENTS_IO_MANAGER_KEY, TraceStoreEventsIOManager(trace_store=bound["trace_store"]))
    poller_resources = PollerResources(bound, sources.sources)
    built: dict[str, _SourceDefs] = {}
    for source in sorted(sources.sources.values(), key=lambda s: s.name):
        try:
            built[source.name] = _source_defs(source, poller_resources, clock, translator)
        except Exception as exc:
            _leave_out(sources, source, exc)
    defs = _definitions(built, sources, bound, translator, clock)
    if _resolves(defs) is not None:
        # Rare: find the sources Dagster refuses, each alone, and load the others without them.
        for name, pieces in list(built.items()):
            alone = dg.Definitions(assets=[pieces.asset], jobs=[pieces.job], sensors=[pieces.sensor], resources=bound)
            problem = _resolves(alone)
            if problem is not None:
                del built[name]
                _leave_out(sources, sources.sources[name], problem)
        defs = _definitions(built, sources, bound, translator, clock)
    for invalid in sources.invalid:
        for problem in invalid.problems:
            log.error(f"source left out: {problem}")
    for warning in sources.warnings:
        log.warning(warning)
    if not sources.sources and not sources.invalid:
        # The hint only where the environment chose the directory (a component's comes from its defs.yaml).
        log.warning(f"no source files in {sources.where}" + ("" if directory else " (set PULLMODE_SOURCES_DIR)"))
    project = Project(defs, {name: b.poller for name, b in built.items()}, sources)
    _remember(project)
    return project


_BUILT: dict[int, tuple[dict[str, PollPlanner], SourceSet]] = {}
"""The pollers and sources of each project built in this process, by the id of its ``trace_store``
resource: the one object of a project that the code location's final Definitions keep as it is,
whatever wraps them (a component's code references, ``Definitions.merge``)."""


def _remember(project: Project) -> None:
    store = project.defs.resources["trace_store"]
    _BUILT[id(store)] = (project.pollers, project.sources)
    # Forgotten with the resource (the pieces do not hold it), so an id is never reused while remembered.
    weakref.finalize(store, _BUILT.pop, id(store), None)


def project_of(defs: dg.Definitions) -> Project:
    """The project whose pollers a code location's ``defs`` run: the one ``build_project``,
    ``build_definitions`` or :class:`PullmodeSourcesComponent` built them from, however the code
    location wrapped them. ``pullmode pull`` walks the pollers' path on it, with the keys its
    translator gave."""
    store = (defs.resources or {}).get("trace_store")
    pieces = None if store is None else _BUILT.get(id(store))
    if pieces is None:
        raise PullmodeError(
            "the code location holds no pullmode sources: its Definitions must come from build_definitions(), "
            "build_project() or a PullmodeSourcesComponent (with their trace_store resource)"
        )
    return Project(defs, *pieces)


def build_definitions(
    directory: str | os.PathLike[str] | None = None,
    *,
    resources: dict[str, object] | None = None,
    clock: Clock = utc_now,
    translator: PullmodeTranslator | None = None,
) -> dg.Definitions:
    """Definitions for every source in ``directory`` (default ``$PULLMODE_SOURCES_DIR``), each
    source's asset shaped by ``translator`` (default :class:`PullmodeTranslator`)."""
    return build_project(directory, resources=resources, clock=clock, translator=translator).defs


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster loads, built when the code location loads (reload it to pick up new files)."""
    return build_definitions()


__all__ = ["GROUP", "Project", "PullmodeTranslator", "build_definitions", "build_project", "defs", "project_of"]
