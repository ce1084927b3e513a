"""A poller sensor's stored cursor, read and written outside the daemon (``pullmode pull``), and
the code location it belongs to, loaded as its code server loads it.

Addressed exactly as ``dagster sensor cursor --set`` does; Dagster has no public API for it, so this
module imports ``dagster._``, as does the loading of a code location's Definitions from a workspace,
here for the same reason. Only the CLI (and the tests) use it; the Dagster layer's own private calls
are ``defs/instance_api.py``'s.
Design: docs/design/poller.md#sensor-state
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.definitions.selector import InstigatorSelector
from dagster._core.definitions.sensor_definition import SensorType
from dagster._core.remote_origin import CodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.workspace.load import location_origin_from_module_name, location_origins_from_yaml_paths
from dagster._grpc.utils import get_loadable_targets
from dagster.components.definitions import LazyDefinitions

from ..defs.location import MODULE, find_dg_project
from ..defs.names import LOCATION_NAME
from ..defs.sensors import INTERVAL_SECONDS
from ..engine.declare.loading import one_line
from ..engine.errors import PullmodeError

REPOSITORY_NAME = "__repository__"  # what Dagster names the repository of a Definitions object


def code_location_origin(workspace: Path | None) -> CodeLocationOrigin:
    """The origin ``dagster dev`` (or ``dg dev``) uses from here: the workspace file's only location;
    else the dg project's this directory is in (:func:`.location.find_dg_project`); else the module
    itself under the location name every workspace gives it."""
    if workspace is not None and workspace.exists():
        origins = location_origins_from_yaml_paths([str(workspace)])
        if len(origins) != 1:
            raise PullmodeError(f"{workspace}: expected exactly one code location, found {len(origins)}")
        return origins[0]
    return dg_project_origin(Path.cwd()) or location_origin_from_module_name(
        MODULE, attribute=None, working_directory=str(Path.cwd()), location_name=LOCATION_NAME
    )


def dg_project_origin(start: Path) -> CodeLocationOrigin | None:
    """The code location ``dg dev`` serves for the dg project ``start`` is in, named as dg names it:
    the module ``code_location_target_module`` (default ``<root_module>.definitions``), found under
    ``src/`` when there is one, and the location ``code_location_name`` (default the directory's name)."""
    project = find_dg_project(start)
    if project is None:
        return None
    return location_origin_from_module_name(
        project.module,
        attribute=None,
        working_directory=str(project.working_directory),
        location_name=project.location_name,
    )


def load_definitions(origin: CodeLocationOrigin) -> dg.Definitions:
    """The Definitions of the code location at ``origin``, found and loaded as its code server finds
    them (the module's or file's one ``Definitions`` or ``@dg.definitions`` function, or the
    workspace's ``attribute``). A location served by a gRPC server of its own names no module: the
    one the README starts it with, ``pullmode_dagster.definitions``, from here."""
    target = getattr(origin, "loadable_target_origin", None)
    where = f"code location {origin.location_name!r}"
    if target is None:
        target = location_origin_from_module_name(
            MODULE, attribute=None, working_directory=str(Path.cwd()), location_name=origin.location_name
        ).loadable_target_origin
    try:
        found = get_loadable_targets(
            python_file=target.python_file,
            module_name=target.module_name,
            package_name=target.package_name,
            autoload_defs_module_name=target.autoload_defs_module_name,
            working_directory=target.working_directory,
            attribute=target.attribute,
            resolve_lazy_defs=False,
        )
        defs = found[0].target_definition
        if isinstance(defs, LazyDefinitions):
            defs = defs()
    except PullmodeError:
        raise
    except Exception as exc:  # the user's code failed to load: say which location and why, in one line
        raise PullmodeError(f"{where} did not load: {one_line(f'{type(exc).__name__}: {exc}', limit=400)}") from None
    if not isinstance(defs, dg.Definitions):
        raise PullmodeError(f"{where}: {found[0].attribute} is a {type(defs).__name__}, not a Definitions")
    return defs


class SensorCursors:
    """Get and set the cursor of sensors of one code location on one instance."""

    def __init__(self, instance: dg.DagsterInstance, workspace: Path | None):
        self.instance = instance
        self.origin = code_location_origin(workspace)
        self.location_name: str = self.origin.location_name

    def _ids(self, sensor_name: str) -> tuple[RemoteInstigatorOrigin, str]:
        repo_origin = RemoteRepositoryOrigin(self.origin, REPOSITORY_NAME)
        origin = RemoteInstigatorOrigin(repo_origin, sensor_name)
        selector_id = InstigatorSelector(
            location_name=self.location_name, repository_name=REPOSITORY_NAME, name=sensor_name
        ).get_id()
        return origin, selector_id

    def get(self, sensor_name: str) -> str | None:
        origin, selector_id = self._ids(sensor_name)
        state = self.instance.get_instigator_state(origin.get_id(), selector_id)
        data = state.instigator_data if state else None
        return data.cursor if isinstance(data, SensorInstigatorData) else None  # a sensor's is always one

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
