"""Event content stays in the trace store: with ``PULLMODE_EVENT_CONTENT`` (or a source's
``eventContent``) at ``hidden`` (the default) or ``masked``, no actor and no target of a pull reaches
Dagster's storage.

Real pulls through Dagster (``pullmode pull -v``, the instance in ``$DAGSTER_HOME``): one that
succeeds with a rejected record and a failing ``normalized_schema`` check, one that fails part-way;
then the alert sensor POSTs its alerts (the failure, the failing check) to a local webhook. Then
every actor and target value is looked for in every byte of Dagster's storage: each file under the
test's directory (SQLite databases read row by row too, compressed blobs inflated; compute logs) or
every row of every table of Dagster's Postgres database, plus what the webhook received, what the
CLI printed and the Python log. With ``shown`` the same scan finds the preview, so it can fail.
"""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from pullmode_dagster.definitions import build_project
from pullmode_dagster.defs.alerts import SENSOR_NAME
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine.declare.content import ContentPolicy, deployment_event_content
from pullmode_dagster.engine.errors import PullError, PullmodeError
from pullmode_dagster.engine.fetch.redaction import without_email_addresses
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import open_store

from .conftest import SourceWriter
from .dagster_helpers import cli, evaluate_sensor
from .documents import http_source
from .fakes import CursorFeed, make_events
from .pg import connect, fresh_database
from .test_alerts import Receiver
from .test_postgres_dagster import PRODUCTION_CONFIG, instance_from, point_dagster_at

ACTORS = tuple(f"canary.person{i}@people.example" for i in range(4))
TARGETS = tuple(f"canary-target-{i}-payroll-review" for i in range(5))
REJECTED_ACTOR = "canary.rejected@people.example"
REJECTED_TARGET = "canary-target-of-a-rejected-record"
CANARIES = (*ACTORS, *TARGETS, REJECTED_ACTOR, REJECTED_TARGET)
CORRUPTED = "evt_00007"
"""The event a store trigger corrupts as it is written: the run's normalized_schema check fails on it."""


