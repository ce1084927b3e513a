"""The names the Dagster layer writes into the instance, in one place: tags on assets, jobs and runs,
concurrency pools, job and sensor names, and the run statuses it treats as "in progress".

Users and their tooling rely on these (filters in the UI, run queries, docs/design/): changing one
is a breaking change.
"""

from __future__ import annotations

import dagster as dg

# --- tags ------------------------------------------------------------------------------------------
TAG_PREFIX = "pullmode/"
SOURCE_TAG = f"{TAG_PREFIX}source"
"""On a source's asset, job and runs: which source (whatever key a translator gave the asset)."""
ADAPTER_TAG = f"{TAG_PREFIX}adapter"
OWNER_TAG = f"{TAG_PREFIX}owner"
ORGANIZATION_TAG = f"{TAG_PREFIX}organization"
STATUS_TAG = f"{TAG_PREFIX}status"
"""On the placeholder asset of a source file that did not load: ``invalid``."""
PULL_ID_TAG = f"{TAG_PREFIX}pull_id"
"""On a poll run: the pull the poller (or ``pullmode pull``) announced; also the run key."""
MODE_TAG = f"{TAG_PREFIX}mode"
"""On a poll run: ``poll``."""
PROCESS_TAG = f"{TAG_PREFIX}process"
"""On a run of a source: the process executing it (defs/recovery.py)."""
ALERTED_TAG = f"{TAG_PREFIX}alerted"
"""On a run: the alerts delivered about it (``failing``, ``still_failing``, ``recovered``,
``check_failing:<check>``, ``check_passing:<check>``)."""

# --- pools, jobs, sensors --------------------------------------------------------------------------
POOL_PREFIX = TAG_PREFIX
POLLER_SUFFIX = "_poller"
JOB_SUFFIX = "_pull"


def pool_name(source: str) -> str:
    """The concurrency pool of ``source``'s op (a pool name is any text without white space)."""
    return f"{POOL_PREFIX}{source}"


def poller_name(source: str) -> str:
    """The poller sensor of ``source``."""
    return f"{source}{POLLER_SUFFIX}"


def job_name(source: str) -> str:
    """The job that pulls ``source`` once."""
    return f"{source}{JOB_SUFFIX}"


LOCATION_NAME = "pullmode"
"""The code location's name in every workspace (``workspace.yaml``, ``deploy/workspace.yaml``, the
demo's): sensor state is keyed by it, so another name would start every poller from an empty cursor."""


# --- run statuses ----------------------------------------------------------------------------------
# Two sets on purpose (Dagster's own ``IN_PROGRESS_RUN_STATUSES`` is private): they differ in
# SUSPENDED, a run Dagster paused whose process has ended by design and which may be resumed.
MAY_STILL_WRITE = (
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUSPENDED,
)
"""Runs of a source that may still write (or write again when resumed): the poller starts no other
pull beside one of them."""
EXECUTING = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
"""Runs whose process should be alive now: only these are marked failed when that process is gone
(a SUSPENDED run has no process, and failing it would discard a run meant to be resumed)."""
