"""PullmodeSourcesComponent: a directory of source files as a Dagster Component, loaded the way a dg
project loads its defs folder, and through `dg` itself on a scaffolded project; and `pullmode pull`
on the code location a project really has (its component's or translator's keys, its sources)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from pullmode_dagster import PullmodeSourcesComponent
from pullmode_dagster.cli import main
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer

from .conftest import SourceWriter
from .documents import http_source
from .fakes import CursorFeed, make_events

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dg_project"
COMPONENT = "pullmode_dagster.PullmodeSourcesComponent"
DEFAULT = dg.AssetKey(["ingestion", "acme_audit"])
RAW = dg.AssetKey(["raw", "ai", "acme_audit"])


def example_project(root: Path, package: str) -> Path:
    """The example dg project (examples/dg_project) copied to ``root``, its package renamed to
    ``package`` (a module name imported once per process) and its example source removed; returns
    its component's folder."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".pullmode", "__pycache__", ".tmp_dagster_home_*"))
    (root / "src" / "ai_audit").rename(root / "src" / package)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"ai_audit"', f'"{package}"'))
    folder = root / "src" / package / "defs" / "audit_sources"
    (folder / "sources" / "acme_audit.yaml").unlink()
    return folder


def set_attributes(folder: Path, **attributes: Any) -> None:
    """The component's defs.yaml with these attributes (the others at their defaults)."""
    (folder / "defs.yaml").write_text(yaml.safe_dump({"type": COMPONENT, "attributes": attributes}))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """The example project in ``tmp_path/project`` under a package name of its own, importable."""
    package = f"audit_{uuid.uuid4().hex[:10]}"
    root = tmp_path / "project"
    example_project(root, package)
    monkeypatch.syspath_prepend(str(root / "src"))
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-component-7070")
    return root, package


def component_folder(project: tuple[Path, str]) -> Path:
    root, package = project
    return root / "src" / package / "defs" / "audit_sources"


def load(project: tuple[Path, str]) -> dg.Definitions:
    """The project's definitions as `dg dev` loads them (Dagster's defs folder loading)."""
    return dg.load_from_defs_folder(path_within_project=project[0])