def content_events(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    events = make_events(n, start=start)
    for i, event in enumerate(events, start):
        event["actor"]["email"] = ACTORS[i % len(ACTORS)]
        event["model"] = TARGETS[i % len(TARGETS)]
    return events


def rejected_event() -> dict[str, Any]:
    event = content_events(1, start=99)[0]
    event.update(id="evt_rejected", created_at="not a time", model=REJECTED_TARGET)
    event["actor"]["email"] = REJECTED_ACTOR
    return event


def found(text: str) -> list[str]:
    return sorted(c for c in CANARIES if c in text)


def database_text(path: Path) -> str:
    """Every value of every table of a SQLite file, compressed blobs (Dagster's snapshots) inflated."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(values_text(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)


def values_text(rows: list[tuple[Any, ...]]) -> str:
    parts = []
    for row in rows:
        for value in row:
            if isinstance(value, bytes | memoryview):
                data = bytes(value)
                with contextlib.suppress(zlib.error):  # Dagster's snapshots are compressed
                    data = zlib.decompress(data)
                parts.append(data.decode("utf-8", "replace"))
            else:
                parts.append(str(value))
    return "\n".join(parts)


def files_text(root: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    """Each file under ``root`` but ``skip`` (the trace store, the source files): its bytes as text,
    and for a SQLite database its rows too."""
    texts = {}
    for path in root.rglob("*"):
        # A skipped database's journal and WAL files (trace.db-wal) are skipped with it.
        if not path.is_file() or any(path.is_relative_to(s) or path.name.startswith(f"{s.name}-") for s in skip):
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", "replace")
        if data.startswith(b"SQLite format 3\x00"):
            text += database_text(path)
        texts[str(path.relative_to(root))] = text
    return texts


def postgres_text(url: str) -> str:
    """Every row of every table of the database at ``url`` (bytea inflated where compressed)."""
    with connect(url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
        ).fetchall()
        assert len(tables) > 5, tables  # Dagster's storage is there
        query = sql.SQL("SELECT * FROM {}.{}")
        return "\n".join(
            f"{name}: "
            + values_text(conn.execute(query.format(sql.Identifier(schema), sql.Identifier(name))).fetchall())
            for schema, name in tables
        )


class Pulls:
    """The scenario: a source whose events name people and what they worked on, pulled through
    Dagster twice (the second fails part-way), then the alert sensor's evaluation."""

    def __init__(self, api: LoopbackServer, sources: SourceWriter, monkeypatch: pytest.MonkeyPatch):
        self.api = api
        self.sources = sources
        self.receiver = Receiver()
        api.routes["/hook"] = self.receiver
        monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", api.url("/hook"))
        monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-content-1234")
        self.output = ""
        self.preview: dg.TableMetadataValue | None = None
        self.invalid_examples = ""

    def run(self, *, event_content: str | None, instance: Callable[[], dg.DagsterInstance]) -> None:
        events = content_events(25)
        events.insert(3, rejected_event())
        feed = CursorFeed(events, page_size=10)
        self.api.routes["/v1/events"] = feed
        override = {"eventContent": event_content} if event_content else {}
        self.sources.write(http_source(self.api.url("/v1/events"), **override))

        first = cli("pull", "acme_audit", "-v")
        self.output += first.output
        assert first.exit_code == 0, first.output
        # (The written count is not asserted: the store trigger's update counts as a change on SQLite.)
        assert " rejected, 3 pages, " in first.output.splitlines()[-1] and ", 1 rejected" in first.output

        # Something new, and the source fails after its first page: a failed run with partial metadata.
        feed.events += content_events(10, start=25)

        def failing(request: Request) -> Response:
            if int(request.arg("cursor") or 0) >= 10:
                return Response(500, {"error": "internal"})
            return feed(request)

        self.api.routes["/v1/events"] = failing
        second = cli("pull", "acme_audit", "-v", "--always-run")
        self.output += second.output
        assert second.exit_code == 1, second.output
        assert "page 2: HTTP 500" in second.output

        with instance() as inst:
            result = evaluate_sensor(build_project(self.sources.directory).defs, SENSOR_NAME, inst, None)
            self.output += str(result.skip_reason)
            run_id = self.first_run(inst)
            checks = {
                e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data  # type: ignore[union-attr]
                for e in inst.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            }
            materializations = inst.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            previews = [e.asset_materialization.metadata.get("preview") for e in materializations]  # type: ignore[union-attr]
            self.preview = next((p.value for p in previews if p), None)
        assert sorted(self.receiver.kinds) == ["check_failing", "failing"], self.receiver.alerts
        schema = checks["normalized_schema"]
        assert not schema.passed and schema.metadata["invalid_rows"].value == 1
        self.invalid_examples = schema.metadata["invalid_examples"].value

    @staticmethod
    def first_run(instance: dg.DagsterInstance) -> str:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"pullmode/source": "acme_audit"}))
        return runs[-1].run_id  # newest first

    def everything_dagster_saw(self, caplog: pytest.LogCaptureFixture) -> dict[str, str]:
        return {"webhook": repr(self.receiver.alerts), "cli output": self.output, "python log": caplog.text}


def assert_the_store_has_it_all(url: str) -> None:
    """The values are where they belong: every event in the store, the rejected record in its table."""
    query = "SELECT raw_record FROM pulled_events_rejected"
    with open_store(url) as store:
        rows = store.tail(source="acme_audit", limit=1000)
    assert {r["actor"] for r in rows} == set(ACTORS) and {r["target"] for r in rows} == set(TARGETS)
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            raw = [r[0] for r in conn.execute(query)]
    else:
        with connect(url) as pg:
            raw = [r[0] for r in pg.execute(query).fetchall()]
    assert len(raw) == 1 and REJECTED_ACTOR in raw[0] and REJECTED_TARGET in raw[0]


