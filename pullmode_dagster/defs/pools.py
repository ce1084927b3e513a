"""One pull of a source at a time, however its run starts: each source's op is in its own Dagster
concurrency pool, ``pullmode/<name>``, and the instance limits every pool to one run at a time
(``dagster.yaml``: ``concurrency: pools: {granularity: run, default_limit: 1}``). The poller, the
``<name>_pull`` job, the asset page, a backfill and ``pullmode pull`` all run that op, so the run
queue holds a second run of a source until the first has ended, whatever launched either.
Design: docs/design/poller.md#one-pull-per-source
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from . import instance_api
from .names import pool_name


def run_pools(run: dg.DagsterRun) -> frozenset[str]:
    """The pools a run's steps are in, as Dagster recorded them when it created the run."""
    concurrency = run.run_op_concurrency
    return frozenset(concurrency.all_pools or ()) if concurrency is not None else frozenset()


def ensure_pool_limits(instance: dg.DagsterInstance, sources: Iterable[str]) -> list[str]:
    """Give each source's pool the instance's default limit now, before any run of it is queued;
    returns the pools it set.

    Dagster sets a pool's limit (from ``default_limit``) when its run queue first sees a run of that
    pool, but it reads which pools have a limit before doing so: in that first pass it launches every
    queued run of the pool at once (dagster 1.13), so the first backfill of a new source would run in
    parallel. The pollers (at their first evaluation in a process) and ``pullmode pull`` call this.
    An instance without ``default_limit`` is left as it is: its pools are unlimited, as Dagster has it."""
    if instance_api.default_pool_limit(instance) is None:
        return []
    missing = sorted({pool_name(s) for s in sources} - instance_api.limited_pools(instance))
    for pool in missing:
        instance_api.limit_pool_to_default(instance, pool)
    return missing
