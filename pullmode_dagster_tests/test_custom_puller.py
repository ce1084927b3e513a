"""``adapter: custom``: a puller class of the user's, with everything a built-in adapter gets. The
worked example (Workato job history) runs against a fake that follows its documented shape."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.definitions import build_definitions
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine.adapters import ADAPTERS, PullContext
from pullmode_dagster.engine.adapters.custom import UserThread
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.pull import build_puller, run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .bounded import LineReader
from .conftest import SourceWriter
from .documents import canary_custom_source, custom_source, http_source, workato_source
from .helpers import stored_ids
from .test_secrets import assert_nothing_leaked, drive, env, leaks, scan_files  # noqa: F401 (env: the canary fixture)

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


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKATO_TOKEN", TOKEN)


@pytest.fixture
def workato(api: LoopbackServer) -> WorkatoJobs:
    fake = WorkatoJobs(10)
    api.routes["/api/recipes/12345/jobs"] = fake
    return fake


def test_the_worked_example_pulls_everything_then_only_new_jobs(
    api: LoopbackServer, workato: WorkatoJobs, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    source = sources.load(workato_source(api.base_url))
    first = run_pull(source, store=store, context=context)
    assert first.drained and first.written == 10 and stored_ids(store, key=int) == [str(i) for i in range(1, 11)]
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
    assert stored_ids(store, key=int) == [str(i) for i in range(1, 11)]


def test_validation_names_the_module_field(sources: SourceWriter) -> None:
    def problems(module: str) -> list[str]:
        sources.write(workato_source("http://127.0.0.1:1", module=module))
        return load_sources(sources.directory, adapters=ADAPTERS).problems

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


def pull_error(source: Any, store: SqliteTraceStore, context: PullContext, *, first_page_kept: bool = False) -> str:
    """The message of the PullError that pulling `source` must raise; with first_page_kept, the good first
    page (record "a", position n=1) is also checked to be stored and checkpointed."""
    with pytest.raises(PullError) as info:
        run_pull(source, store=store, context=context)
    if first_page_kept:
        assert info.value.report.checkpoint.position == {"n": 1}
        assert stored_ids(store) == ["a"]
    return str(info.value)


def test_a_puller_that_raises_is_one_redacted_line_and_what_it_yielded_is_kept(
    broken_puller: str, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    source = sources.load(custom_source(broken_puller))
    assert pull_error(source, store, context) == (
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


# User code contained: whatever a custom module does at import, construction, paging or close, and
# whatever it yields, is one redacted line naming the source and the puller; the cursor holds.

GOOD_PAGE = (
    'Page(records=[{"id": "a", "t": "2026-03-01T00:00:00Z"}], nbytes=1, location="page 1", '
    'resume={"n": 1}, drained=False)'
)
GATE = "pullmode_test_gate"
"""A module the tests put in ``sys.modules``: user code blocks on ``gate.event`` until teardown."""


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    """Writes ``user_code/<name>.py`` (importable) and gives its module path; a gate released at teardown."""
    package = tmp_path / "user_code"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    gate, event = types.ModuleType(GATE), threading.Event()
    vars(gate)["event"] = event  # the user modules wait on it (import {GATE}; {GATE}.event.wait())
    monkeypatch.setitem(sys.modules, GATE, gate)

    def write(name: str, code: str) -> str:
        (package / f"{name}.py").write_text(textwrap.dedent(code))
        return f"user_code.{name}"

    yield write
    event.set()
    for module in [m for m in sys.modules if m == "user_code" or m.startswith("user_code.")]:
        sys.modules.pop(module, None)


def puller_module(body: str, *, header: str = "") -> str:
    """A module holding ``class P(Puller)`` whose ``pages`` is ``body``."""
    return (
        "import sys, math, datetime\n"
        "from pullmode_dagster import Page, Position, Puller\n"
        f"{textwrap.dedent(header)}\n"
        "class P(Puller):\n"
        "    def pages(self, start, *, window=None):\n" + textwrap.indent(textwrap.dedent(body), "        ")
    )


def test_system_exit_from_a_puller_is_one_redacted_line(
    user_modules: Callable[[str, str], str], sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    module = user_modules(
        "exits", puller_module(f"yield {GOOD_PAGE}\nsys.exit('giving up with ' + self.credentials['token'])")
    )
    source = sources.load(custom_source(f"{module}:P"))
    assert pull_error(source, store, context, first_page_kept=True) == (  # the page before is kept
        "source 'workato_jobs': custom puller user_code.exits:P raised: SystemExit: giving up with ***"
    )


@pytest.mark.parametrize(
    ("where", "code", "expected"),
    [
        (
            "__init__",
            "def __init__(self, *a, **k):\n    raise SystemExit(2)\n",
            "custom puller user_code.ctor:P could not be created: SystemExit: 2",
        ),
        ("close", "def close(self):\n    sys.exit()\n", "custom puller user_code.ctor:P raised: SystemExit"),
    ],
)
def test_system_exit_from_construction_and_close(
    where: str,
    code: str,
    expected: str,
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
) -> None:
    methods = textwrap.indent(code, "    ")
    module = user_modules("ctor", puller_module("return iter(())") + "\n" + methods)
    source = sources.load(custom_source(f"{module}:P"))
    assert pull_error(source, store, context) == f"source 'workato_jobs': {expected}"


BAD_PAGES = {
    "a dict instead of a Page": (
        'yield {"records": [], "resume": {}}',
        "yielded a dict, expected a pullmode_dagster.Page",
    ),
    "a generator as records": (
        'yield Page(records=(r for r in [{"id": "b"}]), nbytes=1, location="p2", resume={"n": 2}, drained=True)',
        "yielded a Page whose records is a generator, expected a list of records",
    ),
    "a position that is not JSON": (
        'yield Page(records=[], nbytes=1, location="p2", resume={"at": datetime.date(2026, 3, 1)}, drained=True)',
        "yielded a Page whose resume is not JSON (Object of type date is not JSON serializable), expected JSON "
        "values only (the cursor is JSON)",
    ),
    "NaN in the position": (
        'yield Page(records=[], nbytes=1, location="p2", resume={"at": math.nan}, drained=True)',
        "yielded a Page whose resume is not JSON (Out of range float values are not JSON compliant), "
        "expected JSON values only (the cursor is JSON)",
    ),
    "a position key that is not a str": (
        'yield Page(records=[], nbytes=1, location="p2", resume={2: "x"}, drained=True)',
        "yielded a Page whose resume has a key that is not a str, expected str keys (the cursor is a JSON object)",
    ),
    "a position its own model refuses": (
        'yield Page(records=[], nbytes=1, location="p2", resume={"n": "two"}, drained=True)',
        "yielded a Page whose resume does not fit its position_model N (n: Input should be a valid integer, "
        "unable to parse string as an integer); the next pull could not start from it",
    ),
    "drained that is not a bool": (
        'yield Page(records=[], nbytes=1, location="p2", resume={"n": 2}, drained="yes")',
        "yielded a Page whose drained is a str, expected True or False",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PAGES))
def test_a_page_the_engine_cannot_use_is_one_line_and_the_cursor_holds(
    case: str,
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
) -> None:
    bad, expected = BAD_PAGES[case]
    header = "class N(Position):\n    n: int | None = None\n"
    module = user_modules(
        "shapes", puller_module(f"yield {GOOD_PAGE}\n{bad}\n", header=header) + "    position_model = N\n"
    )
    source = sources.load(custom_source(f"{module}:P"))
    message = pull_error(source, store, context, first_page_kept=True)  # the last good page, not the bad one
    assert message == f"source 'workato_jobs': custom puller user_code.shapes:P {expected}"


def test_pages_that_is_not_an_iterator(
    user_modules: Callable[[str, str], str], sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    module = user_modules("none", puller_module("return None"))
    source = sources.load(custom_source(f"{module}:P"))
    assert pull_error(source, store, context) == (
        "source 'workato_jobs': custom puller user_code.none:P returned None from pages(), expected an iterator of Page"
    )


def test_a_puller_that_blocks_past_the_deadline_fails_naming_the_source(
    user_modules: Callable[[str, str], str], sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    module = user_modules("blocks", puller_module(f"import {GATE}\nyield {GOOD_PAGE}\n{GATE}.event.wait()\n"))
    source = sources.load(custom_source(f"{module}:P", pullDeadlineSeconds=0.5, requestTimeoutSeconds=0.5))
    assert pull_error(source, store, context, first_page_kept=True) == (
        "source 'workato_jobs': custom puller user_code.blocks:P overran the pull's deadline before its next page: "
        "pullDeadlineSeconds (0.5 s) and requestTimeoutSeconds (0.5 s) after it passed; it was left running in the "
        "background (a puller must stop at self.context.deadline, or send its requests with self.session)"
    )


# Only plain builtins cross from user code to the engine: whatever a user object does (its __str__,
# a position_model validator, Page.where, a record's methods) runs on the bounded user thread.

STR_BOMB = """
class StrBomb(Exception):
    def __str__(self):
        raise SystemExit("str leaks " + os.environ["WORKATO_TOKEN"])
