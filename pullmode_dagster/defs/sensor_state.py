"""A poller sensor's stored cursor, read and written outside the daemon (``pullmode pull``).

Addressed exactly as ``dagster sensor cursor --set`` does; Dagster has no public API for it, so this is
the one module in the package that imports ``dagster._``. The sensor timeout Dagster enforces is read
here too, for the same reason.
Design: docs/design/poller.md#sensor-state
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.definitions.selector import InstigatorSelector
from dagster._core.definitions.sensor_definition import SensorType
from dagster._core.remote_origin import RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.workspace.load import location_origin_from_module_name, location_origins_from_yaml_paths
from dagster._grpc.utils import default_sensor_grpc_timeout

from ..engine.errors import PullmodeError
from .sensors import INTERVAL_SECONDS

REPOSITORY_NAME = "__repository__"  # what Dagster names the repository of a Definitions object
MODULE = "pullmode_dagster.definitions"
LOCATION_NAME = "pullmode"
"""The code location's name in every workspace (``workspace.yaml``, ``deploy/workspace.yaml``, the
demo's): sensor state is keyed by it, so another name would start every poller from an empty cursor."""


def sensor_timeout_seconds() -> float:
    """How long Dagster lets one sensor evaluation run before the tick fails (60 s unless
    ``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS`` or ``DAGSTER_GRPC_TIMEOUT_SECONDS`` says otherwise)."""
    return float(default_sensor_grpc_timeout())


def code_location_origin(workspace: Path | None) -> object:
    """The origin ``dagster dev`` uses: the workspace file's only location, or the module itself
    under the location name every workspace gives it."""
    if workspace is not None and workspace.exists():
        origins = location_origins_from_yaml_paths([str(workspace)])
        if len(origins) != 1:
            raise PullmodeError(f"{workspace}: expected exactly one code location, found {len(origins)}")
        return origins[0]
    return location_origin_from_module_name(
        MODULE, attribute=None, working_directory=str(Path.cwd()), location_name=LOCATION_NAME
    )


class SensorCursors:
    """Get and set the cursor of sensors of one code location on one instance."""

    def __init__(self, instance: dg.DagsterInstance, workspace: Path | None):
        self.instance = instance
        self.origin = code_location_origin(workspace)
        self.location_name: str = self.origin.location_name  # type: ignore[attr-defined]

    def _ids(self, sensor_name: str) -> tuple[RemoteInstigatorOrigin, str]:
        repo_origin = RemoteRepositoryOrigin(self.origin, REPOSITORY_NAME)  # type: ignore[arg-type]
        origin = RemoteInstigatorOrigin(repo_origin, sensor_name)
        selector_id = InstigatorSelector(
            location_name=self.location_name, repository_name=REPOSITORY_NAME, name=sensor_name
        ).get_id()
        return origin, selector_id

    def get(self, sensor_name: str) -> str | None:
        origin, selector_id = self._ids(sensor_name)
        state = self.instance.get_instigator_state(origin.get_id(), selector_id)
        return state.instigator_data.cursor if state and state.instigator_data else None  # type: ignore[union-attr]

    def set(self, sensor_name: str, cursor: str) -> None:
        origin, selector_id = self._ids(sensor_name)
        state = self.instance.get_instigator_state(origin.get_id(), selector_id)
        if state is None:
            # DECLARED_IN_CODE: the sensor keeps the running/stopped status its definition declares.
            self.instance.add_instigator_state(
                InstigatorState(
                    origin,
                    InstigatorType.SENSOR,
                    InstigatorStatus.DECLARED_IN_CODE,
                    SensorInstigatorData(min_interval=INTERVAL_SECONDS, cursor=cursor, sensor_type=SensorType.STANDARD),
                )
            )
        else:
            data = state.instigator_data
            assert isinstance(data, SensorInstigatorData)
            self.instance.update_instigator_state(state.with_data(data._replace(cursor=cursor)))