def test_the_component_loads_every_source_of_its_folder_as_dagster_loads_a_defs_folder(
    project: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = component_folder(project)
    sources = SourceWriter(folder / "sources")
    sources.write(http_source("https://audit.acme.example/v1/events"))
    sources.write({"name": "broken", "adapter": "http_polling"})  # its placeholder shows why
    monkeypatch.chdir(tmp_path)  # `sources` is relative to the defs.yaml's folder, not to here

    defs = load(project)  # the example's defs.yaml: every attribute at its default
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert set(specs) == {DEFAULT, dg.AssetKey(["ingestion", "broken"])}
    assert specs[DEFAULT].group_name == "ingestion_sources"
    assert specs[DEFAULT].metadata["source_file"] == str(folder / "sources" / "acme_audit.yaml")
    assert specs[dg.AssetKey(["ingestion", "broken"])].tags["pullmode/status"] == "invalid"
    assert [j.name for j in defs.jobs] == ["acme_audit_pull"]  # type: ignore[union-attr]
    assert {s.name for s in defs.sensors} == {"acme_audit_poller", "pullmode_failure_alerts"}  # type: ignore[union-attr]
    assert defs.resolve_job_def("acme_audit_pull").asset_layer.selected_asset_keys == {DEFAULT}

    # The translator's fields from defs.yaml: keys, group, blocking checks; an absolute directory too.
    elsewhere = tmp_path / "elsewhere"
    shutil.move(folder / "sources", elsewhere)
    set_attributes(
        folder, sources_dir=str(elsewhere), key_prefix=["raw", "ai"], group_name="raw_ai", blocking_checks=True
    )
    moved = load(project)
    specs = {s.key: s for s in moved.resolve_all_asset_specs()}
    assert {k: s.group_name for k, s in specs.items()} == {
        RAW: "raw_ai",
        dg.AssetKey(["raw", "ai", "broken"]): "raw_ai",
    }
    assert {c.name: c.blocking for c in moved.resolve_assets_def(RAW).check_specs} == {
        "normalized_schema": True,
        "unique_source_event_id": True,
    }
    assert moved.resolve_job_def("acme_audit_pull").asset_layer.selected_asset_keys == {RAW}


def failure(project: tuple[Path, str]) -> str:
    """The whole story of the load's failure, as `dg check defs` prints it (causes included)."""
    with pytest.raises(Exception) as caught:
        load(project)
    return "".join(traceback.format_exception(caught.value))


def test_an_invalid_attribute_in_defs_yaml_is_refused_naming_it(project: tuple[Path, str]) -> None:
    folder = component_folder(project)
    SourceWriter(folder / "sources").write(http_source("https://audit.acme.example/v1/events"))
    set_attributes(folder, key_prefx="raw")
    told = failure(project)
    assert "key_prefx" in told and "Extra inputs are not permitted" in told

    set_attributes(folder, blocking_checks="maybe")
    told = failure(project)
    assert f"{folder / 'defs.yaml'}:" in told and "attributes.blocking_checks" in told
    assert "expected true or false, got 'maybe'" in told

    set_attributes(folder, blocking_checks="true", key_prefix=["raw", "ai"])  # a rendered template's string
    assert {c.blocking for c in load(project).resolve_assets_def(RAW).check_specs} == {True}


@pytest.mark.parametrize(
    ("attributes", "field", "message"),
    [
        ({"group_name": "bad group!"}, "group_name", "not a Dagster group name: 'bad group!'"),
        ({"key_prefix": ["raw", "a b"]}, "key_prefix", "not a part of a Dagster asset key: 'a b'"),
        ({"key_prefix": ["raw", ""]}, "key_prefix", "not a part of a Dagster asset key: ''"),
        ({"key_prefix": "raw/ai"}, "key_prefix", "not a part of a Dagster asset key: 'raw/ai'"),
        ({"sources_dir": "nope"}, "sources_dir", "no such directory: nope (relative to this defs.yaml's folder"),
        ({"sources_dir": "sources:nope"}, "sources_dir", "no such directory: nope "),
    ],
)
def test_a_bad_name_or_a_missing_directory_fails_loading_naming_the_line_and_attribute(
    project: tuple[Path, str], attributes: dict[str, Any], field: str, message: str
) -> None:
    """The review: a misspelt sources_dir passed `dg check defs` (no sources, and a hint at
    PULLMODE_SOURCES_DIR, which the component ignores); a bad group or key part failed inside the
    asset's build with Dagster's error, naming no line."""
    folder = component_folder(project)
    SourceWriter(folder / "sources").write(http_source("https://audit.acme.example/v1/events"))
    set_attributes(folder, **attributes)
    told = failure(project)
    assert f"{folder / 'defs.yaml'}:2 - attributes.{field}" in told and message in told, told[-3000:]
    assert "PULLMODE_SOURCES_DIR" not in told


def test_group_and_key_parts_dagster_takes_are_taken(project: tuple[Path, str], tmp_path: Path) -> None:
    folder = component_folder(project)
    SourceWriter(folder / "sources").write(http_source("https://audit.acme.example/v1/events"))
    set_attributes(folder, group_name="audit/raw_ai", key_prefix=["raw-v1", "ai.x"])
    spec = next(iter(load(project).resolve_all_asset_specs()))
    assert (spec.key, spec.group_name) == (dg.AssetKey(["raw-v1", "ai.x", "acme_audit"]), "audit/raw_ai")

    # A component built in Python has no defs.yaml to point at: its build says which directory.
    with pytest.raises(dg.DagsterInvalidDefinitionError) as refused:
        PullmodeSourcesComponent(sources_dir="nope").build_defs(SimpleNamespace(path=tmp_path))  # type: ignore[arg-type]
    assert str(refused.value) == (
        f"PullmodeSourcesComponent in {tmp_path}: sources_dir: no such directory: {tmp_path / 'nope'}: "
        "create it and put the source files there, or fix the path"
    )


def pull(*args: str) -> Any:
    return CliRunner().invoke(main, ["pull", *args])


def stored_state(home: Path, workspace: Path | None) -> tuple[str, PollPlanState]:
    """The location name the cursors are stored under from here, and the poller's stored cursor."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        cursors = SensorCursors(instance, workspace)
        return cursors.location_name, PollPlanState.from_json(cursors.get("acme_audit_poller"))


def latest(home: Path, key: dg.AssetKey) -> dg.EventLogEntry | None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_latest_materialization_event(key)


@pytest.mark.slow
def test_pull_in_a_dg_project_pulls_the_components_sources_under_its_keys(
    project: tuple[Path, str], home: Path, api: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run where `dg dev` runs (no workspace.yaml): the dg project's code location, its component's
    sources directory and key prefix, and the cursors under its location name."""
    api.routes["/v1/events"] = CursorFeed(make_events(12), page_size=10)
    folder = component_folder(project)
    SourceWriter(folder / "sources").write(http_source(api.url("/v1/events")))
    set_attributes(folder, key_prefix=["raw", "ai"])
    monkeypatch.chdir(project[0])
    monkeypatch.delenv("PULLMODE_SOURCES_DIR", raising=False)  # the component says where

    result = pull("acme_audit")
    assert result.exit_code == 0, result.output
    assert "acme_audit: 12 written" in result.output
    assert latest(home, RAW) is not None
    assert latest(home, DEFAULT) is None
    location, state = stored_state(home, None)
    assert location == project[1]  # pyproject's code_location_name, as `dg dev` names the location
    assert state.committed.to_dict() != {}


@pytest.mark.slow
def test_pull_and_rewind_below_a_dg_projects_root_act_as_dg_dev_does_from_the_root(
    project: tuple[Path, str], api: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review: from src/ the pull loaded the default code location ("no source named ...").
    Found as dg finds the project (walking up to its pyproject.toml), and run from its root as
    `dg dev` runs: its dagster.yaml, and the relative paths in it and in the environment."""
    api.routes["/v1/events"] = CursorFeed(make_events(12), page_size=10)
    root, package = project
    SourceWriter(component_folder(project) / "sources").write(http_source(api.url("/v1/events")))
    for name in ("DAGSTER_HOME", "PULLMODE_SOURCES_DIR", "PULLMODE_TRACE_STORE_URL"):
        monkeypatch.delenv(name, raising=False)  # dg dev's defaults: the project's dagster.yaml, ./.pullmode
    below = root / "src" / package / "defs"
    monkeypatch.chdir(below)

    result = pull("acme_audit")
    assert result.exit_code == 0, result.output
    assert "acme_audit: 12 written" in result.output
    assert Path.cwd() == below
    assert (root / ".pullmode" / "dagster").is_dir() and (root / ".pullmode" / "trace_store.db").is_file()
    assert not (below / ".pullmode").exists() and not (root / "src" / ".pullmode").exists()
    monkeypatch.chdir(root)  # the instance's storage is relative to the project's root
    location, pulled = stored_state(root, None)
    assert location == package and pulled.committed.to_dict() != PollPlanState().committed.to_dict()
    monkeypatch.chdir(below)
    rewound = CliRunner().invoke(main, ["rewind", "acme_audit", "--cursor", "{}"])
    assert rewound.exit_code == 0, rewound.output
    monkeypatch.chdir(root)
    assert stored_state(root, None)[1].committed.to_dict() == PollPlanState().committed.to_dict()  # from the start

    (root / "dagster.yaml").unlink()  # as `dg scaffold` / create-dagster leave a project
    monkeypatch.chdir(root / "src")
    bare = pull("acme_audit")
    assert bare.exit_code == 1
    assert bare.output == (
        f"error: no Dagster instance: the dg project {root} has no dagster.yaml (without one, `dg dev` keeps runs "
        "and cursors in a temporary directory it deletes on exit). Add a dagster.yaml there, as "
        "examples/dg_project's (storage in .pullmode/dagster, shared by `dg dev` and `pullmode`), or set "
        "DAGSTER_HOME to the directory holding the instance's dagster.yaml\n"
    )


TEAM_DEFS = """
import dagster as dg

from pullmode_dagster import PullmodeTranslator, build_definitions


class Translator(PullmodeTranslator):
    def get_asset_key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey(["raw", f"{name}_events"])


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(translator=Translator())
"""


def workspace_of(module: Path, code: str) -> Path:
    """A workspace file (beside ``module``) whose code location ``pullmode`` is ``module``, holding ``code``."""
    module.write_text(code)
    workspace = module.with_name(f"{module.stem}_workspace.yaml")
    workspace.write_text(
        f"load_from:\n  - python_file:\n      relative_path: {module}\n      location_name: pullmode\n"
    )
    return workspace


@pytest.mark.slow
def test_pull_records_under_the_key_the_workspaces_translator_gives(
    home: Path, api: LoopbackServer, sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's translator: a module of the project's own, named by its workspace.yaml."""
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-workspace-3131")
    api.routes["/v1/events"] = CursorFeed(make_events(5))
    sources.write(http_source(api.url("/v1/events")))
    workspace = workspace_of(tmp_path / "team_defs.py", TEAM_DEFS)

    result = pull("acme_audit", "--workspace", str(workspace))
    assert result.exit_code == 0, result.output
    moved = latest(home, dg.AssetKey(["raw", "acme_audit_events"]))
    assert moved is not None and moved.asset_materialization.metadata["events_written"].value == 5  # type: ignore[union-attr]
    assert latest(home, DEFAULT) is None
    assert stored_state(home, workspace)[1].committed.to_dict() != {}

    plain = workspace_of(tmp_path / "plain_defs.py", "import dagster as dg\n\ndefs = dg.Definitions()\n")
    other = pull("acme_audit", "--workspace", str(plain))
    assert other.exit_code == 1
    assert "the code location holds no pullmode sources" in other.output


@pytest.mark.slow
def test_dg_scaffolds_checks_and_lists_the_component(tmp_path: Path) -> None:
    """`dg` itself, in a fresh copy of the example project: scaffold the component, drop a source
    in, `dg check defs`, and `dg list` shows the source's asset, job and sensor and the component type."""
    root = tmp_path / "project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".pullmode", "__pycache__", ".tmp_dagster_home_*"))
    example = root / "src" / "ai_audit" / "defs" / "audit_sources"
    shipped = yaml.safe_load((example / "defs.yaml").read_text())
    shutil.rmtree(example)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(root / "src")]),
        "HOME": str(tmp_path),  # dg's own settings and telemetry notice stay here
        "ACME_AUDIT_TOKEN": "tok-dg-4242",
    }
    env.pop("DAGSTER_HOME", None)

    def dg_cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("dg")), *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    dg_cli("scaffold", "defs", COMPONENT, "audit_sources")
    assert yaml.safe_load((example / "defs.yaml").read_text()) == shipped  # the example is what dg writes
    assert (example / "sources").is_dir()
    SourceWriter(example / "sources").write(http_source("https://audit.acme.example/v1/events", name="acme_more"))

    checked = dg_cli("check", "defs")
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = json.loads(dg_cli("list", "defs", "--json").stdout)
    assert [a["asset_key"] for a in listed["assets"]] == ["ingestion/acme_more"]
    assert [j["name"] for j in listed["jobs"]] == ["acme_more_pull"]
    assert {s["name"] for s in listed["sensors"]} == {"acme_more_poller", "pullmode_failure_alerts"}
    components = json.loads(dg_cli("list", "components", "--json").stdout)
    assert COMPONENT in {c["key"] for c in components["items"]}
