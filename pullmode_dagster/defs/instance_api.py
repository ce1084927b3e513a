"""The calls the Dagster layer makes that are not Dagster's public API (not ``@public`` on
``DagsterInstance`` in 1.13, or under ``dagster._``), each in one place with why no public one does:
an upgrade of Dagster that changes one breaks here, and ``test_instance_api.py`` pins each against a
real instance.

Everything else uses the public API: ``get_run_records`` (not ``get_runs``), ``get_run_by_id``,
``fetch_run_status_changes``, ``get_latest_materialization_event``, ``report_runless_asset_event``.
(The workspace loading and sensor state only the CLI needs are ``cli/sensor_state.py``'s.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._grpc.utils import default_sensor_grpc_timeout


def run_records_of_type(
    instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType
) -> Sequence[dg.EventLogRecord]:
    """Every event of ``event_type`` one run logged, in order. ``fetch_materializations`` and
    ``fetch_observations`` cannot be narrowed to a run (``AssetRecordsFilter`` has no run id), and
    no public call reads a run's step failures or check evaluations: ``get_records_for_run`` does."""
    return instance.get_records_for_run(run_id, of_type=event_type).records


def add_run_tags(instance: dg.DagsterInstance, run_id: str, tags: Mapping[str, str]) -> None:
    """Tag an existing run (its process identity, the alerts sent about it): no public call does."""
    instance.add_run_tags(run_id, tags)


def report_run_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> None:
    """Mark a run whose process is gone failed, as Dagster's run monitoring would (defs/recovery.py):
    no public call ends a run from outside it."""
    instance.report_run_failed(run, message=message)


def newest_event_id(instance: dg.DagsterInstance) -> int | None:
    """The storage id of the newest event in the log (None: none yet), the bound the alert sensor
    reads run status changes up to; the public ``fetch_*`` calls return pages, not the log's end."""
    return instance.event_log_storage.get_maximum_record_id()


def read_value(instance: dg.DagsterInstance, key: str) -> str | None:
    """A value in the instance's key-value store (where Dagster's daemons keep their cursors), which
    outlives a sensor's cursor; there is no public key-value API."""
    return instance.run_storage.get_cursor_values({key}).get(key) or None


def write_value(instance: dg.DagsterInstance, key: str, value: str) -> None:
    """Store ``value`` under ``key`` (see :func:`read_value`)."""
    instance.run_storage.set_cursor_values({key: value})


def default_pool_limit(instance: dg.DagsterInstance) -> int | None:
    """``concurrency: pools: default_limit`` of the instance, None when unset or when its storage
    keeps no concurrency limits; read from the instance settings (no public accessor)."""
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return None
    return instance.global_op_concurrency_default_limit


def limited_pools(instance: dg.DagsterInstance) -> set[str]:
    """The pools that have a limit set in the instance's storage (no public call lists them)."""
    return {pool.name for pool in instance.event_log_storage.get_pool_limits()}


def limit_pool_to_default(instance: dg.DagsterInstance, pool: str) -> None:
    """Give ``pool`` the instance's default limit now, as the run queue does when it first sees a run
    of it (defs/pools.py says why sooner); no public call does."""
    instance.event_log_storage.initialize_concurrency_limit_to_default(pool)


def freshness_states(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey]) -> Mapping[dg.AssetKey, Any]:
    """The freshness state Dagster's freshness daemon last recorded for each asset (by key; an asset
    it never evaluated is absent). The UI reads it this way; no public call returns it."""
    return instance.get_freshness_state_records(list(keys))


def resource_objects(resources: Any) -> Mapping[str, Any]:
    """The resources ``dg.build_resources`` built, as the objects themselves: its attributes hold
    what a resource attaches to a context instead (``S3Resource``: its boto3 client). Dagster hands
    a sensor's or an asset's resource parameters from ``original_resource_dict``; no public call
    does."""
    return resources.original_resource_dict


def sensor_timeout_seconds() -> float:
    """How long Dagster lets one sensor evaluation run before the tick fails (60 s unless
    ``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS`` or ``DAGSTER_GRPC_TIMEOUT_SECONDS`` says otherwise); only
    ``dagster._grpc`` knows it."""
    return float(default_sensor_grpc_timeout())