CASES = [
    # (PULLMODE_EVENT_CONTENT, the source's eventContent, content expected in Dagster's storage)
    pytest.param(None, None, False, id="default-hidden"),
    pytest.param("masked", None, False, id="masked"),
    pytest.param("shown", None, True, id="shown"),
    pytest.param("shown", "hidden", False, id="source-hides-what-the-deployment-shows"),
    pytest.param(None, "shown", True, id="source-shows-what-the-deployment-hides"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("deployment", "source", "leaks"), CASES)
def test_no_actor_or_target_reaches_dagsters_sqlite_storage_unless_shown(
    deployment: str | None,
    source: str | None,
    leaks: bool,
    home: Path,
    api: LoopbackServer,
    sources: SourceWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if deployment:
        monkeypatch.setenv("PULLMODE_EVENT_CONTENT", deployment)
    else:
        monkeypatch.delenv("PULLMODE_EVENT_CONTENT", raising=False)
    store_url = f"sqlite:///{tmp_path}/trace.db"
    open_store(store_url).close()
    with sqlite3.connect(tmp_path / "trace.db") as conn:
        conn.execute(
            f"CREATE TRIGGER corrupt AFTER INSERT ON pulled_events WHEN NEW.source_event_id = '{CORRUPTED}' "
            "BEGIN UPDATE pulled_events SET cost_usd = -1 WHERE id = NEW.id; END"
        )
    pulls = Pulls(api, sources, monkeypatch)
    pulls.run(event_content=source, instance=dg.DagsterInstance.get)
    assert_the_store_has_it_all(store_url)

    dagster = files_text(tmp_path, skip=(tmp_path / "trace.db", sources.directory))
    assert any("history" in name for name in dagster), sorted(dagster)  # the run's event log files were scanned
    seen = {where: found(text) for where, text in {**dagster, **pulls.everything_dagster_saw(caplog)}.items()}
    seen = {where: hits for where, hits in seen.items() if hits}
    effective = source or deployment or "hidden"
    if not leaks:
        assert seen == {}
        assert pulls.invalid_examples == (
            CORRUPTED if effective == "masked" else "withheld (eventContent: hidden); the trace store has the rows"
        )
        if effective == "masked":  # a preview all the same: who and on what as per-run pseudonyms
            assert pulls.preview is not None and len(pulls.preview.records) == 5
            for record in pulls.preview.records:
                assert record.data["actor"].startswith("masked:") and record.data["target"].startswith("masked:")
                assert record.data["action"] == "completion" and record.data["source_event_id"].startswith("evt_")
        else:
            assert pulls.preview is None
    else:
        # The preview (the first five events: these actors and targets) is in the run's event log.
        assert set(ACTORS) | set(TARGETS) <= {hit for hits in seen.values() for hit in hits}, seen
        assert pulls.preview is not None and {r.data["actor"] for r in pulls.preview.records} == set(ACTORS)
        assert pulls.invalid_examples == CORRUPTED
    # Whatever the setting, the rejected record's content stays in the rejected table (its count is shown).
    assert not any(REJECTED_ACTOR in hits or REJECTED_TARGET in hits for hits in seen.values()), seen


@pytest.mark.slow
@pytest.mark.parametrize(("deployment", "leaks"), [("hidden", False), ("shown", True)])
def test_no_actor_or_target_reaches_dagsters_postgres_storage_unless_shown(
    deployment: str,
    leaks: bool,
    api: LoopbackServer,
    sources: SourceWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PULLMODE_EVENT_CONTENT", deployment)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PULLMODE_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("PULLMODE_BACKOFF_INITIAL_SECONDS", "0.01")
    with fresh_database() as dagster_url, fresh_database() as store_url:
        point_dagster_at(dagster_url, monkeypatch)
        monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", store_url)
        open_store(store_url).close()
        with connect(store_url) as conn:
            conn.execute(
                "CREATE FUNCTION corrupt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "UPDATE pulled_events SET cost_usd = -1 WHERE id = NEW.id; RETURN NULL; END $$"
            )
            conn.execute(
                "CREATE TRIGGER corrupt AFTER INSERT ON pulled_events FOR EACH ROW "
                f"WHEN (NEW.source_event_id = '{CORRUPTED}') EXECUTE FUNCTION corrupt()"
            )
        home = tmp_path / "dagster_home"
        instance_from(PRODUCTION_CONFIG, home, monkeypatch).dispose()  # $DAGSTER_HOME on Postgres
        pulls = Pulls(api, sources, monkeypatch)
        pulls.run(event_content=None, instance=lambda: instance_from(PRODUCTION_CONFIG, home, monkeypatch))
        assert_the_store_has_it_all(store_url)

        texts = {"dagster database": postgres_text(dagster_url), **files_text(tmp_path, skip=(sources.directory,))}
        assert "pullmode_failure_alerts" in texts["dagster database"]  # the alert state is in there too
        seen = {where: found(text) for where, text in {**texts, **pulls.everything_dagster_saw(caplog)}.items()}
        seen = {where: hits for where, hits in seen.items() if hits}
        if leaks:
            assert set(ACTORS) | set(TARGETS) <= set(seen.get("dagster database", [])), seen
        else:
            assert seen == {}


NAMED_IN_AN_ERROR = "canary.denied@people.example"


@pytest.mark.slow
@pytest.mark.parametrize(("deployment", "quoted"), [(None, False), ("masked", False), ("shown", True)])
def test_a_vendors_error_response_reaches_dagster_and_the_alert_without_email_addresses_unless_shown(
    deployment: str | None,
    quoted: bool,
    home: Path,
    api: LoopbackServer,
    sources: SourceWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 403 whose body names a person (as the address and as a query echoed back, percent-encoded):
    the failure message keeps the vendor's reason, and with content not shown, no address reaches
    Dagster's storage, the alert or the CLI; ``pullmode preview`` shows the body as received."""
    if deployment:
        monkeypatch.setenv("PULLMODE_EVENT_CONTENT", deployment)
    else:
        monkeypatch.delenv("PULLMODE_EVENT_CONTENT", raising=False)
    receiver = Receiver()
    api.routes["/hook"] = receiver
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", api.url("/hook"))
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-content-1234")
    encoded = NAMED_IN_AN_ERROR.replace("@", "%40")
    body = {"error": f"forbidden for user {NAMED_IN_AN_ERROR} (filter actor={encoded}) on project payroll"}
    api.routes["/v1/events"] = lambda request: Response(403, body)
    sources.write(http_source(api.url("/v1/events")))

    pulled = cli("pull", "acme_audit")
    assert pulled.exit_code == 1 and "page 1: HTTP 403 error from" in pulled.output
    with dg.DagsterInstance.get() as instance:
        evaluate_sensor(build_project(sources.directory).defs, SENSOR_NAME, instance, None)
    assert receiver.kinds == ["failing"]
    alert = receiver.alerts[0]["text"]
    assert "forbidden for user" in alert and "on project payroll" in alert  # the vendor's reason stays

    texts = {
        **files_text(tmp_path, skip=(tmp_path / "trace.db", sources.directory)),
        "webhook": repr(receiver.alerts),
        "cli output": pulled.output,
        "python log": caplog.text,
    }
    assert any("history" in name for name in texts), sorted(texts)  # the run's event log was scanned
    seen = sorted(where for where, text in texts.items() if NAMED_IN_AN_ERROR in text or encoded in text)
    if quoted:
        assert {"webhook", "cli output"} <= set(seen), seen
    else:
        assert seen == []
        assert "forbidden for user [email] (filter actor=[email]) on project payroll" in alert
    previewed = cli("preview", "acme_audit")
    assert previewed.exit_code == 1 and NAMED_IN_AN_ERROR in previewed.output  # for who holds the credentials


# -- the rule itself ----------------------------------------------------------------------------------


def test_email_addresses_are_removed_however_the_at_sign_is_escaped() -> None:
    text = (
        'user=jo.b+x%40corp.example.com&y=1 {"u": "bob\\u0040mail.example.org"} a&#64;b.co, '
        "Ann.Lee@Sub.Example.ORG. Kept: evt_1@2026-01-01, name@localhost, @handle, request req_42"
    )
    assert without_email_addresses(text) == (
        'user=[email]&y=1 {"u": "[email]"} [email], [email]. '
        "Kept: evt_1@2026-01-01, name@localhost, @handle, request req_42"
    )
    assert ContentPolicy("shown").vendor_text(text) == text
    assert ContentPolicy("hidden").vendor_text(text) == ContentPolicy("masked").vendor_text(text) != text


def test_masked_pseudonyms_are_stable_within_a_run_and_unlinkable_across_runs() -> None:
    row = {"source_event_id": "evt_1", "actor": ACTORS[0], "action": "login", "target": TARGETS[0], "cost_usd": 0.5}
    run = ContentPolicy("masked")
    first, again = run.preview([row, dict(row, source_event_id="evt_2")]) or []
    assert first["actor"] == again["actor"] != ACTORS[0] and first["actor"].startswith("masked:")
    assert first["target"] != TARGETS[0] and first["target"] != first["actor"]
    # Ids, actions, amounts as they are: what an operator needs to find the row in the store.
    assert (first["source_event_id"], first["action"], first["cost_usd"]) == ("evt_1", "login", 0.5)
    other_run = ContentPolicy("masked").preview([row]) or []
    assert other_run[0]["actor"] != first["actor"]  # a new key per run: nothing to correlate
    assert ContentPolicy("masked").mask(None) is None and ContentPolicy("masked").mask("") == ""
    assert ContentPolicy("hidden").preview([row]) is None
    assert ContentPolicy("shown").preview([row]) == [row]
    assert ContentPolicy("hidden").examples([]) == ContentPolicy("shown").examples([]) == "none"


def test_the_deployment_setting_and_a_typo_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULLMODE_EVENT_CONTENT", raising=False)
    assert deployment_event_content() == "hidden"
    monkeypatch.setenv("PULLMODE_EVENT_CONTENT", " masked\n")
    assert deployment_event_content() == "masked"
    assert deployment_event_content("shown") == "shown"  # the resource's value wins
    monkeypatch.setenv("PULLMODE_EVENT_CONTENT", "show")
    with pytest.raises(
        PullmodeError, match=r"^\$PULLMODE_EVENT_CONTENT must be one of hidden, masked, shown, not 'show'$"
    ):
        deployment_event_content()


def test_validate_names_a_bad_setting_in_the_environment_and_in_a_source(
    sources: SourceWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources.write(http_source("https://audit.acme.example/v1/events", eventContent="masked"))
    monkeypatch.delenv("PULLMODE_EVENT_CONTENT", raising=False)
    assert cli("validate").exit_code == 0
    monkeypatch.setenv("PULLMODE_EVENT_CONTENT", "visible")
    result = cli("validate")
    assert result.exit_code == 1
    assert "$PULLMODE_EVENT_CONTENT must be one of hidden, masked, shown, not 'visible'" in result.output
    monkeypatch.delenv("PULLMODE_EVENT_CONTENT")
    sources.write(http_source("https://audit.acme.example/v1/events", event_content="everything"))
    result = cli("validate")
    assert result.exit_code == 1 and "acme_audit.yaml" in result.output and "event_content" in result.output
    assert "'hidden', 'masked' or 'shown'" in result.output


def test_a_bad_setting_fails_the_run_with_the_variable_named(
    home: Path, api: LoopbackServer, sources: SourceWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-content-1234")
    monkeypatch.setenv("PULLMODE_EVENT_CONTENT", "all")
    api.routes["/v1/events"] = CursorFeed(content_events(3))
    sources.write(http_source(api.url("/v1/events")))
    result = cli("pull", "acme_audit")
    assert result.exit_code == 1
    assert "$PULLMODE_EVENT_CONTENT must be one of hidden, masked, shown, not 'all'" in result.output


@pytest.fixture
def pg_store_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def test_a_store_error_never_quotes_the_failing_row(
    pg_store_url: str, api: LoopbackServer, sources: SourceWriter
) -> None:
    """Postgres puts the failing row in its error's DETAIL: the pull's error (the run's failure, the
    alert) keeps the rest of the message and leaves the row out."""
    with open_store(pg_store_url):
        pass
    with psycopg.connect(pg_store_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE pulled_events ADD CONSTRAINT no_canary CHECK (actor <> '{ACTORS[2]}')")
    api.routes["/v1/events"] = CursorFeed(content_events(5))
    source = sources.load(http_source(api.url("/v1/events")))
    with open_store(pg_store_url) as store, pytest.raises(PullError) as info:
        run_pull(source, store=store, credentials={"token": "tok"})
    message = str(info.value)
    assert 'violates check constraint "no_canary"' in message
    assert found(message) == [] and "DETAIL" not in message
