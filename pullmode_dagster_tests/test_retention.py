"""Retention and erasure (issue 24): ``pullmode prune`` and ``pullmode erase``, on both stores.

Every test taking ``url`` runs on SQLite and on Postgres (a database of its own). What is checked
is the store's rows afterwards, the counts printed, and the committed cursor, never just the output.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner, Result

from pullmode_dagster.cli import main
from pullmode_dagster.defs.sensor_state import SensorCursors
from pullmode_dagster.demo.server import LoopbackServer
from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.events.model import NormalizedEvent
from pullmode_dagster.engine.events.rejects import Reject
from pullmode_dagster.engine.events.rules import format_timestamp
from pullmode_dagster.engine.store import open_store
from pullmode_dagster.engine.store.retention import cutoff, mentions

from .bounded import join_all
from .conftest import SourceWriter, http_source
from .fakes import CursorFeed, make_events
from .pg import fresh_database
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
        rows = store._rows(f"SELECT source_event_id FROM pulled_events WHERE source_name = {store.PARAM}", [source])
    return sorted(r[0] for r in rows)


def source_file(sources: SourceWriter, name: str, **fields: Any) -> None:
    sources.write(http_source("https://audit.acme.example/v1/events", name=name, **fields))


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


def test_erase_deletes_an_actors_events_across_sources_and_the_rejects_that_name_it(
    url: str, sources: SourceWriter
) -> None:
    fill(url, "chat", [1, 2, 3], actor=ALICE)
    fill(url, "chat", [4, 5], start=10)  # bob's
    fill(url, "api", [1.5], actor=ALICE)
    fill(url, "api", [0.5], start=10)  # bob's, the newest of api
    fill(url, "other", [1], actor="malice@acme.example")  # not alice: the actor must be whole
    rejects = [
        Reject("chat", "event_timestamp: missing", json.dumps({"who": {"email": ALICE}, "x": [1]}), "page 1"),
        Reject("chat", "event_timestamp: missing", f'{{"broken json, by {ALICE}', "page 2"),  # not JSON
        Reject("api", f"actor: not a string: {{'id': {ALICE!r}}}", '{"id": 7}', "page 3"),  # in the reason only
        Reject("api", "event_timestamp: missing", json.dumps({"who": "alice@acme.example.org"}), "page 4"),
        Reject("api", "event_timestamp: missing", json.dumps({"who": f"x{ALICE}"}), "page 5"),
        Reject("api", "event_timestamp: missing", json.dumps({"who": "ALICE@acme.example"}), "page 6"),  # exact
    ]
    with open_store(url) as store:
        store.write_rejects(rejects, run_id="r")

    result = cli("erase", "--actor", ALICE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "api: deleted 1 event and 1 rejected record" in lines
    assert "chat: deleted 3 events and 2 rejected records" in lines
    assert any(
        line.startswith("erased 4 events and 3 rejected records of that actor from 2 sources in ") for line in lines
    )
    assert ALICE not in result.output  # the person is not repeated into logs
    with open_store(url) as store:
        assert store._rows(f"SELECT count(*) FROM pulled_events WHERE actor = {store.PARAM}", [ALICE])[0][0] == 0
        assert store.count() == 4  # bob's three and malice's
        left = sorted(r[0] for r in store._rows("SELECT location FROM pulled_events_rejected", []))
    assert left == ["page 4", "page 5", "page 6"]

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
    assert "chat: deleted 2 events and 0 rejected records" in real.output
    with open_store(url) as store:
        assert store.count() == 0 and store.count(rejected=True) == 0


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
        (json.dumps({"to": [{"name": "Alice", "addr": f"Alice <{ALICE}>"}]}), True),
        (json.dumps({ALICE: {"role": "admin"}}), True),  # a key
        (json.dumps({"path": f"users/{ALICE}/chats"}), True),
        (json.dumps({"who": f"m{ALICE}"}), False),
        (json.dumps({"who": f"{ALICE}.org"}), False),
        (json.dumps({"who": ALICE.upper()}), False),  # exact, as the actor column is compared
        (f'{ALICE},chat,"2026-03-01"', True),  # a CSV row: not JSON
        (f'{{"truncated": "{ALICE}', True),
        ("[" * 100_000 + json.dumps(ALICE), True),  # deeper than Python recurses, and not JSON
        (json.dumps({"who": "ålice@acme.example"}, ensure_ascii=True), False),
    ],
)
def test_a_rejected_record_mentions_an_actor_only_whole(record: str, found: bool) -> None:
    assert mentions(record, ALICE) is found


def test_an_actor_with_non_ascii_text_is_found_however_the_record_escapes_it() -> None:
    who = "jürgen@acme.example"
    assert mentions(json.dumps({"u": who}, ensure_ascii=True), who)
    assert mentions('{"u": "' + json.dumps(who)[1:-1] + '", broken', who)  # escaped, in text that is not JSON


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
