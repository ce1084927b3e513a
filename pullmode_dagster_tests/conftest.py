"""Shared fixtures: a loopback fake API, source files in a temp directory, a fresh trace store."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.adapters import ADAPTERS, PullContext
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.declare.models import SourceConfig
from pullmode_dagster.engine.fetch.session import RetryPolicy
from pullmode_dagster.engine.store import SqliteTraceStore

from .helpers import Sleeps, install_quick_config
from .pg import fresh_database

# S3 fixtures (moto server, recording proxy) live beside their helpers; registered here for every module.
from .s3_helpers import moto_url, proxy, s3  # noqa: F401


@pytest.fixture
def api() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def sources_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "sources"
    directory.mkdir()
    monkeypatch.setenv("PULLMODE_SOURCES_DIR", str(directory))
    return directory


class SourceWriter:
    """Writes source files and loads them the way every entry point does."""

    def __init__(self, directory: Path):
        self.directory = directory

    def write(self, doc: dict[str, Any] | str, *, file: str | None = None) -> Path:
        if isinstance(doc, str):
            text = textwrap.dedent(doc)
            name = file or yaml.safe_load(text)["name"]
        else:
            text = yaml.safe_dump(doc, sort_keys=False)
            name = file or doc["name"]
        path = self.directory / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
        path.write_text(text)
        return path

    def load(self, doc: dict[str, Any] | str) -> SourceConfig:
        self.write(doc)
        result = load_sources(self.directory, adapters=ADAPTERS)
        assert not result.problems, result.problems
        name = doc["name"] if isinstance(doc, dict) else yaml.safe_load(textwrap.dedent(doc))["name"]
        return result.sources[name]


@pytest.fixture
def sources(sources_dir: Path) -> SourceWriter:
    return SourceWriter(sources_dir)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME with the repository's dagster.yaml, a trace store and quick retries, in a temp
    directory (the working directory too, so dagster.yaml's relative storage lands there)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    install_quick_config(home)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/trace.db")
    monkeypatch.setenv("PULLMODE_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("PULLMODE_BACKOFF_INITIAL_SECONDS", "0.01")
    return home


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty trace store's URL on each backend in turn: SQLite, then a fresh Postgres database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/trace.db"
    else:
        with fresh_database() as url:
            yield url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    s = SqliteTraceStore(tmp_path / "store.db")
    yield s
    s.close()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def context(sleeps: Sleeps) -> PullContext:
    return PullContext(retry=RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.05), sleep=sleeps)
