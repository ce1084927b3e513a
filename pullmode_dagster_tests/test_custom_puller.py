"""``adapter: custom``: a puller class of the user's, with everything a built-in adapter gets. The
worked example (Workato job history) runs against a fake that follows its documented shape."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.defs.sensor_state import SensorCursors
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine.adapters import PullContext
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.sources import load_sources
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"
TOKEN = "wrk-token-5f4e3d2c1b0a"


class WorkatoJobs:
    """``GET /api/recipes/{id}/jobs``: ``{"items": [...]}``, newest first, 3 a page;
    ``offset_job_id`` pages to older jobs, with ``prev=true`` to newer ones."""

    def __init__(self, count: int):
        self.jobs = [self.job(i) for i in range(1, count + 1)]

    @staticmethod
    def job(i: int) -> dict[str, Any]:
        return {"id": i, "started_at": f"2026-03-01T10:{i:02d}:00Z", "status": "succeeded" if i % 4 else "failed"}

    def __call__(self, request: Request) -> Response:
        if request.header("authorization") != f"Bearer {TOKEN}":
            return Response(401, {"message": f"Invalid token {request.header('authorization')}"})
        offset = request.arg("offset_job_id")
        newest_first = sorted(self.jobs, key=lambda j: -j["id"])
        if offset is None:
            page = newest_first[:3]
        elif request.arg("prev") == "true":
            page = [j for j in newest_first if j["id"] > int(offset)][-3:]
        else:
            page = [j for j in newest_first if j["id"] < int(offset)][:3]
        return Response(200, {"items": page})


def workato_source(url: str, **overrides: Any) -> dict[str, Any]:
    doc = {
        "name": "workato_jobs",
        "adapter": "custom",
        "module": "pullmode_dagster.examples.workato:WorkatoJobsPuller",
        "options": {"recipe_id": "12345", "base_url": url},
        "startDate": "2026-01-01",
        "schedule": "*/10 * * * *",
        "credentials": {"token": {"env": "WORKATO_TOKEN"}},
        "eventMapping": {"source_event_id": "$.id", "event_timestamp": "$.started_at", "action": "$.status"},
    }
    doc.update(overrides)
    return doc


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKATO_TOKEN", TOKEN)


@pytest.fixture
def workato(api: LoopbackServer) -> WorkatoJobs:
    fake = WorkatoJobs(10)
    api.routes["/api/recipes/12345/jobs"] = fake
    return fake


def ids(store: SqliteTraceStore) -> list[str]:
    return sorted((r["source_event_id"] for r in store.tail(limit=1000)), key=int)


def test_the_worked_example_pulls_everything_then_only_new_jobs(
    api: LoopbackServer, workato: WorkatoJobs, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    source = sources.load(workato_source(api.base_url))
    first = run_pull(source, store=store, context=context)
    assert first.drained and first.written == 10 and ids(store) == [str(i) for i in range(1, 11)]
    assert first.cursor_after.position == {"newest_id": 10}
    assert first.cursor_after.watermark == "2026-03-01T10:10:00.000000Z"

    workato.jobs += [WorkatoJobs.job(11), WorkatoJobs.job(12)]
    api.requests.clear()
    second = run_pull(source, store=store, context=context, start=first.cursor_after)
    assert (second.written, second.duplicates) == (2, 0)
    assert [(r.arg("prev"), r.arg("offset_job_id")) for r in api.requests] == [("true", "10"), ("true", "12")]
    assert second.cursor_after.position == {"newest_id": 12}
    events = store.tail(limit=2)
    assert sorted((e["source_event_id"], e["action"]) for e in events) == [("11", "succeeded"), ("12", "failed")]


def test_a_stopped_first_pull_resumes_where_it_stopped(
    api: LoopbackServer, workato: WorkatoJobs, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    source = sources.load(workato_source(api.base_url, maxPagesPerRun=2))
    first = run_pull(source, store=store, context=context)
    assert not first.drained and first.cursor_after.position == {"older_than": 5, "walk_newest": 10}
    rest = run_pull(source, store=store, context=context, start=first.cursor_after)
    assert rest.cursor_after.position == {"older_than": 1, "walk_newest": 10}
    last = run_pull(source, store=store, context=context, start=rest.cursor_after)
    assert last.drained and last.cursor_after.position == {"newest_id": 10}
    assert ids(store) == [str(i) for i in range(1, 11)]


def test_validation_names_the_module_field(sources: SourceWriter) -> None:
    def problems(module: str) -> list[str]:
        sources.write(workato_source("http://127.0.0.1:1", module=module))
        return load_sources(sources.directory).problems

    prefix = f"{sources.directory / 'workato_jobs.yaml'}: source 'workato_jobs': module: "
    assert problems("not a path") == [prefix + "must be package.module:ClassName"]
    assert problems("my_pullers.missing:Puller") == [
        prefix + "cannot import my_pullers.missing: ModuleNotFoundError: No module named 'my_pullers'"
    ]
    assert problems("pullmode_dagster.examples.workato:Nope") == [
        prefix + "pullmode_dagster.examples.workato has no Nope"
    ]
    assert problems("pullmode_dagster.examples.workato:WorkatoPosition") == [
        prefix + "pullmode_dagster.examples.workato:WorkatoPosition is not a subclass of pullmode_dagster.Puller"
    ]


@pytest.fixture
def broken_puller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    package = tmp_path / "my_pullers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text(
        textwrap.dedent(
            """
            import os
            from pullmode_dagster import Page, Puller

            class Broken(Puller):
                def pages(self, start, *, window=None):
                    yield Page(records=[{"id": "a", "t": "2026-03-01T00:00:00Z"}], nbytes=1, location="page 1",
                               resume={}, drained=False)
                    raise RuntimeError("upstream said no to " + self.credentials["token"])
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_pullers.broken:Broken"
    sys.modules.pop("my_pullers.broken", None)
    sys.modules.pop("my_pullers", None)