"""
EXITING_MODEL = """
from pydantic import field_validator

class N(Position):
    n: int | None = None

    @field_validator("n")
    @classmethod
    def _n(cls, value):
        if value == 99:
            sys.exit("bad position " + os.environ["WORKATO_TOKEN"])
        return value
"""
BLOCKING_MODEL = f"""
from pydantic import field_validator
import {GATE}

class N(Position):
    n: int | None = None

    @field_validator("n")
    @classmethod
    def _n(cls, value):
        if value == 99:
            {GATE}.event.wait()
        return value
"""
EXITING_RECORD = """
class Exits(dict):
    def get(self, *a):
        sys.exit("get leaks " + os.environ["WORKATO_TOKEN"])
    __getitem__ = items = keys = values = __iter__ = get
"""
USER_OBJECTS = {
    "an exception whose __str__ exits": (
        "raise StrBomb()\nyield",
        STR_BOMB,
        "raised: StrBomb",
    ),
    "a position_model validator that exits": (
        f'yield {GOOD_PAGE}\nyield Page(records=[], nbytes=1, location="p2", resume={{"n": 99}}, drained=True)',
        EXITING_MODEL,
        "raised: SystemExit: bad position ***",
    ),
    "a Page.where that exits": (
        "def where(i):\n    sys.exit('where leaks ' + os.environ['WORKATO_TOKEN'])\n"
        'yield Page(records=[{"id": "b"}], nbytes=1, location="p1", resume={"n": 1}, drained=True, where=where)',
        "",
        "raised: SystemExit: where leaks ***",
    ),
    "a Page.where that returns no str": (
        'yield Page(records=[{"id": "b"}], nbytes=1, location="p1", resume={"n": 1}, drained=True, where=lambda i: 7)',
        "",
        "yielded a Page whose where(0) returned a int, expected a str",
    ),
    "a message longer than is shown, the secret at its end": (
        "sys.exit('x' * 290 + os.environ['WORKATO_TOKEN'])\nyield",
        "",
        "raised: SystemExit: " + "x" * 290 + "***",
    ),
}


@pytest.mark.parametrize("case", sorted(USER_OBJECTS))
def test_user_objects_run_on_the_user_thread_and_fail_as_one_redacted_line(
    case: str,
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body, header, expected = USER_OBJECTS[case]
    code = puller_module(body, header="import os\n" + header)
    if "class N(" in header:
        code += "\n    position_model = N\n"
    source = sources.load(custom_source(f"{user_modules('objects', code)}:P"))
    caplog.set_level(logging.DEBUG)
    message = pull_error(source, store, context)
    assert message == f"source 'workato_jobs': custom puller user_code.objects:P {expected}"
    assert TOKEN not in caplog.text and TOKEN[:6] not in message


@pytest.mark.parametrize(
    ("body", "header", "doing"),
    [
        (
            f'yield {GOOD_PAGE}\nyield Page(records=[], nbytes=1, location="p2", resume={{"n": 99}}, drained=True)',
            BLOCKING_MODEL,
            "before its next page",
        ),
        (
            f"import {GATE}\nyield {GOOD_PAGE}\n"
            'yield Page(records=[{"id": "b"}], nbytes=1, location="p2", resume={"n": 2}, drained=True, '
            f"where=lambda i: {GATE}.event.wait())",
            "",
            "in a Page's where()",
        ),
    ],
    ids=["a position_model validator", "a Page.where"],
)
def test_user_code_the_engine_calls_is_bounded_by_the_deadline(
    body: str,
    header: str,
    doing: str,
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
) -> None:
    code = puller_module(body, header=header) + ("\n    position_model = N\n" if header else "")
    module = user_modules("blocks_engine_calls", code)
    source = sources.load(custom_source(f"{module}:P", pullDeadlineSeconds=0.5, requestTimeoutSeconds=0.5))
    message = pull_error(source, store, context, first_page_kept=True)
    assert message.startswith(
        f"source 'workato_jobs': custom puller {module}:P overran the pull's deadline {doing}: pullDeadlineSeconds "
        "(0.5 s) and requestTimeoutSeconds (0.5 s) after it passed"
    ), message


IMPORT_STR_BOMB = """
import os
class E(Exception):
    def __str__(self):
        raise SystemExit("import str leaks " + os.environ["WORKATO_TOKEN"])
