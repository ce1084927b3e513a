"""pullmode_failure_alerts on a real instance: one alert per failed run that touched a source, at a
local receiver; a receiver that is down gets each alert once when it is back; failed checks too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pullmode_dagster.defs.alerts import SENSOR_NAME, AlertState, evaluate
from pullmode_dagster.demo.server import LoopbackServer, Request, Response

from .conftest import SourceWriter, http_source
from .dagster_helpers import Clock, Harness, make_harness
from .fakes import CursorFeed, make_events

SECRET = "tok-alert-canary-77aa"


class Receiver:
    """A webhook receiver that can be down."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.down = False

    def __call__(self, request: Request) -> Response:
        if self.down:
            return Response(503, {"error": "down"})
        self.alerts.append(request.json())
        return Response(200, {"ok": True})


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    fake = Receiver()
    with LoopbackServer({"/hook": fake}) as server:
        monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", server.url("/hook"))
        monkeypatch.setenv("PULLMODE_UI_BASE_URL", "http://dagster.internal:3000/")
        yield fake


@pytest.fixture
def harness(
    api: LoopbackServer,
    sources: SourceWriter,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Harness:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", SECRET)
    api.routes["/v1/events"] = lambda r: Response(401, {"error": f"token {r.header('authorization')} is revoked"})
    sources.write(http_source(api.url("/v1/events")))
    return make_harness(
        sources.directory, instance, Clock(datetime(2026, 3, 2, 10, 2, tzinfo=UTC)), tmp_path, "acme_audit"
    )


def alerts_tick(harness: Harness, cursor: str | None) -> str:
    sensor = harness.project.defs.resolve_sensor_def(SENSOR_NAME)
    context = dg.build_sensor_context(instance=harness.instance, cursor=cursor, definitions=harness.project.defs)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result.cursor or ""


def test_one_alert_per_failed_run_with_every_field_and_no_secret(harness: Harness, receiver: Receiver) -> None:
    failed = harness.run(harness.tick(None).run_requests[0])
    assert not failed.success
    cursor = alerts_tick(harness, None)
    (alert,) = receiver.alerts
    assert alert["kind"] == "run_failure" and alert["source"] == "acme_audit"
    assert alert["run_id"] == failed.run_id and alert["partition"] == "2026-03-02"
    assert alert["run_url"] == f"http://dagster.internal:3000/runs/{failed.run_id}"
    assert alert["error"].startswith("source 'acme_audit': page 1: HTTP 401 error from http://127.0.0.1:")
    assert alert["text"].startswith("pullmode: pull of acme_audit failed (partition 2026-03-02): source 'acme_audit'")
    assert SECRET not in str(alert) and "***" in alert["error"]
    alerts_tick(harness, cursor)  # nothing new: nothing sent again
    assert len(receiver.alerts) == 1


def test_a_receiver_that_is_down_gets_each_alert_once_when_it_is_back(harness: Harness, receiver: Receiver) -> None:
    receiver.down = True
    harness.run(harness.tick(None).run_requests[0])
    cursor = alerts_tick(harness, None)
    cursor = alerts_tick(harness, cursor)
    assert receiver.alerts == [] and len(AlertState.from_json(cursor).pending) == 1
    assert AlertState.from_json(cursor).pending[0]["attempts"] == 2
    receiver.down = False
    cursor = alerts_tick(harness, cursor)
    cursor = alerts_tick(harness, cursor)
    assert len(receiver.alerts) == 1 and AlertState.from_json(cursor).pending == []


def test_successful_runs_and_other_jobs_send_nothing(
    api: LoopbackServer, harness: Harness, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(3))
    assert harness.run(harness.tick(None).run_requests[0]).success

    @dg.op
    def boom() -> None:
        raise RuntimeError("not a pull")

    assert (
        not dg.GraphDefinition("other", node_defs=[boom])
        .to_job()
        .execute_in_process(instance=instance, raise_on_error=False)
        .success
    )
    alerts_tick(harness, None)
    assert receiver.alerts == []


def test_a_failed_error_check_of_a_source_alerts(
    harness: Harness, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    key = dg.AssetKey(["ingestion", "acme_audit"])

    @dg.asset(key=key, check_specs=[dg.AssetCheckSpec("normalized_schema", asset=key)])
    def corrupted() -> dg.MaterializeResult:
        return dg.MaterializeResult(
            check_results=[dg.AssetCheckResult(check_name="normalized_schema", passed=False, description="3 bad rows")]
        )

    dg.materialize([corrupted], instance=instance)
    alerts_tick(harness, None)
    (alert,) = receiver.alerts
    assert (alert["kind"], alert["source"], alert["check"]) == ("check_failure", "acme_audit", "normalized_schema")
    assert alert["error"] == "check normalized_schema failed: 3 bad rows"


class Lines(list[str]):
    def warning(self, message: str) -> None:
        self.append(message)

    info = error = warning


def test_without_a_webhook_alerts_are_logged(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULLMODE_ALERT_WEBHOOK_URL", raising=False)
    harness.run(harness.tick(None).run_requests[0])
    lines = Lines()
    state = evaluate(harness.instance, AlertState(), lines)
    assert state.pending == []
    (line,) = lines
    assert line.startswith("pullmode: pull of acme_audit failed") and SECRET not in line