def test_a_puller_that_raises_is_one_redacted_line_and_what_it_yielded_is_kept(
    broken_puller: str, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    source = sources.load(
        workato_source(
            "http://127.0.0.1:1",
            module=broken_puller,
            eventMapping={"source_event_id": "$.id", "event_timestamp": "$.t"},
        )
    )
    with pytest.raises(PullError) as info:
        run_pull(source, store=store, context=context)
    assert str(info.value) == (
        "source 'workato_jobs': custom puller my_pullers.broken:Broken raised: RuntimeError: upstream said no to ***"
    )
    assert [r["source_event_id"] for r in store.tail()] == ["a"]  # what it yielded before is kept


@pytest.mark.slow
def test_the_worked_example_through_pullmode_pull_and_dagster(
    api: LoopbackServer,
    workato: WorkatoJobs,
    sources: SourceWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/trace.db")
    sources.write(workato_source(api.base_url))
    runner = CliRunner()
    assert runner.invoke(main, ["validate"]).exit_code == 0
    first = runner.invoke(main, ["pull", "workato_jobs", "--workspace", str(WORKSPACE)])
    assert first.exit_code == 0, first.output
    assert "workato_jobs: 10 written, 0 duplicates skipped, 0 rejected" in first.output
    assert TOKEN not in first.output
    workato.jobs.append(WorkatoJobs.job(11))
    second = runner.invoke(main, ["pull", "workato_jobs", "--workspace", str(WORKSPACE)])
    assert "workato_jobs: 1 written, 0 duplicates skipped" in second.output
    with dg.DagsterInstance.get() as instance:
        state = PollPlanState.from_json(SensorCursors(instance, WORKSPACE).get("workato_jobs_poller"))
        assert state.committed.position == {"newest_id": 11}
        run = instance.get_runs(limit=1)[0]
        assert run.tags["pullmode/source"] == "workato_jobs" and run.status == dg.DagsterRunStatus.SUCCESS
    monkeypatch.setenv("WORKATO_TOKEN", "wrong-token-value-1234")
    failed = runner.invoke(main, ["pull", "workato_jobs", "--workspace", str(WORKSPACE)])
    assert failed.exit_code == 1
    assert "workato_jobs: FAILED: source 'workato_jobs': page 1: HTTP 401 from" in failed.output
    assert "wrong-token-value-1234" not in failed.output and "Traceback" not in failed.output
    tail = runner.invoke(main, ["tail", "--json", "-n", "1"])
    assert json.loads(tail.output)["source_event_id"] == "11"