raise E()
"""


def test_a_module_whose_import_error_cannot_be_printed_is_one_line_under_validate_pull_and_the_code_location(
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    api: LoopbackServer,
    workato: WorkatoJobs,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    module = user_modules("str_bomb_at_import", IMPORT_STR_BOMB)
    sources.write(custom_source(f"{module}:P", name="bomb"))
    sources.write(workato_source(api.base_url))
    problem = f"source 'bomb': module: cannot import {module}: E"
    result = CliRunner().invoke(main, ["validate", str(sources.directory)])
    assert (result.exit_code, result.output.splitlines()) == (1, [f"{sources.directory}/bomb.yaml: {problem}"])
    defs = build_definitions(sources.directory)
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["ingestion", "workato_jobs"])).is_materializable
    assert problem in graph.get(dg.AssetKey(["ingestion", "bomb"])).metadata["problems"]
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/trace.db")
    preview = CliRunner().invoke(main, ["preview", "workato_jobs"])  # an unrelated source still works
    assert preview.exit_code == 0 and TOKEN not in preview.output + result.output


def test_a_record_is_converted_on_the_user_thread_without_calling_its_methods(
    user_modules: Callable[[str, str], str], sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    """A dict subclass whose every method exits is copied through dict's own; a value that is not
    JSON is stored as its str() (as raw_payload always wrote it); one whose str() exits is rejected."""
    body = (
        'rec = Exits({"id": "a", "t": "2026-03-01T00:00:00Z", "when": datetime.date(2026, 3, 1), 1: (True, 2.5)})\n'
        'bad = {"id": "b", "t": "2026-03-01T00:00:00Z", "v": Bomb()}\n'
        'yield Page(records=[rec, bad, {"id": "c"}], nbytes=1, location="p1", resume={"n": 1}, drained=True)'
    )
    header = "import os\n" + EXITING_RECORD + STR_BOMB + "class Bomb:\n    __str__ = __repr__ = StrBomb.__str__\n"
    source = sources.load(custom_source(f"{user_modules('records', puller_module(body, header=header))}:P"))
    report = run_pull(source, store=store, context=context)
    assert (report.written, report.rejected, report.records) == (1, 2, 3)
    [event] = store.tail()
    assert json.loads(event["raw_payload"]) == {
        "id": "a",
        "t": "2026-03-01T00:00:00Z",
        "when": "2026-03-01",
        "1": [True, 2.5],
    }
    rejects = store._conn.execute("SELECT location, reason, raw_record FROM pulled_events_rejected").fetchall()
    assert sorted((location, reason) for location, reason, _ in rejects) == [
        ("p1, record 2", "record cannot be made JSON data: it holds a Bomb whose str() raised SystemExit"),
        ("p1, record 3", "event_timestamp: $.t matched nothing"),
    ]
    assert TOKEN not in repr(rejects)


LOGS_ITS_SECRETS = """\
secrets = " and ".join(self.credentials.values())
self.context.logger.info("using %s", secrets)
self.context.logger.warning(f"again {secrets}")
try:
    raise ValueError(secrets)
