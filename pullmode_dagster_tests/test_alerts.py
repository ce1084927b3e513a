"""pullmode_failure_alerts on a real instance, alerting on change: one alert when a source starts
failing, a reminder at most every hour (a clock the test controls) while it keeps failing, one when a
run succeeds or a quiet poll finds it answering; freshness turning FAIL and back; an ERROR check
failing and passing again. Each is asserted on what a local webhook received; the state survives a
reset of the sensor's cursor and a restart; a receiver that is down gets each alert once."""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from pullmode_dagster.defs.alerts import SENSOR_NAME, AlertState, build_alert_sensor, delivery_limits, evaluate
from pullmode_dagster.defs.changes import STATE_KEY, StateStore
from pullmode_dagster.demo.server import LoopbackServer, Request, Response

from .conftest import SourceWriter
from .dagster_helpers import Clock, Harness, failed_runs, failing_sources, make_harness, running_daemon
from .documents import http_source
from .fakes import CursorFeed, make_events

SECRET = "tok-alert-canary-77aa"
KEY = dg.AssetKey(["ingestion", "acme_audit"])


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

    @property
    def kinds(self) -> list[str]:
        return [a["kind"] for a in self.alerts]


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
        monkeypatch.delenv("PULLMODE_ALERT_REMINDER_SECONDS", raising=False)
        yield fake


def revoked(request: Request) -> Response:
    return Response(401, {"error": f"token {request.header('authorization')} is revoked"})


