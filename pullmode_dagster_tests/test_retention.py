"""Retention and erasure (issue 24): ``pullmode prune`` and ``pullmode erase``, on both stores.

Every test taking ``url`` runs on SQLite and on Postgres (a database of its own). What is checked
is the store's rows afterwards, the counts printed, and the committed cursor, never just the output.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner, Result

from pullmode_dagster.cli import main
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.events.model import NormalizedEvent
from pullmode_dagster.engine.events.rejects import Reject
from pullmode_dagster.engine.events.rules import format_timestamp
from pullmode_dagster.engine.store import open_store
from pullmode_dagster.engine.store.retention import ActorMatch, cutoff

from .bounded import join_all
from .conftest import SourceWriter
from .documents import connector_source, http_source
from .fakes import EVENT_MAPPING, CursorFeed, make_events
from .helpers import stored_ids
from .pg import fresh_database
from .test_component import example_project
from .test_pull_command import WORKSPACE, pull
from .test_trace_store import execute

NOW = datetime.now(UTC)
ALICE = "alice@acme.example"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty store on each backend, which the commands use ($PULLMODE_TRACE_STORE_URL)."""
    if request.param == "sqlite":
        found = f"sqlite:///{tmp_path}/store.db"
        monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", found)
        yield found
        return
    with fresh_database() as found:
        monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", found)
        yield found


@pytest.fixture(autouse=True)
def no_store_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULLMODE_RETENTION_DAYS", raising=False)


def event(source: str, n: int, days_ago: float, actor: str | None = "bob@acme.example") -> NormalizedEvent:
    raw = json.dumps({"id": n, "user": {"email": actor}})
    when = format_timestamp(NOW - timedelta(days=days_ago))
    return NormalizedEvent(source, f"e{n}", when, actor, "chat", "model", 0.1, 1, 2, raw, "org")


def fill(url: str, source: str, ages: list[float], *, actor: str | None = "bob@acme.example", start: int = 0) -> None:
    with open_store(url) as store:
        store.write_events([event(source, start + i, age, actor) for i, age in enumerate(ages)], run_id="r")


def ids(url: str, source: str) -> list[str]:
    with open_store(url) as store:
        return stored_ids(store, source)


def source_file(sources: SourceWriter, name: str, **fields: Any) -> None:
    sources.write(http_source("https://audit.acme.example/v1/events", name=name, **fields))


CLAUDE_FEED = connector_source("claude_compliance", "claude_feed", {"api_key": {"env": "ANTHROPIC_COMPLIANCE_KEY"}})
"""A reference connector's source, whose actor is built from two fields of a record."""


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


AGES = [1, 5, 20, 40, 100]
"""Event ages in days: a 30-day retention deletes the last two, 10 days the last three."""


def test_prune_deletes_what_is_past_a_sources_retention_and_keeps_the_rest(url: str, sources: SourceWriter) -> None:
    source_file(sources, "kept30", retentionDays=30)
    source_file(sources, "forever")
    fill(url, "kept30", AGES)
    fill(url, "forever", AGES)

    result = cli("prune")
    assert result.exit_code == 0, result.output
    assert ids(url, "kept30") == ["e0", "e1", "e2"]  # 1, 5 and 20 days old
    assert ids(url, "forever") == ["e0", "e1", "e2", "e3", "e4"]
    day = cutoff(30).strftime("%Y-%m-%d")
    assert (
        f"kept30: deleted 2 events dated before {day} and 0 rejected records pulled before it "
        "(30 days: retentionDays)" in result.output
    )
    assert "forever: kept: no retentionDays and PULLMODE_RETENTION_DAYS unset" in result.output
    assert "pruned 2 events and 0 rejected records in " in result.output