except ValueError:
    self.context.logger.exception("it failed")
yield Page(records=[], nbytes=0, location="https://x/?k=" + secrets, resume={}, drained=False)
"""


def test_what_a_puller_logs_is_redacted(
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = user_modules("logs", puller_module(LOGS_ITS_SECRETS))
    source = sources.load(custom_source(f"{module}:P"))
    caplog.set_level(logging.DEBUG, logger="pullmode")
    run_pull(source, store=store, context=context)
    lines = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert "using ***" in lines and "again ***" in lines
    assert any(line.startswith("it failed\nTraceback") and line.rstrip().endswith("ValueError: ***") for line in lines)
    assert "workato_jobs: https://x/?k=***: 0 records, 0 events, 0 rejected (total 0 events so far)" in lines
    assert not [line for line in lines if TOKEN in line], lines


def test_every_adapters_logger_redacts(sources: SourceWriter, caplog: pytest.LogCaptureFixture) -> None:
    """The redaction is the Puller base class's: a built-in adapter's lines go through it too."""
    source = sources.load(http_source("http://127.0.0.1:1/v1", credentials={"token": {"env": "WORKATO_TOKEN"}}))
    puller = build_puller(source, context=PullContext())
    caplog.set_level(logging.DEBUG, logger="pullmode")
    puller.context.logger.warning("sent %s", TOKEN)
    puller.context.logger.log(logging.ERROR, f"again {TOKEN}")
    assert [r.getMessage() for r in caplog.records] == ["sent ***", "again ***"]


ARGPARSE_AT_IMPORT = """
    import argparse
    parser = argparse.ArgumentParser(prog="mypuller")
    parser.add_argument("--recipe", required=True)
    args = parser.parse_args()
