"""Which code location a ``pullmode`` command acts for, found without importing Dagster: the
workspace file's, else the dg project's around the current directory (as ``dg`` finds it), else the
module every workspace of this repository names. ``pullmode prune`` and ``erase`` read the sources
of that code location, and need Dagster only when the code location is not that module.

Loading the code location itself (Dagster's loader) is ``cli/sensor_state.py``'s.
Design: docs/design/poller.md#pullmode-pull
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..engine.errors import PullmodeError

MODULE = "pullmode_dagster.definitions"
"""The code location of a plain project: ``build_definitions()`` on ``$PULLMODE_SOURCES_DIR``."""


@dataclass(frozen=True)
class DgProject:
    """A dg project as ``dg dev`` serves it: from its root, the module ``module`` (found under
    ``src/`` when there is one) under the location name ``location_name``."""

    root: Path
    module: str
    location_name: str

    @property
    def working_directory(self) -> Path:
        return self.root / "src" if (self.root / "src").is_dir() else self.root


def _dg_settings(directory: Path) -> dict[str, Any] | None:
    """``directory``'s dg settings, where dg reads them: its ``dg.toml``, else its
    ``pyproject.toml``'s ``[tool.dg]``; None when it has neither."""
    for name, section in (("dg.toml", None), ("pyproject.toml", "tool.dg")):
        path = directory / name
        if not path.is_file():
            continue
        try:
            doc: dict[str, Any] = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PullmodeError(f"{path}: cannot read the dg project's settings: {exc}") from None
        if section is None:
            return doc
        found = doc.get("tool", {}).get("dg")
        if isinstance(found, dict):
            return found
    return None


def find_dg_project(start: Path) -> DgProject | None:
    """The dg project ``start`` is in, found as ``dg`` finds it: the nearest directory at or above
    ``start`` with dg settings, when they make it a project (``directory_type = "project"`` and a
    ``root_module``). None when there are none, or the nearest are a workspace's."""
    for directory in (start.absolute(), *start.absolute().parents):
        settings = _dg_settings(directory)
        if settings is None:
            continue
        project = settings.get("project")
        if settings.get("directory_type") != "project" or not isinstance(project, dict):
            return None
        root_module = project.get("root_module")
        if not isinstance(root_module, str) or not root_module:
            return None
        module = project.get("code_location_target_module") or f"{root_module}.definitions"
        return DgProject(directory, str(module), str(project.get("code_location_name") or directory.name))
    return None


def default_workspace() -> Path | None:
    """``./workspace.yaml``, the file ``dagster dev`` reads from here, when there is one."""
    path = Path("workspace.yaml")
    return path if path.exists() else None


def dg_project_in_use(workspace: Path | None) -> DgProject | None:
    """The dg project whose code location a command acts for: none when a workspace file names the
    code location (``workspace``, else ``./workspace.yaml``)."""
    if (workspace if workspace is not None else default_workspace()) is not None:
        return None
    return find_dg_project(Path.cwd())


def loads_module_only(workspace: Path | None) -> bool:
    """Whether the code location a command acts for is :data:`MODULE` as it is: no workspace file
    and no dg project, or a workspace whose one location is that module (or a gRPC server, which
    ``pullmode pull`` loads as that module). Its sources are then ``load_sources()``'s. A workspace
    this cannot read is not: Dagster's loader reads it, and says what is wrong."""
    workspace = workspace if workspace is not None else default_workspace()
    if workspace is None:
        return find_dg_project(Path.cwd()) is None
    try:
        doc = yaml.safe_load(workspace.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    entries = doc.get("load_from") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        return False
    entry = entries[0]
    module = entry.get("python_module")
    if isinstance(module, dict):
        return module.get("module_name") == MODULE and module.get("attribute") in (None, "defs")
    return module == MODULE or (module is None and set(entry) == {"grpc_server"})


@contextmanager
def at_project_root(workspace: Path | None) -> Iterator[DgProject | None]:
    """Run from the root of the dg project the command acts for, as ``dg dev`` runs (it changes to
    the project's root first): its ``dagster.yaml``, and every relative path in the environment
    (a SQLite trace store's), then mean what they mean to ``dg dev``. Yields the project (None:
    no dg project, nothing changed)."""
    project = dg_project_in_use(workspace)
    if project is None or project.root == Path.cwd().absolute():
        yield project
        return
    before = os.getcwd()
    os.chdir(project.root)
    try:
        yield project
    finally:
        os.chdir(before)