def test_the_store_default_covers_sources_without_their_own_and_sources_whose_file_is_gone(
    url: str, sources: SourceWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_file(sources, "kept30", retention_days=30)  # snake_case, as every field
    source_file(sources, "plain")
    for name in ("kept30", "plain", "removed"):  # "removed": events stored, its file deleted since
        fill(url, name, AGES)
    monkeypatch.setenv("PULLMODE_RETENTION_DAYS", "10")

    result = cli("prune")
    assert result.exit_code == 0, result.output
    assert ids(url, "kept30") == ["e0", "e1", "e2"]  # its own 30 days win
    assert ids(url, "plain") == ids(url, "removed") == ["e0", "e1"]
    assert "plain: deleted 3 events " in result.output and "(10 days: PULLMODE_RETENTION_DAYS)" in result.output
    assert "(10 days: PULLMODE_RETENTION_DAYS; no source file)" in result.output
    assert "pruned 8 events and 0 rejected records" in result.output


def test_older_than_overrides_every_retention_and_source_narrows_it_to_one(url: str, sources: SourceWriter) -> None:
    source_file(sources, "kept30", retentionDays=30)
    source_file(sources, "other", retentionDays=30)
    fill(url, "kept30", AGES)
    fill(url, "other", AGES)

    result = cli("prune", "--source", "kept30", "--older-than", "3")
    assert result.exit_code == 0, result.output
    assert ids(url, "kept30") == ["e0"]
    assert ids(url, "other") == ["e0", "e1", "e2", "e3", "e4"]  # not the source asked for
    assert "(3 days: --older-than)" in result.output


def test_a_dry_run_deletes_nothing_and_counts_what_the_prune_then_deletes(url: str, sources: SourceWriter) -> None:
    source_file(sources, "kept30", retentionDays=30)
    fill(url, "kept30", AGES)
    with open_store(url) as store:
        store.write_rejects(
            [Reject("kept30", "no timestamp", f'{{"n":{i}}}', f"page {i}") for i in range(3)], run_id="r"
        )
    # Two rejects pulled long ago: they have no event time, so their pulled_at counts.
    execute(
        url, "UPDATE pulled_events_rejected SET pulled_at = '2020-01-01T00:00:00.000000Z' WHERE location <> 'page 0'"
    )

    dry = cli("prune", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert len(ids(url, "kept30")) == 5
    with open_store(url) as store:
        assert store.count(rejected=True) == 3
    assert "kept30: would delete 2 events dated before " in dry.output
    assert "and 2 rejected records pulled before it" in dry.output
    assert "dry run: would prune 2 events and 2 rejected records in " in dry.output
    assert dry.output.rstrip().endswith("nothing deleted")

    real = cli("prune")
    assert real.exit_code == 0, real.output
    assert "kept30: deleted 2 events dated before " in real.output
    assert "pruned 2 events and 2 rejected records in " in real.output
    with open_store(url) as store:
        assert store.count() == 3 and store.count(rejected=True) == 1


def test_a_prune_beside_a_pull_writing_loses_none_of_its_rows_and_fails_neither(url: str) -> None:
    fill(url, "busy", [200 + i / 1000 for i in range(3000)])  # old: all past a retention of 30 days
    errors: list[BaseException] = []
    written: list[int] = []

    def pull_writes() -> None:
        try:
            with open_store(url) as store:
                for b in range(30):  # batches of new events, the way a pull writes them
                    batch = [event("busy", 10_000 + b * 100 + i, 0) for i in range(100)]
                    written.append(store.write_events(batch, run_id="pull").written)
        except BaseException as exc:
            errors.append(exc)

    with open_store(url) as store:
        writer = threading.Thread(target=pull_writes)
        writer.start()
        deleted = store.prune_source("busy", cutoff(30), batch_rows=100)  # 30 delete transactions
        join_all([writer], timeout=60)
        assert not errors, errors
        assert deleted.events == 3000
        assert sum(written) == 3000
        assert store.count(source="busy") == 3000  # exactly the pull's rows
        assert store.count(source="busy", end=cutoff(30)) == 0


def test_erase_deletes_an_actors_events_across_sources_and_the_rejects_that_hold_it(
    url: str, sources: SourceWriter
) -> None:
    fill(url, "chat", [1, 2, 3], actor=ALICE)
    fill(url, "chat", [4, 5], start=10)  # bob's
    fill(url, "api", [1.5], actor=ALICE)
    fill(url, "api", [0.5], start=10)  # bob's, the newest of api
    fill(url, "other", [1], actor="malice@acme.example")  # not alice: the actor must be whole
    rejects = [
        Reject("chat", "event_timestamp: missing", json.dumps({"who": {"email": ALICE}, "x": [1]}), "page 1"),
        Reject("chat", "event_timestamp: missing", f'{{"who": "{ALICE}", "cut sh', "page 2"),  # not JSON
        Reject("api", f"actor: not a string: {{'id': {ALICE!r}}}", '{"id": 7}', "page 3"),  # in the reason only
        Reject("api", "event_timestamp: missing", '{"id": 8}', f"{ALICE} page 7"),  # in the location only
        Reject("api", "event_timestamp: missing", json.dumps({"who": "alice@acme.example.org"}), "page 4"),
        Reject("api", "event_timestamp: missing", json.dumps({"who": f"x{ALICE}"}), "page 5"),
        Reject("api", "event_timestamp: missing", json.dumps({"who": "ALICE@acme.example"}), "page 6"),  # exact
    ]
    with open_store(url) as store:
        store.write_rejects(rejects, run_id="r")

    result = cli("erase", "--actor", ALICE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "api: deleted 1 event and 0 rejected records" in lines
    assert "chat: deleted 3 events and 2 rejected records" in lines
    assert any(
        line.startswith("erased 4 events and 2 rejected records of that actor from 2 sources in ")
        and line.endswith("; searched 3 sources: every source the store holds (--source NAME limits it)")
        for line in lines
    )
    assert ALICE not in result.output  # the person is not repeated into logs
    with open_store(url) as store:
        assert store._rows(f"SELECT count(*) FROM pulled_events WHERE actor = {store.PARAM}", [ALICE])[0][0] == 0
        assert store.count() == 4  # bob's three and malice's
        left = sorted(r[0] for r in store._rows("SELECT location FROM pulled_events_rejected", []))
    assert left == [f"{ALICE} page 7", "page 3", "page 4", "page 5", "page 6"]  # the project's words are not hers

    again = cli("erase", "--actor", ALICE)
    assert again.exit_code == 0 and again.output.startswith("no events or rejected records of that actor in ")


def test_erase_warns_when_the_actors_event_is_a_sources_newest(url: str) -> None:
    fill(url, "chat", [3, 2])
    fill(url, "chat", [1], actor=ALICE, start=5)  # the newest event of chat: the watermark's instant

    result = cli("erase", "--actor", ALICE, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "note: chat: 1 event of that actor at the source's newest event time" in result.output
    assert "run this erase again after it" in result.output


def test_an_erase_dry_run_deletes_nothing_and_counts_the_same(url: str) -> None:
    fill(url, "chat", [1, 2], actor=ALICE)
    fill(url, "api", [1], actor=ALICE)
    with open_store(url) as store:
        store.write_rejects([Reject("api", "bad", json.dumps({"u": ALICE}), "page 1")], run_id="r")

    dry = cli("erase", "--actor", ALICE, "--dry-run")
    assert dry.exit_code == 0, dry.output
    with open_store(url) as store:
        assert store.count() == 3 and store.count(rejected=True) == 1
    real = cli("erase", "--actor", ALICE)
    assert real.exit_code == 0, real.output
    counts = "3 events and 1 rejected record of that actor from 2 sources in "
    assert f"dry run: would erase {counts}" in dry.output and f"erased {counts}" in real.output
    assert "chat: would delete 2 events and 0 rejected records" in dry.output
    assert "api: would delete 1 event and 1 rejected record" in dry.output
    assert "chat: deleted 2 events and 0 rejected records" in real.output
    with open_store(url) as store:
        assert store.count() == 0 and store.count(rejected=True) == 0


REVIEWED = [
    # The review's pull (a fake vendor, the usual eventMapping: actor at $.actor.email): three rejects,
    # none of them user 1's, nor "record"'s or "not"'s; one is user 42's, one only counts 42 tokens.
    Reject(
        "fake_audit",
        "event_timestamp: not a timestamp: 'not-a-date rejactor@acme.example'",
        json.dumps(
            {"id": "r1", "created_at": "not-a-date", "actor": {"email": "rejactor@acme.example"}, "type": "chat"}
        ),
        "page 1, record 9",
    ),
    Reject(
        "fake_audit",
        "event_timestamp: not a timestamp: '2026-13-45'",
        json.dumps({"id": "r2", "created_at": "2026-13-45", "actor": {"email": "42"}, "usage": {"input_tokens": 1}}),
        "page 1, record 10",
    ),
    Reject(
        "fake_audit",
        "event_timestamp: not a timestamp: 'bogus'",
        json.dumps(
            {
                "id": "r3",
                "created_at": "bogus",
                "actor": {"email": "other@acme.example"},
                "type": "chat",
                "usage": {"input_tokens": 42},
            }
        ),
        "page 1, record 11",
    ),
]


@pytest.mark.parametrize("known", [True, False], ids=["source file", "source file removed"])
def test_erase_takes_no_one_elses_rejects_for_a_number_or_the_projects_words(
    url: str, sources: SourceWriter, known: bool
) -> None:
    """The review: ``--actor 1`` counted every reject at ``page 1, record N``, ``--actor 42`` took a
    reject counting 42 tokens, ``record`` and ``not`` matched the reasons."""
    if known:
        source_file(sources, "fake_audit")
    with open_store(url) as store:
        store.write_rejects(REVIEWED, run_id="r")
    for actor in ("1", "record", "not", "page", "10", "chat" if known else "other"):
        dry = cli("erase", "--actor", actor, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert dry.output.startswith("no events or rejected records of that actor in "), (actor, dry.output)

    dry = cli("erase", "--actor", "42", "--dry-run")
    assert "fake_audit: would delete 0 events and 1 rejected record" in dry.output, dry.output
    assert cli("erase", "--actor", "42").exit_code == 0
    with open_store(url) as store:
        left = sorted(r[0] for r in store._rows("SELECT location FROM pulled_events_rejected", []))
    assert left == ["page 1, record 11", "page 1, record 9"]  # user 42's alone is gone


def test_erase_source_keeps_the_same_id_at_another_vendor(url: str, sources: SourceWriter) -> None:
    """User 42 at one vendor is not user 42 at another: --source limits the erase, and the dry run
    says per source what each would lose."""
    fill(url, "vendor_a", [1, 2], actor="42")
    fill(url, "vendor_b", [1], actor="42", start=10)
    fill(url, "vendor_c", [1], start=20)  # bob's
    with open_store(url) as store:
        store.write_rejects([Reject("vendor_b", "bad", json.dumps({"user": "42"}), "page 1")], run_id="r")

    everywhere = cli("erase", "--actor", "42", "--dry-run")
    assert everywhere.exit_code == 0, everywhere.output
    assert everywhere.output.splitlines()[:3] == [
        "vendor_a: would delete 2 events and 0 rejected records",
        "vendor_b: would delete 1 event and 1 rejected record",
        "vendor_c: would delete 0 events and 0 rejected records",
    ]
    assert "; searched 3 sources: every source the store holds (--source NAME limits it)" in everywhere.output

    one = cli("erase", "--actor", "42", "--source", "vendor_a")
    assert one.exit_code == 0, one.output
    assert one.output.splitlines()[0] == "vendor_a: deleted 2 events and 0 rejected records"
    erased = one.output.splitlines()[1]
    assert erased.startswith("erased 2 events and 0 rejected records of that actor from 1 source in ")
    assert erased.endswith("; searched 1 source")
    with open_store(url) as store:
        assert (store.count(source="vendor_a"), store.count(source="vendor_b")) == (0, 1)
        assert store.count(rejected=True) == 1

    both = cli("erase", "--actor", "42", "--source", "vendor_b", "--source", "vendor_c", "--dry-run")
    assert both.output.splitlines()[:2] == [
        "vendor_b: would delete 1 event and 1 rejected record",
        "vendor_c: would delete 0 events and 0 rejected records",
    ]
    unknown = cli("erase", "--actor", "42", "--source", "vendor_x")
    assert unknown.exit_code == 1
    assert unknown.output.startswith("error: unknown source 'vendor_x' (sources: none; the store holds: ")
    with open_store(url) as store:
        assert store.count(source="vendor_b") == 1


def test_an_actor_too_long_to_be_one_is_refused_before_the_store_is_read(url: str) -> None:
    """It was "error: unexpected OperationalError" (SQLite's limit on a LIKE pattern)."""
    fill(url, "chat", [1], actor="x" * 1_000)
    refused = cli("erase", "--actor", "x" * 100_000, "--dry-run")
    assert refused.exit_code == 1
    assert refused.output == (
        "error: --actor: at most 1,000 characters, got 100,000: give the actor as stored in the actor column "
        "(an email, a user id)\n"
    )
    longest = cli("erase", "--actor", "x" * 1_000)
    assert longest.exit_code == 0 and "chat: deleted 1 event and 0 rejected records" in longest.output


def test_a_reference_connectors_actor_built_from_two_fields_is_found_in_its_rejects(
    url: str, sources: SourceWriter
) -> None:
    """No substring of a record spells ``issuer|subject``: the store reads every reject of such a
    source (and only of it) and the connector's rule decides."""
    sources.write(CLAUDE_FEED)
    federated = {"type": "federated_identity_actor", "issuer": "https://idp.acme.example", "subject": "repo:acme/app"}
    with open_store(url) as store:
        store.write_rejects(
            [
                Reject("claude_feed", "bad", json.dumps({"id": "a1", "created_at": "x", "actor": federated}), "p 1"),
                Reject("claude_feed", "bad", json.dumps({"id": "a2", "created_at": "x", "actor": {}}), "p 2"),
                Reject("other", "bad", json.dumps({"actor": federated}), "p 3"),  # no rule: no string is the actor
            ],
            run_id="r",
        )
    result = cli("erase", "--actor", "https://idp.acme.example|repo:acme/app")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "claude_feed: deleted 0 events and 1 rejected record"
    with open_store(url) as store:
        assert sorted(r[0] for r in store._rows("SELECT location FROM pulled_events_rejected", [])) == ["p 2", "p 3"]


def test_prune_in_a_dg_project_keeps_what_its_components_sources_keep(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review: a component source kept 36,500 days, and a ./sources directory beside it; prune
    read ./sources and deleted by PULLMODE_RETENTION_DAYS. It reads the sources `pullmode pull`
    pulls: the dg project's, from its root or any directory below it."""
    package = f"prune_{uuid.uuid4().hex[:10]}"
    root = tmp_path / "project"
    folder = example_project(root, package)
    SourceWriter(folder / "sources").write(http_source("https://audit.acme.example/v1/events", retentionDays=36_500))
    (root / "sources").mkdir()
    SourceWriter(root / "sources").write(http_source("https://audit.acme.example/v1/events"))  # not the project's
    monkeypatch.delenv("PULLMODE_SOURCES_DIR", raising=False)
    monkeypatch.setenv("PULLMODE_RETENTION_DAYS", "10")
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-prune-8080")
    fill(url, "acme_audit", AGES)

    for where in (root, root / "src" / package / "defs"):
        monkeypatch.chdir(where)
        dry = cli("prune", "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert "acme_audit: would delete 0 events dated before " in dry.output
        assert "(36500 days: retentionDays)" in dry.output
        assert Path.cwd() == where  # back where it was run from
    monkeypatch.chdir(root / "src")
    assert cli("prune").exit_code == 0
    assert len(ids(url, "acme_audit")) == 5

    # The workspace file wins over the project, as for `pullmode pull`: the repository's names the module.
    monkeypatch.chdir(root)
    monkeypatch.setenv("PULLMODE_SOURCES_DIR", str(root / "sources"))
    plain = cli("prune", "--workspace", str(WORKSPACE))
    assert "acme_audit: deleted 3 events " in plain.output and "(10 days: PULLMODE_RETENTION_DAYS)" in plain.output


PLAIN = """
import json, sys
from click.testing import CliRunner
from pullmode_dagster.cli import main
outputs = [CliRunner().invoke(main, args) for args in (["prune", "--older-than", "30"], ["erase", "--actor", "x@y"])]
print(json.dumps({"exit": [r.exit_code for r in outputs], "out": [r.output for r in outputs],
                  "dagster": "dagster" in sys.modules}))
"""


def test_prune_and_erase_of_a_plain_project_do_not_load_dagster(
    url: str, sources: SourceWriter, tmp_path: Path
) -> None:
    """The module every workspace of the repository names loads ``load_sources()``: read without
    Dagster (a second instead of an import of Dagster and the code location)."""
    source_file(sources, "kept")
    fill(url, "kept", AGES)
    here = tmp_path / "run"
    here.mkdir()
    shutil.copy(WORKSPACE, here / "workspace.yaml")
    done = subprocess.run(
        [sys.executable, "-c", PLAIN],
        cwd=here,
        env={**os.environ, "PYTHONPATH": str(WORKSPACE.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["exit"] == [0, 0], found["out"]
    assert "kept: deleted 2 events" in found["out"][0]
    assert found["dagster"] is False


def test_the_errors_say_what_to_do(url: str, sources: SourceWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    source_file(sources, "plain")
    fill(url, "plain", AGES)

    nothing = cli("prune")
    assert nothing.exit_code == 1
    assert nothing.output.strip() == (
        "error: nothing to prune: no retentionDays on any source and PULLMODE_RETENTION_DAYS unset"
    )
    one = cli("prune", "--source", "plain")
    assert one.exit_code == 1 and "source 'plain' has no retentionDays" in one.output
    unknown = cli("prune", "--source", "plian", "--older-than", "3")
    assert unknown.exit_code == 1
    assert (
        "error: unknown source 'plian' (sources: plain; the store holds: plain); did you mean 'plain'?"
        in unknown.output
    )
    for days in ("-3", "0"):
        negative = cli("prune", "--older-than", days)
        assert negative.exit_code == 1 and f"error: --older-than: must be at least 1 day, got {days}" in negative.output
    monkeypatch.setenv("PULLMODE_RETENTION_DAYS", "ninety")
    bad = cli("prune")
    assert bad.exit_code == 1 and "error: PULLMODE_RETENTION_DAYS: not a whole number of days: 'ninety'" in bad.output
    assert cli("erase", "--actor", "").output.startswith("error: --actor: give the actor as stored")
    assert len(ids(url, "plain")) == 5  # none of them deleted anything


def test_a_source_file_with_problems_is_left_alone_and_the_prune_exits_1(url: str, sources: SourceWriter) -> None:
    source_file(sources, "kept30", retentionDays=30)
    source_file(sources, "broken", retentionDays=-5)
    fill(url, "kept30", AGES)
    fill(url, "broken", AGES)

    result = cli("prune")
    assert result.exit_code == 1
    assert "warning: broken: not pruned: its file has problems (pullmode validate): " in result.output
    assert ids(url, "broken") == ["e0", "e1", "e2", "e3", "e4"]  # its retention cannot be read: kept
    assert ids(url, "kept30") == ["e0", "e1", "e2"]
    named = cli("prune", "--source", "broken")
    assert (
        named.exit_code == 1
        and "source 'broken': retentionDays: Input should be greater than or equal to 1" in named.output
    )


def test_without_a_readable_sources_directory_only_older_than_prunes(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULLMODE_SOURCES_DIR", str(tmp_path / "typo"))
    monkeypatch.setenv("PULLMODE_RETENTION_DAYS", "10")
    fill(url, "kept30", AGES)  # its file may say 30 days: the default must not apply blindly
    refused = cli("prune")
    assert refused.exit_code == 1
    assert "typo: sources directory does not exist" in refused.output
    assert "no source's retentionDays can be read: fix the above, or give --older-than DAYS" in refused.output
    assert len(ids(url, "kept30")) == 5
    assert cli("prune", "--older-than", "30").exit_code == 0
    assert ids(url, "kept30") == ["e0", "e1", "e2"]


def test_the_store_url_password_is_never_printed(sources: SourceWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    source_file(sources, "kept30", retentionDays=30)
    with fresh_database() as url:
        # The test server trusts local connections: the password is carried, never checked.
        secret_url = url.replace("://postgres@", "://postgres:pw-canary-1234@", 1)
        assert secret_url != url
        monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", secret_url)
        fill(url, "kept30", AGES, actor=ALICE)
        outputs = [cli("prune").output, cli("prune", "--dry-run").output, cli("erase", "--actor", ALICE).output]
    assert all("postgresql://postgres@127.0.0.1:5432/" in out for out in outputs), outputs
    assert not any("pw-canary-1234" in out for out in outputs)


def test_retention_days_is_validated_with_the_source_and_field_named(sources: SourceWriter) -> None:
    source_file(sources, "a", retentionDays=90)
    source_file(sources, "b", retention_days=7)
    source_file(sources, "c", retentionDays="forever")
    source_file(sources, "d", retentionDays=40_000)
    loaded = load_sources(adapters=ADAPTERS)
    assert (loaded.sources["a"].retention_days, loaded.sources["b"].retention_days) == (90, 7)
    assert any("source 'c': retentionDays: Input should be a valid integer" in p for p in loaded.problems)
    assert any("source 'd': retentionDays: Input should be less than or equal to 36500" in p for p in loaded.problems)


def test_a_retention_ends_at_midnight_utc() -> None:
    now = datetime(2026, 3, 10, 23, 59, tzinfo=UTC)
    assert cutoff(30, now) == datetime(2026, 2, 8, tzinfo=UTC)
    assert cutoff(1, now) == datetime(2026, 3, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("record", "found"),
    [
        (json.dumps({"actor": {"email": ALICE}}), True),
        (json.dumps({"to": [{"name": "Alice", "addr": ALICE}]}), True),  # any depth
        (json.dumps({"to": [{"name": "Alice", "addr": f"Alice <{ALICE}>"}]}), False),  # a string holding it
        (json.dumps({ALICE: {"role": "admin"}}), False),  # a key is not a value
        (json.dumps({"path": f"users/{ALICE}/chats"}), False),
        (json.dumps({"who": f"m{ALICE}"}), False),
        (json.dumps({"who": ALICE.upper()}), False),  # exact, as the actor column is compared
        (f'{ALICE},chat,"2026-03-01"', True),  # a CSV row: not JSON, a field that is the actor
        (f'"x",{ALICE}.org,chat', False),
        (f'{{"truncated": "{ALICE}', True),  # cut short in the actor's string
        (f'{{"truncated": "{ALICE[:-3]}', False),
        ("[" * 100_000 + json.dumps(ALICE), True),  # deeper than Python recurses, and not JSON
        (json.dumps({"who": "ålice@acme.example"}, ensure_ascii=True), False),
    ],
)
def test_a_rejected_record_is_an_actors_when_a_string_in_it_is_exactly_the_actor(record: str, found: bool) -> None:
    assert ActorMatch(ALICE)(record) is found


@pytest.mark.parametrize(
    ("actor", "record", "found"),
    [
        ("42", json.dumps({"usage": {"input_tokens": 42}}), False),  # a number is not a user id...
        ("42", '{"usage": {"input_tokens": 42}, "cut', False),
        ("42", "2026-03-01,bob,42", False),  # ...nor a CSV field that reads as one
        ("42", json.dumps({"actor": {"email": "42"}}), True),
        ("1", json.dumps({"n": 1, "id": "r1", "xs": [1, 1.0]}), False),
        ("true", json.dumps({"flag": True}), False),
    ],
)
def test_without_the_sources_rule_a_number_is_never_an_actor(actor: str, record: str, found: bool) -> None:
    assert ActorMatch(actor)(record) is found


def test_with_the_sources_rule_the_actor_is_what_its_pull_would_have_stored(sources: SourceWriter) -> None:
    by_path = sources.load(http_source("https://a.example/v1", eventMapping={**EVENT_MAPPING, "actor": "$.user.id"}))
    mine = json.dumps({"created_at": "not a date", "user": {"id": 42}, "usage": {"input_tokens": 7}})
    theirs = json.dumps({"created_at": "not a date", "user": {"id": 7}, "usage": {"input_tokens": 42}, "to": "42"})
    assert ActorMatch("42", by_path)(mine)  # a number at the actor path is stored as its text
    assert not ActorMatch("42", by_path)(theirs)  # someone else's, though "42" is a string in it
    assert ActorMatch("42", by_path)(json.dumps({"user": {}, "to": "42"}))  # the path matches nothing: strings
    assert not ActorMatch("42", by_path)(json.dumps({"user": {"id": [42]}, "to": "42"}))  # its actor is "[42]"
    assert not ActorMatch("42", by_path)('{"user": {"id": 42}, "cut')  # not JSON: no rule, and 42 is a number

    claude = sources.load(CLAUDE_FEED)
    federated = {"type": "federated_identity_actor", "issuer": "https://idp.acme.example", "subject": "repo:acme/app"}
    record = json.dumps({"id": "a1", "created_at": "bad", "type": "x", "actor": federated})
    who = "https://idp.acme.example|repo:acme/app"  # built from two fields, as the connector builds it
    assert ActorMatch(who, claude)(record) and ActorMatch(who, claude).patterns is None
    assert not ActorMatch("repo:acme/app", claude)(record)  # a part of the actor is not the actor


def test_an_actor_with_non_ascii_text_is_found_however_the_record_escapes_it() -> None:
    who = "jürgen@acme.example"
    assert ActorMatch(who)(json.dumps({"u": who}, ensure_ascii=True))
    assert ActorMatch(who)('{"u": "' + json.dumps(who)[1:-1] + '", broken')  # escaped, in text that is not JSON


def test_a_percent_or_underscore_in_the_actor_is_matched_as_itself(url: str) -> None:
    with open_store(url) as store:
        store.write_rejects(
            [
                Reject("s", "bad", json.dumps({"u": "a_b%c@x"}), "page 1"),
                Reject("s", "bad", json.dumps({"u": "aXbYc@x"}), "page 2"),  # LIKE's wildcards would match it
            ],
            run_id="r",
        )
        erased = store.erase_actor("a_b%c@x")
        assert erased["s"].rejects == 1 and store.count(rejected=True) == 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_erase_and_prune_never_move_a_committed_cursor_and_nothing_comes_back(
    backend: str,
    api: LoopbackServer,
    sources: SourceWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
) -> None:
    feed = CursorFeed(make_events(40), page_size=10)  # user0..user6, dated 2026-03-01, one a minute
    api.routes["/v1/events"] = feed
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-retention-5151")
    with fresh_database() if backend == "postgres" else nullcontext(f"sqlite:///{tmp_path}/trace.db") as url:
        monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", url)
        with dg.DagsterInstance.get() as instance:
            assert pull("acme_audit").exit_code == 0
            cursor = SensorCursors(instance, WORKSPACE).get("acme_audit_poller")
            assert cursor and json.loads(cursor)["committed"]["watermark"] == "2026-03-01T00:39:00.000000Z"

            erased = cli("erase", "--actor", "user3@acme.example")
            assert "acme_audit: deleted 6 events and 0 rejected records" in erased.output, erased.output
            assert SensorCursors(instance, WORKSPACE).get("acme_audit_poller") == cursor
            again = pull("acme_audit")
            assert "acme_audit: nothing new" in again.output, again.output  # the erased events stay gone
            with open_store(url) as store:
                assert store.count() == 34

            # Erasure is not a block list: the person's events from after it are pulled as any.
            feed.events += make_events(1, start=45)  # user3's
            assert "acme_audit: 1 written" in pull("acme_audit").output
            cursor = SensorCursors(instance, WORKSPACE).get("acme_audit_poller")

            pruned = cli("prune", "--older-than", "1")
            assert "pruned 35 events and 0 rejected records" in pruned.output, pruned.output
            assert SensorCursors(instance, WORKSPACE).get("acme_audit_poller") == cursor
            assert "acme_audit: nothing new" in pull("acme_audit").output
            with open_store(url) as store:
                assert store.count() == 0


def test_on_sqlite_erased_text_is_gone_from_the_file_and_its_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.db"
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{path}")
    fill(f"sqlite:///{path}", "chat", [1 + i / 100 for i in range(500)], actor=ALICE)
    fill(f"sqlite:///{path}", "chat", [1 + i / 100 for i in range(500)], start=1000)  # bob's: pages stay in use
    with sqlite3.connect(path) as idle:  # another process's connection keeps the WAL file in place
        idle.execute("SELECT count(*) FROM pulled_events").fetchone()
        result = cli("erase", "--actor", ALICE)
        assert result.exit_code == 0 and "erased 500 events" in result.output, result.output
        assert "-wal still holds" not in result.output
        wal = Path(f"{path}-wal")
        assert wal.exists() and ALICE.encode() not in wal.read_bytes()
        assert ALICE.encode() not in path.read_bytes()  # overwritten, not left in free space
        assert b"bob@acme.example" in path.read_bytes()