"""


def test_validate_contains_a_module_that_exits_or_runs_argparse_at_import(
    user_modules: Callable[[str, str], str], sources: SourceWriter
) -> None:
    argparse_module = user_modules("cli", ARGPARSE_AT_IMPORT)
    exits = user_modules(
        "exits_at_import", "import os, sys\nsys.exit('no config for ' + os.environ['WORKATO_TOKEN'])\n"
    )
    sources.write(custom_source(f"{argparse_module}:P", name="argparse_at_import"))
    sources.write(custom_source(f"{exits}:P", name="exits_at_import"))
    result = CliRunner().invoke(main, ["validate", str(sources.directory)])
    assert result.exit_code == 1
    prefix = f"{sources.directory}/"
    assert result.output.splitlines() == [
        f"{prefix}argparse_at_import.yaml: source 'argparse_at_import': module: cannot import user_code.cli: "
        "SystemExit: 2 (it printed: mypuller: error: the following arguments are required: --recipe)",
        f"{prefix}exits_at_import.yaml: source 'exits_at_import': module: cannot import "
        "user_code.exits_at_import: SystemExit: no config for ***",
    ]


def test_validate_bounds_a_module_that_hangs_at_import(
    user_modules: Callable[[str, str], str], sources: SourceWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = user_modules("hangs_validate", f"print('connecting')\nimport {GATE}\n{GATE}.event.wait()\n")
    monkeypatch.setenv("PULLMODE_IMPORT_TIMEOUT_SECONDS", "0.5")
    sources.write(custom_source(f"{module}:P"))
    expected = [
        f"{sources.directory}/workato_jobs.yaml: source 'workato_jobs': module: cannot import "
        "user_code.hangs_validate: the import did not finish within 0.5 s (a module that waits or runs a program "
        "at import?) (it printed: connecting)"
    ]
    for _ in range(2):  # the second load reports the import still running, without waiting on it
        result = CliRunner().invoke(main, ["validate", str(sources.directory)])
        assert (result.exit_code, result.output.splitlines()) == (1, expected)


def test_the_code_location_loads_beside_modules_that_exit_or_hang_at_import(
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    api: LoopbackServer,
    workato: WorkatoJobs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULLMODE_IMPORT_TIMEOUT_SECONDS", "0.5")
    sources.write(custom_source(f"{user_modules('cli', ARGPARSE_AT_IMPORT)}:P", name="argparse_at_import"))
    sources.write(custom_source(f"{user_modules('hangs_defs', f'import {GATE}; {GATE}.event.wait()')}:P", name="hangs"))
    sources.write(workato_source(api.base_url))
    defs = build_definitions(sources.directory)
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["ingestion", "workato_jobs"])).is_materializable
    for name, problem in [
        ("argparse_at_import", "SystemExit: 2 (it printed: mypuller: error: the following arguments are required"),
        ("hangs", "the import did not finish within 0.5 s"),
    ]:
        placeholder = graph.get(dg.AssetKey(["ingestion", name]))
        assert placeholder.tags["pullmode/status"] == "invalid"
        assert problem in placeholder.metadata["problems"]


@pytest.fixture
def secrets(request: pytest.FixtureRequest) -> Path:
    """The canary suite's environment (``test_secrets.env``): its secrets, from env and from files."""
    return request.getfixturevalue("env")


