"""The code location: ``workspace.yaml`` loads this module (``dagster dev`` from the repository root).

Every valid source in ``$PULLMODE_SOURCES_DIR`` becomes an asset ``ingestion/<name>``, a job
``<name>_pull`` and a sensor ``<name>_poller``. A file that fails validation does not take the
others down: it is left out, and a placeholder asset under the key it would have had shows its
problems in the UI.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import dagster as dg

from .defs.alerts import failure_alerts
from .defs.assets import GROUP, SOURCE_TAG, build_invalid_source_asset, build_source_asset, invalid_asset_name
from .defs.io_manager import EVENTS_IO_MANAGER_KEY, TraceStoreEventsIOManager
from .defs.resources import default_resources
from .defs.sensors import Clock, PollPlanner, build_poller_sensor, job_name, utc_now
from .engine.adapters import ADAPTERS
from .engine.sources import SourceSet, load_sources

log = logging.getLogger("pullmode")


@dataclass
class Project:
    """The Definitions plus what ``pullmode pull`` needs to walk the pollers' path."""

    defs: dg.Definitions
    pollers: dict[str, PollPlanner]
    sources: SourceSet


def build_project(
    directory: str | os.PathLike[str] | None = None,
    *,
    resources: dict[str, object] | None = None,
    clock: Clock = utc_now,
) -> Project:
    sources = load_sources(directory)
    assets: list[dg.AssetsDefinition] = []
    jobs: list[dg.UnresolvedAssetJobDefinition] = []
    sensors: list[dg.SensorDefinition] = []
    pollers: dict[str, PollPlanner] = {}
    for source in sorted(sources.sources.values(), key=lambda s: s.name):
        asset = build_source_asset(source)
        job = dg.define_asset_job(
            job_name(source.name),
            selection=dg.AssetSelection.assets(asset.key),
            tags={SOURCE_TAG: source.name},
            description=f"One pull of {source.name}.",
            # One step: run it in the run worker's process rather than paying a step subprocess
            # (a second import of the code location) on every poll.
            executor_def=dg.in_process_executor,
        )
        poller = PollPlanner(source, asset.partitions_def, asset.op.name)  # type: ignore[arg-type]
        assets.append(asset)
        jobs.append(job)
        sensors.append(build_poller_sensor(source, job, poller, clock=clock))
        pollers[source.name] = poller
    taken = set(sources.sources)
    for invalid in sources.invalid:
        name = invalid_asset_name(invalid, taken)
        taken.add(name)
        for problem in invalid.problems:
            log.error(f"source left out: {problem}")
        assets.append(build_invalid_source_asset(invalid, name))
    for warning in sources.warnings:
        log.warning(warning)
    if not sources.sources and not sources.invalid:
        log.warning(f"no source files in {sources.directory} (set PULLMODE_SOURCES_DIR)")
    needs_s3 = any("s3" in ADAPTERS[s.adapter].resources for s in sources.sources.values())
    bound = {**default_resources(s3=needs_s3), **(resources or {})}
    # Downstream assets read the events from the same store the pulls write to.
    bound.setdefault(EVENTS_IO_MANAGER_KEY, TraceStoreEventsIOManager(trace_store=bound["trace_store"]))
    defs = dg.Definitions(assets=assets, jobs=jobs, sensors=[*sensors, failure_alerts], resources=bound)
    return Project(defs, pollers, sources)


def build_definitions(
    directory: str | os.PathLike[str] | None = None,
    *,
    resources: dict[str, object] | None = None,
    clock: Clock = utc_now,
) -> dg.Definitions:
    """Definitions for every source in ``directory`` (default ``$PULLMODE_SOURCES_DIR``)."""
    return build_project(directory, resources=resources, clock=clock).defs


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster loads, built when the code location loads (reload it to pick up new files)."""
    return build_definitions()


__all__ = ["GROUP", "Project", "build_definitions", "build_project", "defs"]
