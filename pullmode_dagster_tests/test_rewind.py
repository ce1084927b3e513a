"""A cursor rewind holds: set by ``dagster sensor cursor --set`` (the UI's "Set cursor value" takes the
same path), by editing the ``committed`` part of the poller's whole cursor, or by ``pullmode rewind``,
the next pull starts from the cursor set and the cursor committed after it is that pull's, never
the end cursor of a run from before the rewind (which the poller used to settle again: Dagster skips
a request under a run key already used, and the run found by that key was the old one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from pullmode_dagster.cli import main
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.definitions import build_definitions
from pullmode_dagster.defs.names import PULL_ID_TAG
from pullmode_dagster.defs.sensors import PollPlanState
from pullmode_dagster.demo.server import LoopbackServer, Request, Response

from .conftest import SourceWriter
from .dagster_helpers import WORKSPACE, Clock, Harness, committed, make_harness, record_run
from .documents import http_source
from .fakes import CursorFeed, make_events
from .test_sensor_state import dagster_sensor_cursor

T = datetime(2026, 3, 2, 10, 2, 30, tzinfo=UTC)
"""The latest cron tick is 10:00 until 10:05: every evaluation below is due for the tick already pulled."""
OLD_END = "2026-03-01T00:39:00.000000Z"
"""The end cursor of the first pull (40 events, one a minute from 00:00)."""
REWOUND = "2026-03-01T00:09:00.000000Z"
NEW_END = "2026-03-01T00:41:00.000000Z"
"""The end cursor of the pull after the rewind (two more events arrived meanwhile)."""
SECRET = "tok-rewind-canary-4242"


@pytest.fixture
def acme(api: LoopbackServer, sources: SourceWriter, monkeypatch: pytest.MonkeyPatch) -> CursorFeed:
    """The source acme_audit, with a watermark filter, over 40 events at the loopback API."""
    monkeypatch.setenv("ACME_AUDIT_TOKEN", SECRET)
    api.routes["/v1/events"] = feed = CursorFeed(make_events(40), page_size=10)
    sources.write(http_source(api.url("/v1/events"), incrementalParams={"created_after": "${{cursor.watermark}}"}))
    return feed


@pytest.fixture
def harness(acme: CursorFeed, sources: SourceWriter, tmp_path: Path) -> Iterator[Harness]:
    with dg.instance_for_test() as instance:
        yield make_harness(sources.directory, instance, Clock(T), tmp_path, "acme_audit")


def config_cursor(request: dg.RunRequest) -> dict[str, Any]:
    return json.loads(request.run_config["ops"]["ingestion__acme_audit"]["config"]["cursor"])


def run_key_is_new(instance: dg.DagsterInstance, request: dg.RunRequest) -> bool:
    """Whether the daemon would launch ``request``: it skips a run key a run already has."""
    return not instance.get_runs(filters=dg.RunsFilter(tags={PULL_ID_TAG: request.run_key}))


def pulled_and_settled(harness: Harness) -> tuple[str, str]:
    """The first pull (all 40 events) and the evaluation that commits it: (the cursor stored after it,
    the run id)."""
    first = harness.tick(None)
    result = harness.run(first.run_requests[0])
    assert result.success
    harness.clock.now = T.replace(minute=3)
    settled = harness.tick(first.cursor)
    assert committed(settled.cursor)["watermark"] == OLD_END and settled.run_requests == []
    return settled.cursor or "", result.run_id


def more_events(feed: CursorFeed) -> None:
    feed.events += make_events(2, start=40)


def tick_log(capfd: pytest.CaptureFixture[str]) -> str:
    """What the poller wrote to its tick log since the last call (a tick log's console copy: Dagster's
    instigation logger does not propagate to Python's root logger)."""
    return capfd.readouterr().err


def pull_from_the_rewind_and_commit(harness: Harness, cursor: str, *, old_run: str) -> dict[str, Any]:
    """The evaluation after a rewind requests a pull from the rewound watermark under a run key the
    daemon launches; its run re-reads from there; the next evaluation commits that run's end cursor.
    Returns the state stored after it."""
    harness.clock.now = T.replace(minute=4)
    rewound = harness.tick(cursor)
    (request,) = rewound.run_requests
    assert config_cursor(request) == {"v": 1, "watermark": REWOUND}
    assert run_key_is_new(harness.instance, request), request.run_key
    result = harness.run(request)
    assert result.success
    written = result.asset_materializations_for_node("ingestion__acme_audit")[-1].metadata
    assert (written["events_written"].value, written["duplicates_skipped"].value) == (2, 30)
    harness.clock.now = T.replace(minute=4, second=30)
    after = harness.tick(rewound.cursor)
    state = PollPlanState.from_json(after.cursor)
    assert state.committed.watermark == NEW_END  # the new run's end cursor, not the old run's (OLD_END)
    assert state.last_pull == {"pull_id": request.run_key, "run_id": result.run_id, "status": "SUCCESS"}
    assert result.run_id != old_run
    return json.loads(after.cursor or "")


# -- through Dagster's own command ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_rewind_set_with_dagster_sensor_cursor_holds(
    acme: CursorFeed, sources: SourceWriter, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        harness = make_harness(sources.directory, instance, Clock(T), tmp_path, "acme_audit")
        stored, old_run = pulled_and_settled(harness)
        cursors = SensorCursors(instance, WORKSPACE)
        cursors.set("acme_audit_poller", stored)  # what the daemon stored after that evaluation
        more_events(acme)

        # As the README says to run it (its DAGSTER_HOME, the repository's workspace.yaml).
        dagster_sensor_cursor(home, sources.directory, "--set", json.dumps({"watermark": "2026-03-01T00:09:00Z"}))
        cursor = cursors.get("acme_audit_poller")
        assert cursor == '{"watermark": "2026-03-01T00:09:00Z"}'
        tick_log(capfd)
        after = pull_from_the_rewind_and_commit(harness, cursor, old_run=old_run)
        assert f'acme_audit: cursor set by hand: rewound to {{"v":1,"watermark":"{REWOUND}"}}' in tick_log(capfd)
        assert sorted(r["source_event_id"] for r in harness.rows()) == [f"evt_{i:05d}" for i in range(42)]
        assert "committed_digest" in after


# -- the poller's whole cursor, edited, and a pull in flight -------------------------------------------


def edited(cursor: str | None, watermark: str) -> str:
    """``cursor`` (the poller's whole cursor, as the UI shows it) with its committed watermark changed."""
    doc = json.loads(cursor or "")
    doc["committed"]["watermark"] = watermark
    return json.dumps(doc)


def test_editing_committed_in_the_whole_cursor_is_a_rewind_that_holds(
    harness: Harness, acme: CursorFeed, capfd: pytest.CaptureFixture[str]
) -> None:
    stored, old_run = pulled_and_settled(harness)
    more_events(acme)
    tick_log(capfd)
    pull_from_the_rewind_and_commit(harness, edited(stored, "2026-03-01T00:09:00Z"), old_run=old_run)
    assert "acme_audit: cursor set by hand: rewound to" in tick_log(capfd)


def test_a_cursor_the_poller_wrote_is_not_taken_for_a_rewind(harness: Harness) -> None:
    stored, _ = pulled_and_settled(harness)
    assert not PollPlanState.from_json(stored).set_by_hand
    # A cursor stored before the digest existed is trusted as the poller's.
    legacy = json.loads(stored)
    del legacy["committed_digest"]
    assert not PollPlanState.from_json(json.dumps(legacy)).set_by_hand


def test_a_rewind_while_a_pull_is_in_flight_holds_after_that_run_succeeds(
    harness: Harness, acme: CursorFeed, capfd: pytest.CaptureFixture[str]
) -> None:
    """Requested from {} (the whole feed), rewound before its run ran: that run's end cursor is never
    committed over the rewind, and no pull starts while it runs."""
    first = harness.tick(None)
    (request,) = first.run_requests
    rewound = edited(first.cursor, "2026-03-01T00:09:00Z")  # the whole cursor, in_flight included
    running = record_run(
        harness.instance, harness.project.defs, "acme_audit_pull", status=dg.DagsterRunStatus.STARTED, tags=request.tags
    )
    harness.clock.now = T.replace(minute=3)
    tick_log(capfd)
    waiting = harness.tick(rewound)
    assert waiting.run_requests == []
    assert waiting.skip_reason.skip_message == f"another pull of this source is in flight: run {running.run_id}"
    assert committed(waiting.cursor)["watermark"] == REWOUND
    assert PollPlanState.from_json(waiting.cursor).in_flight is None
    lines = tick_log(capfd)
    assert "cursor set by hand: rewound to" in lines and f"pull {request.run_key}, in flight, will not be" in lines

    # That run ends as it would have: all 40 events, its end cursor OLD_END in its metadata.
    harness.instance.delete_run(running.run_id)
    old = harness.run(request)
    assert old.success
    more_events(acme)
    pull_from_the_rewind_and_commit(harness, waiting.cursor or "", old_run=old.run_id)


def test_a_bare_cursor_set_while_a_pull_is_in_flight_holds(harness: Harness, acme: CursorFeed) -> None:
    first = harness.tick(None)
    old = harness.run(first.run_requests[0])  # ran, but no evaluation settled it before the rewind
    assert old.success
    more_events(acme)
    pull_from_the_rewind_and_commit(harness, json.dumps({"watermark": "2026-03-01T00:09:00Z"}), old_run=old.run_id)


# -- pullmode rewind ---------------------------------------------------------------------------------------


def rewind(*args: str) -> Any:
    """``pullmode rewind`` from a directory without workspace.yaml: it addresses the pollers by the
    location name every workspace uses, so the daemon's and the repository's state."""
    return CliRunner().invoke(main, ["rewind", *args])


@pytest.mark.slow
def test_pullmode_rewind_sets_the_cursor_the_poller_pulls_from(
    acme: CursorFeed, sources: SourceWriter, home: Path, tmp_path: Path
) -> None:
    pulled = CliRunner().invoke(main, ["pull", "acme_audit", "--workspace", str(WORKSPACE)])
    assert pulled.exit_code == 0 and "acme_audit: 40 written" in pulled.output, pulled.output
    more_events(acme)

    done = rewind("acme_audit", "--to", "2026-03-01T00:09:00Z")
    assert done.exit_code == 0, done.output
    assert done.output == (
        f'acme_audit: cursor set to {{"v":1,"watermark":"{REWOUND}"}} (was {{"v":1,"watermark":"{OLD_END}"}}); '
        "the poller's next evaluation pulls from there (or now: pullmode pull acme_audit)\n"
    )
    with dg.DagsterInstance.get() as instance:
        cursors = SensorCursors(instance, WORKSPACE)
        stored = cursors.get("acme_audit_poller")
        assert json.loads(stored or "") == {"v": 1, "watermark": REWOUND}
        harness = make_harness(sources.directory, instance, Clock(T), tmp_path, "acme_audit")
        (old,) = instance.get_runs(filters=dg.RunsFilter(tags={"pullmode/source": "acme_audit"}))
        pull_from_the_rewind_and_commit(harness, stored or "", old_run=old.run_id)


@pytest.mark.slow
def test_pullmode_rewind_validates_seals_and_refuses_while_a_pull_is_in_flight(
    api: LoopbackServer, acme: CursorFeed, sources: SourceWriter, home: Path
) -> None:
    sources.write(http_source(api.url("/v1/events"), name="full_reads"))

    def refused(*args: str) -> str:
        result = rewind(*args)
        assert result.exit_code == 1, result.output
        (line,) = result.output.splitlines()
        return line

    assert refused("acme_audit", "--to", "yesterday") == (
        "error: --to: not an ISO 8601 date or date-time: 'yesterday' (e.g. 2026-03-01 or 2026-03-01T10:00:00Z)"
    )
    assert refused("acme_audit", "--cursor", '{"page_cursr": "20"}') == (
        "error: source 'acme_audit': the cursor does not fit http_polling: page_cursr: unknown field"
    )
    assert refused("acme_audit", "--cursor", '{"committed": {}}').startswith(
        "error: source 'acme_audit': --cursor takes a cursor state (the poller cursor's `committed` part)"
    )
    assert refused("full_reads", "--to", "2026-03-01") == (
        "error: source 'full_reads': --to cannot rewind http_polling: every pull starts from its first page "
        "(no incrementalParams use ${{cursor.watermark}}); give the cursor with --cursor"
    )
    both = rewind("acme_audit", "--to", "2026-03-01", "--cursor", "{}")
    assert both.exit_code == 2 and "give --to ISO or --cursor JSON" in both.output

    # A secret the cursor holds is stored sealed and never printed.
    sealed = rewind("acme_audit", "--cursor", json.dumps({"page_cursor": f"p2-{SECRET}"}))
    assert sealed.exit_code == 0, sealed.output
    assert SECRET not in sealed.output and '"page_cursor":"p2-${{credentials.token}}"' in sealed.output
    with dg.DagsterInstance.get() as instance:
        stored = SensorCursors(instance, WORKSPACE).get("acme_audit_poller") or ""
        assert SECRET not in stored and json.loads(stored) == {"v": 1, "page_cursor": "p2-${{credentials.token}}"}

        run = record_run(
            instance,
            build_definitions(sources.directory),
            "acme_audit_pull",
            status=dg.DagsterRunStatus.STARTED,
            tags={"pullmode/source": "acme_audit", "pullmode/mode": "poll", PULL_ID_TAG: "acme_audit:x"},
        )
        assert refused("acme_audit", "--to", "2026-03-01") == (
            f"error: source 'acme_audit': not rewound: another pull of this source is in flight: run {run.run_id}; "
            "rewind it once that run has ended"
        )
        assert SensorCursors(instance, WORKSPACE).get("acme_audit_poller") == stored  # left as it was


@pytest.mark.slow
def test_a_cursor_set_while_pullmode_pull_runs_is_left_as_set(
    api: LoopbackServer, acme: CursorFeed, sources: SourceWriter, home: Path
) -> None:
    """`pullmode pull` settles its own run when it ends: a cursor set meanwhile is not overwritten."""
    rewind_to = json.dumps({"watermark": "2026-03-01T00:09:00Z"})
    seen: list[object] = []

    def rewound_meanwhile(request: Request) -> Response:
        seen.append(request)
        if len(seen) == 2:  # the run's first page (the probe asked first): a rewind lands mid-run
            with dg.DagsterInstance.get() as instance:
                SensorCursors(instance, WORKSPACE).set("acme_audit_poller", rewind_to)
        return acme(request)

    api.routes["/v1/events"] = rewound_meanwhile
    pulled = CliRunner().invoke(main, ["pull", "acme_audit", "--workspace", str(WORKSPACE)])
    assert pulled.exit_code == 0, pulled.output
    first, summary = pulled.output.splitlines()
    assert first.startswith("acme_audit: the cursor was set by hand while run ")
    assert first.endswith(" ran: its end cursor is not committed")
    assert (
        summary.startswith("acme_audit: 40 written, ")
        and f'committed cursor {{"v":1,"watermark":"{REWOUND}"}}' in summary
    )
    with dg.DagsterInstance.get() as instance:
        assert SensorCursors(instance, WORKSPACE).get("acme_audit_poller") == rewind_to