CANARY_MODULES = {
    # A puller that logs every secret through context.logger, then calls sys.exit with them.
    "exits_while_pulling": (
        puller_module(LOGS_ITS_SECRETS + 'sys.exit(f"giving up with {secrets}")\n'),
        "custom puller user_code.exits_while_pulling:P raised: SystemExit: giving up with ***",
    ),
    # A module that prints a secret and raises SystemExit with two at import.
    "exits_at_import": (
        "import os, sys\nprint('token', os.environ['CNRY_TOKEN'], file=sys.stderr)\n"
        "raise SystemExit('bad config: ' + os.environ['CNRY_TOKEN'] + ' ' + os.environ['CNRY_UNI'])\n",
        "cannot import user_code.exits_at_import: SystemExit: bad config: *** *** (it printed: token ***)",
    ),
    # An exception whose __str__ exits with the secrets: its text is computed on the user thread.
    "str_bomb_while_pulling": (
        puller_module(
            "raise StrBomb()\nyield",
            header="class StrBomb(Exception):\n"
            "    def __str__(self):\n"
            "        raise SystemExit('str leaks ' + ' '.join(P.secrets))\n",
        )
        + "\n    secrets = []\n    def __init__(self, *a, **k):\n        super().__init__(*a, **k)\n"
        "        P.secrets[:] = self.credentials.values()\n",
        "custom puller user_code.str_bomb_while_pulling:P raised: StrBomb",
    ),
    "str_bomb_at_import": (
        "import os\nclass E(Exception):\n    def __str__(self):\n"
        "        raise SystemExit('import str leaks ' + os.environ['CNRY_TOKEN'] + os.environ['CNRY_JS'])\n"
        "raise E()\n",
        "cannot import user_code.str_bomb_at_import: E",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CANARY_MODULES))