@pytest.fixture
def harness(
    api: LoopbackServer,
    sources: SourceWriter,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Harness:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", SECRET)
    api.routes["/v1/events"] = revoked
    sources.write(http_source(api.url("/v1/events")))
    return make_harness(
        sources.directory, instance, Clock(datetime(2026, 3, 2, 10, 2, tzinfo=UTC)), tmp_path, "acme_audit"
    )


class Poller:
    """acme_audit's poller as the daemon drives it: each ``poll`` is a cron tick, its run executed, or
    its quiet poll recorded."""

    def __init__(self, harness: Harness):
        self.harness = harness
        self.cursor: str | None = None
        self.polls = 0

    def poll(self, after: timedelta = timedelta(minutes=5)) -> str | None:
        """The run's id (None: a quiet poll); ``after`` the previous poll on the harness's clock."""
        if self.polls:
            self.harness.clock.now += after
        self.polls += 1
        result = self.harness.tick(self.cursor)
        self.cursor = result.cursor
        if result.run_requests:
            return self.harness.run(result.run_requests[0]).run_id
        (quiet,) = result.asset_events
        self.harness.instance.report_runless_asset_event(quiet)  # what the daemon does with it
        return None


def alerts_tick(harness: Harness, cursor: str | None = None) -> dg.SensorResult:
    """One evaluation of the alert sensor as the daemon makes it (the harness's clock times reminders)."""
    sensor = harness.project.defs.resolve_sensor_def(SENSOR_NAME)
    with dg.build_sensor_context(instance=harness.instance, cursor=cursor, definitions=harness.project.defs) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def saved(instance: dg.DagsterInstance) -> AlertState:
    """The state the sensor saved in the instance, read as the sensor reads it."""
    return AlertState.from_json(StateStore(instance).read())


def said(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None and result.skip_reason.skip_message is not None
    return result.skip_reason.skip_message


def test_a_source_that_starts_failing_sends_one_alert_with_every_field_and_no_secret(
    harness: Harness, receiver: Receiver
) -> None:
    """Three failed pulls of a source on its cron: one alert (the first), not three."""
    poller = Poller(harness)
    first = poller.poll()
    result = alerts_tick(harness)
    (alert,) = receiver.alerts
    assert said(result) == f"sent: acme_audit failing (run {first[:8]})"
    assert alert == {
        "text": alert["text"],
        "kind": "failing",
        "source": "acme_audit",
        "run_id": first,
        "partition": "2026-03-02",
        "error": alert["error"],
        "run_url": f"http://dagster.internal:3000/runs/{first}",
        "since": alert["since"],
        "failed_runs": 1,
        "idempotency_key": f"{first}:failing",
    }
    assert alert["error"].startswith("source 'acme_audit': page 1: HTTP 401 error from http://127.0.0.1:")
    assert alert["text"].startswith("pullmode: acme_audit is failing (partition 2026-03-02): source 'acme_audit'")
    assert alert["text"].endswith(f" <http://dagster.internal:3000/runs/{first}|run {first[:8]}>")
    assert SECRET not in str(alert) and "***" in alert["error"]
    for _ in range(2):
        assert poller.poll() is not None
        assert said(alerts_tick(harness)) == "no change"
    assert len(receiver.alerts) == 1
    assert _tags(harness.instance, first)["pullmode/alerted"] == "failing"


@pytest.mark.parametrize(("setting", "every"), [(None, 60), ("600", 10)])
def test_reminders_while_a_source_keeps_failing_come_at_most_once_per_interval(
    harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, setting: str | None, every: int
) -> None:
    """The clock is the harness's: a failed pull every half interval; a reminder on the first failure
    at least ``every`` minutes after the last alert (an hour by default, or the setting), naming how
    many pulls failed since when."""
    if setting is not None:
        monkeypatch.setenv("PULLMODE_ALERT_REMINDER_SECONDS", setting)
    poller = Poller(harness)
    runs = []
    for _ in range(5):  # at 0, 1/2, 1, 3/2 and 2 intervals
        runs.append(poller.poll(after=timedelta(minutes=every / 2)))
        alerts_tick(harness)
    assert receiver.kinds == ["failing", "still_failing", "still_failing"]
    first, reminder, second = receiver.alerts
    assert [a["run_id"] for a in receiver.alerts] == [runs[0], runs[2], runs[4]]
    assert [a["failed_runs"] for a in receiver.alerts] == [1, 3, 5]
    assert reminder["since"] == second["since"] == first["since"]
    since = datetime.fromisoformat(first["since"]).strftime("%Y-%m-%d %H:%M UTC")
    partition = reminder["partition"]  # the tick's day: the harness's clock moves on
    assert reminder["text"].startswith(
        f"pullmode: acme_audit still failing since {since} (3 failed runs); latest (partition {partition}): "
        "source 'acme_audit': page 1: HTTP 401"
    )
    assert reminder["idempotency_key"] == f"{runs[2]}:still_failing"
    assert SECRET not in json.dumps(receiver.alerts)


def test_no_reminders_with_the_setting_at_zero_and_an_unusable_setting_is_named(
    harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    poller = Poller(harness)
    monkeypatch.setenv("PULLMODE_ALERT_REMINDER_SECONDS", "0")
    for _ in range(3):
        poller.poll()
        harness.clock.now += timedelta(hours=2)
        alerts_tick(harness)
    assert receiver.kinds == ["failing"]
    monkeypatch.setenv("PULLMODE_ALERT_REMINDER_SECONDS", "an hour")
    poller.poll()
    result = alerts_tick(harness)  # the default then: two hours since the alert, so a reminder
    assert receiver.kinds == ["failing", "still_failing"]
    problem = "$PULLMODE_ALERT_REMINDER_SECONDS must be a number of seconds, 0 or more; using 3600"
    assert said(result) == f"sent: acme_audit still failing (run {receiver.alerts[-1]['run_id'][:8]}) ({problem})"


def test_a_successful_run_after_failures_sends_one_recovered(
    api: LoopbackServer, harness: Harness, receiver: Receiver
) -> None:
    poller = Poller(harness)
    failed = [poller.poll(), poller.poll()]
    alerts_tick(harness)
    api.routes["/v1/events"] = CursorFeed(make_events(3))
    succeeded = poller.poll()
    assert succeeded is not None and harness.rows()
    result = alerts_tick(harness)
    assert receiver.kinds == ["failing", "recovered"]
    recovered = receiver.alerts[1]
    assert said(result) == f"sent: acme_audit recovered (run {succeeded[:8]})"
    assert (recovered["run_id"], recovered["failed_runs"], recovered["error"]) == (succeeded, 2, None)
    assert recovered["since"] == receiver.alerts[0]["since"]
    assert recovered["text"].startswith("pullmode: acme_audit recovered: a pull succeeded after 2 failed runs since ")
    assert recovered["idempotency_key"] == f"{failed[0]}:recovered"  # the incident's: its first run
    assert _tags(harness.instance, failed[0])["pullmode/alerted"] == "failing,recovered"
    poller.poll()  # another good pull: nothing to say
    assert said(alerts_tick(harness)) == "no change"
    api.routes["/v1/events"] = revoked  # failing again: a new incident, a new alert
    again = poller.poll()
    alerts_tick(harness)
    assert receiver.kinds == ["failing", "recovered", "failing"]
    assert receiver.alerts[-1]["run_id"] == again and receiver.alerts[-1]["failed_runs"] == 1


def test_a_quiet_poll_after_failures_is_a_recovery(api: LoopbackServer, harness: Harness, receiver: Receiver) -> None:
    """The probe asked the source and it answered with nothing new: no run, a runless materialization
    (``poll: quiet poll``), and the source is healthy again."""
    poller = Poller(harness)
    failed = poller.poll()
    alerts_tick(harness)
    api.routes["/v1/events"] = CursorFeed([])
    assert poller.poll() is None  # a quiet poll
    result = alerts_tick(harness)
    assert receiver.kinds == ["failing", "recovered"]
    recovered = receiver.alerts[1]
    assert said(result) == "sent: acme_audit recovered (quiet poll)"
    assert (recovered["run_id"], recovered["run_url"], recovered["partition"]) == (None, None, "2026-03-02")
    assert recovered["text"].startswith("pullmode: acme_audit recovered: a quiet poll found it answering after 1 ")
    assert recovered["idempotency_key"] == f"{failed}:recovered"


def _freshness(instance: dg.DagsterInstance, new: FreshnessState, previous: FreshnessState) -> None:
    """The state change Dagster's freshness daemon records (its evaluation is Dagster's, tested under
    the real daemon below)."""
    change = FreshnessStateChange(key=KEY, new_state=new, previous_state=previous, state_change_timestamp=time.time())
    instance.report_runless_asset_event(change)


def test_freshness_failing_and_passing_again_alert_once_each(harness: Harness, receiver: Receiver) -> None:
    instance = harness.instance
    _freshness(instance, FreshnessState.WARN, FreshnessState.PASS)
    assert said(alerts_tick(harness)) == "no change"  # a warning is not an alert
    _freshness(instance, FreshnessState.FAIL, FreshnessState.WARN)
    assert said(alerts_tick(harness)) == "sent: acme_audit stale"
    assert said(alerts_tick(harness)) == "no change"
    (stale,) = receiver.alerts
    asset_url = "http://dagster.internal:3000/assets/ingestion/acme_audit"
    assert (stale["kind"], stale["source"], stale["run_id"], stale["asset_url"]) == (
        "stale",
        "acme_audit",
        None,
        asset_url,
    )
    assert stale["text"] == (
        "pullmode: acme_audit is stale (its freshness policy failed): it was never pulled "
        f"<{asset_url}|ingestion/acme_audit>"
    )
    _freshness(instance, FreshnessState.PASS, FreshnessState.FAIL)
    assert said(alerts_tick(harness)) == "sent: acme_audit fresh again"
    assert receiver.kinds == ["stale", "fresh"]
    assert receiver.alerts[1]["text"].startswith("pullmode: acme_audit is fresh again")
    assert len({a["idempotency_key"] for a in receiver.alerts}) == 2


def test_a_disabled_source_turning_stale_is_not_news(
    api: LoopbackServer, sources: SourceWriter, instance: dg.DagsterInstance, tmp_path: Path, receiver: Receiver
) -> None:
    sources.write({**http_source(api.url("/v1/events")), "enabled": False})
    harness = make_harness(sources.directory, instance, Clock(datetime(2026, 3, 2, tzinfo=UTC)), tmp_path, "acme_audit")
    _freshness(instance, FreshnessState.FAIL, FreshnessState.PASS)
    assert said(alerts_tick(harness)) == "no change" and receiver.alerts == []


@functools.cache
def _checked_job(passed: bool, severity: dg.AssetCheckSeverity) -> dg.JobDefinition:
    """A job of acme_audit's asset whose ``normalized_schema`` check passes or fails (built once each)."""

    @dg.asset(key=KEY, check_specs=[dg.AssetCheckSpec("normalized_schema", asset=KEY)])
    def checked() -> dg.MaterializeResult:
        description = None if passed else "3 bad rows"
        result = dg.AssetCheckResult(
            check_name="normalized_schema", passed=passed, severity=severity, description=description
        )
        return dg.MaterializeResult(check_results=[result])

    return dg.Definitions(assets=[checked], jobs=[dg.define_asset_job("checked")]).resolve_job_def("checked")


def _checked(instance: dg.DagsterInstance, passed: bool, severity: dg.AssetCheckSeverity) -> str:
    """A run of acme_audit's asset whose ``normalized_schema`` check passed or failed."""
    return _checked_job(passed, severity).execute_in_process(instance=instance).run_id


def test_an_error_check_failing_alerts_once_and_again_when_it_passes(harness: Harness, receiver: Receiver) -> None:
    instance, error = harness.instance, dg.AssetCheckSeverity.ERROR
    _checked(instance, False, dg.AssetCheckSeverity.WARN)
    assert said(alerts_tick(harness)) == "no change"  # a WARN check is not an alert
    first = _checked(instance, False, error)
    _checked(instance, False, error)
    assert said(alerts_tick(harness)) == f"sent: acme_audit check normalized_schema failing (run {first[:8]})"
    _checked(instance, False, error)
    alerts_tick(harness)
    (alert,) = receiver.alerts
    assert (alert["kind"], alert["source"], alert["check"], alert["run_id"]) == (
        "check_failing",
        "acme_audit",
        "normalized_schema",
        first,
    )
    assert alert["error"] == "check normalized_schema failed: 3 bad rows"
    assert alert["text"].startswith("pullmode: acme_audit check normalized_schema failed: 3 bad rows <")
    assert alert["idempotency_key"] == f"{first}:check_failing:normalized_schema"
    passed = _checked(instance, True, error)
    assert said(alerts_tick(harness)) == f"sent: acme_audit check normalized_schema passing again (run {passed[:8]})"
    assert receiver.kinds == ["check_failing", "check_passing"]
    assert receiver.alerts[1]["text"].startswith("pullmode: acme_audit check normalized_schema passes again <")


# -- the state: where no reset of the cursor reaches -----------------------------------------------------


def test_a_reset_cursor_a_restart_and_a_renamed_location_neither_lose_nor_double_an_alert(
    api: LoopbackServer, harness: Harness, receiver: Receiver
) -> None:
    """The state is in the instance, not only in the cursor: each tick below starts from an empty cursor
    (a reset, or the cursor of a code location under another name) and new Definitions (a restart),
    and the incident goes on: no second ``failing``, its reminder an hour after it, one ``recovered``."""
    poller = Poller(harness)
    poller.poll()
    alerts_tick(harness)
    for _ in range(3):
        poller.poll()
        restarted = build_alert_sensor(["acme_audit"], clock=harness.clock)
        with dg.build_sensor_context(instance=harness.instance, cursor=None) as context:
            assert said(restarted(context)) == "no change"  # type: ignore[arg-type]
    harness.clock.now += timedelta(hours=1)
    poller.poll()
    alerts_tick(harness, cursor=None)
    api.routes["/v1/events"] = CursorFeed([])
    poller.poll()
    alerts_tick(harness, cursor=None)
    alerts_tick(harness, cursor=None)
    assert receiver.kinds == ["failing", "still_failing", "recovered"]
    assert receiver.alerts[1]["failed_runs"] == 5


def test_with_the_state_lost_too_the_run_tags_keep_each_alert_of_a_run_from_going_twice(
    harness: Harness, receiver: Receiver
) -> None:
    """Should the instance's record be lost as well (and the cursor), the event log is read again from
    its start: the runs' ``pullmode/alerted`` tags say what was delivered."""
    poller = Poller(harness)
    poller.poll()
    poller.poll()
    alerts_tick(harness)
    harness.instance.run_storage.set_cursor_values({STATE_KEY: ""})
    assert StateStore(harness.instance).read() is None
    assert said(alerts_tick(harness, cursor=None)) == "no change"
    assert receiver.kinds == ["failing"]


def test_the_old_cursor_format_carries_on_where_it_was(instance: dg.DagsterInstance, receiver: Receiver) -> None:
    """A cursor saved before alerts were sent on change (one event log position per kind, alerts
    waiting): what it had read is not read again, and what waited is delivered under its old key."""
    (old,) = failed_runs(instance, 1)
    position = instance.event_log_storage.get_maximum_record_id()
    cursor = base64.b64encode(json.dumps({"type": "STORAGE_ID", "value": position}).encode()).decode()
    waiting = {
        "kind": "run_failure",
        "source": "acme_audit",
        "run_id": old,
        "text": "pullmode: pull of acme_audit failed",
    }
    legacy = json.dumps({"runs": cursor, "succeeded": cursor, "pending": [{"alert": waiting, "attempts": 2}]})
    (new,) = failed_runs(instance, 1, source="other")
    with dg.build_sensor_context(instance=instance, cursor=legacy) as context:
        result = build_alert_sensor()(context)
    assert isinstance(result, dg.SensorResult)
    assert [(a["kind"], a["run_id"], a["idempotency_key"]) for a in receiver.alerts] == [
        ("run_failure", old, f"{old}:run_failure"),
        ("failing", new, f"{new}:failing"),
    ]


def test_successful_runs_and_other_jobs_send_nothing(
    api: LoopbackServer, harness: Harness, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    api.routes["/v1/events"] = CursorFeed(make_events(3))
    assert Poller(harness).poll() is not None

    @dg.op
    def boom() -> None:
        raise RuntimeError("not a pull")

    assert (
        not dg.GraphDefinition("other", node_defs=[boom])
        .to_job()
        .execute_in_process(instance=instance, raise_on_error=False)
        .success
    )
    assert said(alerts_tick(harness)) == "no change"
    assert receiver.alerts == []


def test_a_receiver_that_is_down_gets_the_alert_once_when_it_is_back(harness: Harness, receiver: Receiver) -> None:
    receiver.down = True
    Poller(harness).poll()
    alerts_tick(harness)
    result = alerts_tick(harness)
    assert said(result) == "nothing sent; 1 alert(s) waiting for the webhook"
    assert receiver.alerts == [] and [p["attempts"] for p in saved(harness.instance).pending] == [2]
    assert AlertState.from_json(result.cursor).pending[0]["attempts"] == 2  # the cursor shows a copy
    receiver.down = False
    alerts_tick(harness)
    alerts_tick(harness)
    assert receiver.kinds == ["failing"] and saved(harness.instance).pending == []


def test_a_failure_message_holding_the_sources_secret_is_redacted_in_the_payload_and_the_state(
    harness: Harness, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    """The step failure's message is whatever the run recorded (here an op of the user's): the alert
    applies the failed source's secrets, not only the webhook's."""

    @dg.op
    def leaks() -> None:
        raise dg.Failure(description=f"the API said no to {SECRET}")

    job = dg.GraphDefinition("leaky", node_defs=[leaks]).to_job()
    run = job.execute_in_process(instance=instance, raise_on_error=False, tags={"pullmode/source": "acme_audit"})
    assert not run.success
    receiver.down = True
    cursor = alerts_tick(harness).cursor or ""
    (waiting,) = AlertState.from_json(cursor).pending
    assert waiting["alert"]["error"] == "the API said no to ***"
    stored = instance.run_storage.get_cursor_values({STATE_KEY})[STATE_KEY]
    receiver.down = False
    alerts_tick(harness)
    (alert,) = receiver.alerts
    assert alert["error"] == "the API said no to ***"
    assert alert["text"].startswith("pullmode: acme_audit is failing: the API said no to *** <")
    assert SECRET not in json.dumps(alert) + cursor + stored


class Lines(list[str]):
    def warning(self, message: str) -> None:
        self.append(message)

    info = error = warning


def test_without_a_webhook_alerts_are_logged(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULLMODE_ALERT_WEBHOOK_URL", raising=False)
    run_id = Poller(harness).poll()
    lines = Lines()
    state = evaluate(harness.instance, AlertState(), lines)
    assert state.pending == [] and state.sent == [f"acme_audit failing (run {run_id[:8]})"]  # type: ignore[index]
    (line,) = lines
    assert line.startswith("pullmode: acme_audit is failing") and SECRET not in line
    result = alerts_tick(harness, cursor=None)
    assert said(result) == f"logged (no $PULLMODE_ALERT_WEBHOOK_URL): acme_audit failing (run {run_id[:8]})"  # type: ignore[index]


# -- the webhook URL: validated once, never printed beyond its origin ------------------------------------


class Hook:
    """A webhook receiver answering each request with the next status of ``statuses`` (then 200),
    recording what it received; ``advance`` moves a fake clock on per request (a slow receiver in the
    evaluation's own time), and ``gate``, while unset, keeps it from answering for ``delay`` seconds."""

    def __init__(self, statuses: tuple[int, ...] = (), advance: float = 0.0):
        self.statuses = list(statuses)
        self.received: list[Request] = []
        self.now = 0.0
        self.advance = advance
        self.gate = threading.Event()
        self.gate.set()
        self.delay = 30.0

    def clock(self) -> float:
        return self.now

    def __call__(self, request: Request) -> Response:
        self.received.append(request)
        self.now += self.advance
        self.gate.wait(self.delay)  # the slowness under test (the test sets the gate when it ends)
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status, {"ok": status == 200})

    @property
    def run_ids(self) -> list[str]:
        return [r.json()["run_id"] for r in self.received]


@pytest.fixture
def hook() -> Iterator[tuple[Hook, LoopbackServer]]:
    receiver = Hook()
    with LoopbackServer({"/hook/T0/B0/slacktoken": receiver}) as server:
        yield receiver, server
        receiver.gate.set()


@pytest.mark.parametrize("ending", ["\n", "\r\n", " \n"])
def test_a_webhook_url_pasted_from_a_secret_file_with_its_newline_is_used(
    instance: dg.DagsterInstance, hook: tuple[Hook, LoopbackServer], monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    receiver, server = hook
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", server.url("/hook/T0/B0/slacktoken") + ending)
    (run_id,) = failed_runs(instance, 1)
    state = evaluate(instance, AlertState(), Lines())
    assert receiver.run_ids == [run_id] and state.pending == []


NOT_A_HOST = "its host must be a DNS name (ASCII letters, digits, '-' and '.'; IDNA for others) or an IP address"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example/x y?token=tok-c4n4ry", "it holds whitespace or a control character at position 23"),
        ("http://hooks.example/x\tz", "it holds whitespace or a control character at position 23"),
        ("hooks.example/services/tok-c4n4ry", "it must start with http:// or https://"),
        ("ftp://hooks.example/tok-c4n4ry", "it must start with http:// or https://"),
        ("user:tok-c4n4ry@hooks.example/x", "it must start with http:// or https://"),
        ("https:///services/tok-c4n4ry", "it has no host"),
        ("http://user:tok-c4n4ry@:8080/x", "it has no host"),
        ("http://[::tok-c4n4ry]/x", "its host is not a valid IPv6 address"),
        ("http://127.0.0.1:99999/services/tok-c4n4ry", "its port must be a number from 1 to 65535"),
        ("http://hooks.example:0/services/tok-c4n4ry", "its port must be a number from 1 to 65535"),
        ("https://user:tok-c4n4ry@hooks.example:65536/x", "its port must be a number from 1 to 65535"),
        ("http://hooks.example:-1/services/tok-c4n4ry", "its port must be a number from 1 to 65535"),
        ("http://hooks.example:+80/services/tok-c4n4ry", "its port must be a number from 1 to 65535"),
        ("http://hooks.example:\u0668\u0660/services/tok-c4n4ry", "its port must be a number from 1 to 65535"),
        ("http://hooks.example:80:80/services/tok-c4n4ry", "its port must be a number from 1 to 65535"),
        ("http://%68ooks.example/services/tok-c4n4ry", NOT_A_HOST),
        ("http://hooks%00.example/services/tok-c4n4ry", NOT_A_HOST),
        ("http://1.2.3.4.5/services/tok-c4n4ry", "its host is not a valid IPv4 address"),
        ("http://[zz]/services/tok-c4n4ry", "its host is not a valid IPv6 address"),
    ],
)
def test_an_unusable_webhook_url_is_named_in_the_skip_reason_and_the_alert_waits(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, url: str, why: str
) -> None:
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", url)
    failed_runs(instance, 1)
    result = build_alert_sensor()(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    problem = f"$PULLMODE_ALERT_WEBHOOK_URL is not a usable webhook URL: {why}"
    assert result.skip_reason is not None
    assert result.skip_reason.skip_message == f"nothing sent; 1 alert(s) waiting for the webhook ({problem})"
    (waiting,) = AlertState.from_json(result.cursor).pending
    assert waiting["attempts"] == 1
    assert "c4n4ry" not in f"{result.cursor}{result.skip_reason.skip_message}"


def test_canary_the_webhook_url_user_info_query_and_path_and_the_runs_secret_appear_nowhere(
    harness: Harness,
    hook: tuple[Hook, LoopbackServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver, server = hook
    receiver.statuses = [500]
    user, password, token = "alertuser-c4n4ry", "pa55w0rd-c4n4ry", "qtoken-c4n4ry"
    url = f"http://{user}:{password}@127.0.0.1:{server.port}/hook/T0/B0/slacktoken?token={token}#frag-c4n4ry"
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", url)
    failed = harness.run(harness.tick(None).run_requests[0])  # its failure message held the API token
    assert not failed.success
    sensor = harness.project.defs.resolve_sensor_def(SENSOR_NAME)
    seen: list[str] = []
    cursor = None
    for tick in range(2):  # a 500 first, then delivered; the log captured in the instance as the daemon does
        with dg.SensorEvaluationContext(
            instance_ref=harness.instance.get_ref(),
            instance=harness.instance,
            cursor=cursor,
            log_key=["pullmode", SENSOR_NAME, str(tick)],
            sensor_name=SENSOR_NAME,
            definitions=harness.project.defs,
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult) and result.skip_reason is not None
        cursor = result.cursor
        seen += [result.cursor or "", result.skip_reason.skip_message or ""]
    root = Path(harness.instance.root_directory)
    instance_files = "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())
    assert f"not delivered (HTTP 500 from http://127.0.0.1:{server.port}); trying again later" in instance_files
    assert f"sent: acme_audit failing (run {failed.run_id[:8]})" in instance_files
    # The receiver got both requests at the full URL, the user info as Basic auth.
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    for request in receiver.received:
        assert (request.path, request.query, request.header("authorization")) == (
            "/hook/T0/B0/slacktoken",
            {"token": [token]},
            basic,
        )
        assert request.header("idempotency-key") == f"{failed.run_id}:failing"
    alert = receiver.received[-1].json()
    fields = {"text", "kind", "source", "run_id", "partition", "error", "run_url", "since", "failed_runs"}
    assert set(alert) == {*fields, "idempotency_key"}
    assert alert["idempotency_key"] == f"{failed.run_id}:failing"
    assert alert["text"].startswith("pullmode: acme_audit is failing") and "***" in alert["error"]
    assert _tags(harness.instance, failed.run_id)["pullmode/alerted"] == "failing"
    secrets = [user, password, token, "frag-c4n4ry", "slacktoken", SECRET]
    places = {"cursor and skip reason": "\n".join(seen), "payload": json.dumps(alert), "instance files": instance_files}
    assert "HTTP 500" in instance_files and STATE_KEY in instance_files  # the state, with the alert that waited
    for secret in secrets:
        for where, text in places.items():
            assert secret not in text, f"{secret!r} in the {where}"


def _tags(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return dict(run.tags)


# -- delivering is bounded, and an alert once taken is never sent again -----------------------------------


def test_an_evaluation_cut_short_before_its_cursor_is_saved_sends_nothing_again(
    instance: dg.DagsterInstance, hook: tuple[Hook, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, server = hook
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", server.url("/hook/T0/B0/slacktoken"))
    run_ids = failing_sources(instance, 3)
    evaluate(instance, AlertState(), Lines())  # delivered; then Dagster's timeout loses its state
    again = evaluate(instance, AlertState(), Lines())
    assert receiver.run_ids == run_ids and again.pending == []
    assert [_tags(instance, r)["pullmode/alerted"] for r in run_ids] == ["failing"] * 3


def test_delivering_stops_at_the_budget_and_the_rest_waits_unattempted(
    instance: dg.DagsterInstance, hook: tuple[Hook, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, server = hook
    receiver.advance = 9.0  # each POST takes 9 s of the evaluation's clock; the budget is 30 s
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", server.url("/hook/T0/B0/slacktoken"))
    monkeypatch.delenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS", raising=False)
    assert delivery_limits() == (30.0, 45.0)
    run_ids = failing_sources(instance, 6)
    lines = Lines()
    state = evaluate(instance, AlertState(), lines, clock=receiver.clock)
    assert receiver.run_ids == run_ids[:4]  # sent at 0, 9, 18 and 27 s
    assert [(p["alert"]["run_id"], p["attempts"]) for p in state.pending] == [(r, 0) for r in run_ids[4:]]
    assert "2 alert(s) left for the next evaluation: delivering took 30s already" in lines
    state = evaluate(instance, state, Lines(), clock=receiver.clock)
    assert receiver.run_ids == run_ids and state.pending == []


def test_a_blackholed_webhook_costs_at_most_the_window_and_the_rest_waits(
    instance: dg.DagsterInstance, hook: tuple[Hook, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, server = hook
    receiver.gate.clear()  # takes the request, never answers
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", server.url("/hook/T0/B0/slacktoken?token=qtoken-c4n4ry"))
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "4")  # start within 2 s, end by 3 s
    assert delivery_limits() == (2.0, 3.0)
    run_ids = failing_sources(instance, 4)
    lines = Lines()
    state = evaluate(instance, AlertState(), lines)
    # The first POST may take the whole window: it times out at 3 s, past the budget; the rest wait.
    assert [(p["alert"]["run_id"], p["attempts"], p.get("wait")) for p in state.pending] == [
        (run_ids[0], 1, 1),
        *[(r, 0, None) for r in run_ids[1:]],
    ]
    port = server.port
    assert lines[0] == (
        f"alert source_1 failing (run {run_ids[0][:8]}) may have been delivered (the POST: timed out (the whole "
        f"request took longer than 3s) from http://127.0.0.1:{port}, gave up after 1 attempts); sending it again, "
        "with the same idempotency key, after 1 evaluation(s)"
    )
    assert lines[1] == "3 alert(s) left for the next evaluation: delivering took 2s already"
    assert not any("c4n4ry" in line or "slacktoken" in line for line in lines)


def test_a_receiver_that_never_answers_in_time_gets_at_most_three_copies_with_one_key(
    instance: dg.DagsterInstance, hook: tuple[Hook, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each copy went out whole and got no answer within the time allowed: the receiver may have
    taken it. Sent again after 1, then 3 evaluations, three copies in all, each with the same key
    (header and field); then dropped, said in the log. A receiver that drops repeated keys sees one."""
    receiver, server = hook
    receiver.gate.clear()  # reads each request, never answers
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", server.url("/hook/T0/B0/slacktoken"))
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "2")  # a POST gets 1.5 s
    (run_id,) = failed_runs(instance, 1)
    state, sent_at, lines = AlertState(), [], Lines()
    for evaluation in range(1, 11):
        before = len(receiver.received)
        state = evaluate(instance, state, lines)
        sent_at += [evaluation] * (len(receiver.received) - before)
    assert sent_at == [1, 3, 7] and state.pending == []
    key = f"{run_id}:failing"
    assert [(r.header("idempotency-key"), r.json()["idempotency_key"]) for r in receiver.received] == [(key, key)] * 3
    assert lines[-1].startswith(
        f"alert acme_audit failing (run {run_id[:8]}) not sent again: 3 copies went out without an answer "
        "(the POST: timed out"
    )
    assert f"the webhook may have taken them (idempotency key {key}): pullmode: acme_audit is failing" in lines[-1]
    assert "pullmode/alerted" not in _tags(instance, run_id)


def test_a_receiver_slower_than_a_quarter_of_the_sensor_timeout_gets_the_alert_once(
    instance: dg.DagsterInstance, hook: tuple[Hook, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sensor timeout at 8 s: a POST may take up to 6 s (it took at most 2 s, and a receiver taking
    3 s got every alert on every evaluation)."""
    receiver, server = hook
    receiver.gate.clear()
    receiver.delay = 3.0  # answers 200 after 3 s
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", server.url("/hook/T0/B0/slacktoken"))
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "8")
    assert delivery_limits() == (4.0, 6.0)
    (run_id,) = failed_runs(instance, 1)
    state = evaluate(instance, AlertState(), Lines())
    state = evaluate(instance, state, Lines())
    assert receiver.run_ids == [run_id] and state.pending == []
    assert _tags(instance, run_id)["pullmode/alerted"] == "failing"


# -- under the real dagster-daemon ---------------------------------------------------------------------


def _materialized_long_ago(instance: dg.DagsterInstance, key: dg.AssetKey, hours: float) -> None:
    """A quiet poll's runless materialization recorded ``hours`` ago: the freshness daemon then finds the
    asset past its fail window (15 minutes on a one-minute cron) without the test waiting that long."""
    from dagster._core.events import StepMaterializationData

    event = dg.DagsterEvent(
        dg.DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="",
        event_specific_data=StepMaterializationData(dg.AssetMaterialization(key, partition="2026-03-01")),
    )
    instance.report_dagster_event(event, run_id="", timestamp=time.time() - hours * 3600)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_under_the_daemon_a_source_failing_then_recovering_sends_each_change_once(
    home: Path, sources: SourceWriter, api: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dagster-daemon run``: the poller (every minute) pulls a source whose token is revoked, run after
    run; the freshness daemon finds it stale. The webhook gets one ``failing`` and one ``stale``, not one
    alert a minute. The token fixed, the next pull succeeds: one ``recovered`` and one ``fresh``. Each
    tick's skip reason says what it sent."""
    monkeypatch.setenv("ACME_AUDIT_TOKEN", SECRET)
    api.routes["/v1/events"] = revoked
    sources.write(http_source(api.url("/v1/events"), schedule="* * * * *"))
    instance = dg.DagsterInstance.get()
    _materialized_long_ago(instance, KEY, hours=2)
    receiver = Receiver()
    with LoopbackServer({"/hook": receiver}) as server:
        env = {"PULLMODE_ALERT_WEBHOOK_URL": server.url("/hook"), "FRESHNESS_DAEMON_INTERVAL_SECONDS": "2"}
        with running_daemon(tmp_path, env, lambda: f"alerts {receiver.kinds}") as (_, output):

            def wait_for(*kinds: str) -> None:
                ends = time.monotonic() + 130  # a poller tick a minute, an alert tick every 30 s
                while not set(kinds) <= set(receiver.kinds):
                    output.next_line(max(0.0, ends - time.monotonic()), expecting=f"alerts {kinds}")

            wait_for("failing", "stale")
            api.routes["/v1/events"] = CursorFeed(make_events(3))
            wait_for("recovered", "fresh")
            # One more alert tick: nothing is sent again.
            last = f"Sensor {SENSOR_NAME} skipped: no change"
            ends = time.monotonic() + 60
            while not output.next_line(max(0.0, ends - time.monotonic()), expecting=last).endswith(last):
                pass
    assert sorted(receiver.kinds) == ["failing", "fresh", "recovered", "stale"], receiver.kinds
    assert receiver.kinds.index("failing") < receiver.kinds.index("recovered")
    assert receiver.kinds.index("stale") < receiver.kinds.index("fresh")
    by_kind = {a["kind"]: a for a in receiver.alerts}
    failed = instance.get_runs(
        filters=dg.RunsFilter(tags={"pullmode/source": "acme_audit"}, statuses=[dg.DagsterRunStatus.FAILURE])
    )
    assert by_kind["failing"]["run_id"] == failed[-1].run_id  # the first failed run
    assert by_kind["recovered"]["failed_runs"] == len(failed) and by_kind["recovered"]["run_id"] not in {
        r.run_id for r in failed
    }
    sent = [line for line in output.seen if f"Sensor {SENSOR_NAME} skipped: sent: " in line]
    assert any(f"acme_audit failing (run {failed[-1].run_id[:8]})" in line for line in sent), sent
    assert any("acme_audit recovered (run " in line for line in sent), sent
    assert SECRET not in json.dumps(receiver.alerts) and not any(SECRET in line for line in output.seen)