def test_canary_custom_modules_that_exit_with_the_secrets(
    case: str,
    secrets: Path,
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    code, expected = CANARY_MODULES[case]
    sources.write(canary_custom_source(f"{user_modules(case, code)}:P", secrets))
    caplog.set_level(logging.DEBUG)
    output = drive("canary")
    assert expected in output
    assert_nothing_leaked(output, caplog, tmp_path, secrets)


@pytest.mark.slow
def test_sigterm_ends_a_pull_whose_puller_blocks(
    user_modules: Callable[[str, str], str], sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's code blocks on its own thread; the pull's thread waits for it and takes SIGTERM at once."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/trace.db")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))
    body = f"yield {GOOD_PAGE}\nprint('blocking', flush=True)\nimport threading\nthreading.Event().wait()\n"
    sources.write(custom_source(f"{user_modules('blocks_forever', puller_module(body))}:P"))
    child = subprocess.Popen(
        [sys.executable, "-m", "pullmode_dagster.cli", "pull", "workato_jobs", "--workspace", str(WORKSPACE)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = LineReader(child.stdout)  # type: ignore[arg-type]
        assert lines.next_line(timeout=60, expecting="the puller blocking") == "blocking"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 1  # at once (60 s: a loaded CI machine), although the puller still blocks
        failed = lines.next_line(timeout=30, expecting="the run's outcome")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert failed.startswith(
        "workato_jobs: FAILED: source 'workato_jobs': interrupted (SIGINT or SIGTERM); checkpoint "
        '{"high_water":"2026-03-01T00:00:00.000000Z","n":1,"v":1}'
    ), failed


def test_a_call_is_abandoned_until_its_result_is_taken() -> None:
    """A signal may land after a call is queued and before its caller waits: that call runs on, so
    the thread takes no more calls (closing would queue behind it) until its result is taken."""
    gate = threading.Event()
    thread = UserThread("pullmode-test")
    call = thread.submit(gate.wait)  # the caller is interrupted here, before result()
    assert thread.stuck
    with pytest.raises(RuntimeError, match="takes no more calls"):
        thread.submit(lambda: None)
    gate.set()
    assert thread.result(call, timeout=5) is True and not thread.stuck
    assert thread.run(lambda: 2, timeout=5) == 2 and thread.stop(timeout=5)


def test_a_signal_another_thread_receives_ends_the_wait_within_a_slice() -> None:
    """The kernel may hand SIGTERM to the puller's thread rather than the main one: the wait for a
    call still ends at once (the handler runs on the main thread), not after the call's limit."""
    gate = threading.Event()
    thread = UserThread("pullmode-test")

    def interrupt(signo: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        call = thread.submit(gate.wait)
        assert thread.ident is not None
        threading.Timer(0.2, signal.pthread_kill, (thread.ident, signal.SIGUSR1)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            thread.result(call, timeout=60)
        assert time.monotonic() - started < 30 and thread.stuck  # a slice is 0.25 s; 60 s without them
    finally:
        signal.signal(signal.SIGUSR1, previous)
        gate.set()


def probe_module(probe_body: str) -> str:
    """A puller whose ``probe`` is ``probe_body`` (its pages are never asked for)."""
    return puller_module("yield from ()", header="from pullmode_dagster import ProbeAnswer\n") + (
        "\n    def probe(self, start):\n" + textwrap.indent(textwrap.dedent(probe_body), "        ")
    )


@pytest.mark.parametrize(
    ("body", "verdict", "reason"),
    [
        ("return ProbeAnswer('nothing_new')", "nothing_new", None),
        ("return ProbeAnswer.after([{'id': 'a', 't': '2026-03-01T00:00:00Z'}])", "nothing_new", None),  # 'a' stored
        ("return ProbeAnswer.after([{'id': 'b', 't': '2026-03-01T00:00:00Z'}])", "new", None),
        (
            "sys.exit('no probe for ' + self.credentials['token'])",
            "failed",
            "source 'workato_jobs': custom puller user_code.probes:P raised: SystemExit: no probe for ***",
        ),
        (
            "return {'verdict': 'new'}",
            "failed",
            "source 'workato_jobs': custom puller user_code.probes:P returned a dict from probe(), expected a "
            "pullmode_dagster.ProbeAnswer",
        ),
    ],
)
def test_a_custom_pullers_probe_is_asked_contained(
    user_modules: Callable[[str, str], str],
    sources: SourceWriter,
    context: PullContext,
    body: str,
    verdict: str,
    reason: str | None,
) -> None:
    from pullmode_dagster.engine.cursor import CursorState
    from pullmode_dagster.engine.probe import probe_source

    source = sources.load(custom_source(f"{user_modules('probes', probe_module(body))}:P"))
    result = probe_source(source, CursorState(), known_ids=lambda ids: {"a"} & set(ids), context=context)
    assert (result.verdict, result.reason) == (verdict, reason)


def test_a_custom_puller_without_a_probe_is_unknown_and_a_blocking_one_is_bounded(
    user_modules: Callable[[str, str], str], sources: SourceWriter, context: PullContext
) -> None:
    from pullmode_dagster.engine.cursor import CursorState
    from pullmode_dagster.engine.probe import probe_source

    plain = sources.load(custom_source(f"{user_modules('plain', puller_module('yield from ()'))}:P"))
    assert probe_source(plain, CursorState(), known_ids=lambda ids: set(), context=context).verdict == "unknown"
    blocks = probe_module(f"import {GATE}\n{GATE}.event.wait()\nreturn ProbeAnswer('new')")
    slow = sources.load(custom_source(f"{user_modules('blocks', blocks)}:P"))
    result = probe_source(slow, CursorState(), known_ids=lambda ids: set(), context=context, timeout=0.5)
    assert result.verdict == "failed" and result.reason == "source 'workato_jobs': no answer within the probe's 0.5 s"


# The review's reproductions: user code that says a secret past context.logger, through Python's
# other outlets, and objects whose __del__ says (or waits) when they are released.
SAYS_IT_ELSEWHERE = {
    "warns_and_logs": puller_module(
        "secrets = ' and '.join(self.credentials.values())\n"
        "logging.getLogger('leaky').warning('stdlib logging says %s', secrets)\n"
        "logging.getLogger('leaky').error('a traceback', exc_info=ValueError(secrets))\n"
        "warnings.warn(f'warning with {secrets}')\n"
        "print('printed', secrets)\n"
        "sys.stderr.write(secrets[:5]); sys.stderr.write(secrets[5:] + '\\n')\n"
        "raise ValueError('plain failure')\nyield\n",
        header="import logging, warnings",
    ),
    "exception_del_raises": puller_module(
        "raise Boom(' and '.join(self.credentials.values()))\nyield\n",
        header="class Boom(Exception):\n"
        "    def __init__(self, secrets):\n"
        "        super().__init__('boom')\n"
        "        self.secrets = secrets\n"
        "    def __del__(self):\n"
        "        raise RuntimeError(f'closing failed for {self.secrets}')\n",
    ),
    "puller_del_raises": puller_module(f"yield {GOOD_PAGE.replace('False', 'True')}\n") + "\n    def __del__(self):\n"
    "        raise RuntimeError(f\"puller __del__ {' and '.join(self.credentials.values())}\")\n",
}


def pull_in_a_process(name: str, tmp_path: Path, *args: str) -> str:
    """``pullmode pull -v <name>`` as a user runs it: its whole console output (stdout and stderr)."""
    env_vars = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "pullmode_dagster.cli", "pull", "-v", name, "--workspace", str(WORKSPACE), *args],
        cwd=tmp_path,
        env=env_vars,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SAYS_IT_ELSEWHERE))
def test_what_user_code_says_through_warnings_logging_print_and_del_is_redacted(
    case: str, secrets: Path, user_modules: Callable[[str, str], str], sources: SourceWriter, tmp_path: Path
) -> None:
    sources.write(canary_custom_source(f"{user_modules(case, SAYS_IT_ELSEWHERE[case])}:P", secrets))
    output = pull_in_a_process("canary", tmp_path)
    said = {
        "warns_and_logs": ["stdlib logging says ***", "UserWarning: warning with ***", "printed ***", "a traceback"],
        "exception_del_raises": ["RuntimeError: closing failed for ***"],
        "puller_del_raises": ["RuntimeError: puller __del__ ***"],
    }[case]
    for text in said:  # it is said, redacted
        assert text in output, output
    assert leaks(output) == [], output
    assert scan_files(tmp_path, skip=(secrets, tmp_path / "sources")) == {}
    compute_logs = list(tmp_path.glob(".pullmode/dagster/compute_logs/*/compute_logs/*.err"))
    assert compute_logs and any(said[0] in p.read_text() for p in compute_logs)  # the UI's copy, redacted


@pytest.mark.slow
def test_a_slow_del_of_what_a_puller_raised_runs_on_its_thread_bounded_by_the_deadline(
    user_modules: Callable[[str, str], str], sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exception's __del__ waits for a file only this test creates, after the pull has ended:
    on the pull's own thread it would hold the pull (and the process) forever."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/trace.db")
    released = tmp_path / "released"
    header = (
        "import threading, time, pathlib\n"
        "class Slow(Exception):\n"
        "    def __del__(self):\n"
        "        print('__del__ on', threading.current_thread().name, flush=True)\n"
        f"        while not pathlib.Path({str(released)!r}).exists():\n"
        "            time.sleep(0.05)\n"
    )
    module = user_modules("slowdel", puller_module("raise Slow('x')\nyield\n", header=header))
    sources.write(custom_source(f"{module}:P", pullDeadlineSeconds=1, requestTimeoutSeconds=1))
    try:
        output = pull_in_a_process("workato_jobs", tmp_path)
    finally:
        released.touch()
    assert "__del__ on pullmode-custom-workato_jobs" in output
    assert "workato_jobs: FAILED: source 'workato_jobs': custom puller user_code.slowdel:P raised: Slow: x" in output
