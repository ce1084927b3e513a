"""pullmode_failure_alerts on a real instance: one alert per failed run that touched a source, at a
local receiver; a receiver that is down gets each alert once when it is back; failed checks too."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pullmode_dagster.defs.alerts import SENSOR_NAME, AlertState, delivery_limits, evaluate, failure_alerts
from pullmode_dagster.demo.server import LoopbackServer, Request, Response

from .conftest import SourceWriter, http_source
from .dagster_helpers import Clock, Harness, failed_runs, make_harness
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


def test_a_failure_message_holding_the_sources_secret_is_redacted_in_the_payload_and_the_cursor(
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
    cursor = alerts_tick(harness, None)
    (waiting,) = AlertState.from_json(cursor).pending
    assert waiting["alert"]["error"] == "the API said no to ***"
    receiver.down = False
    cursor = alerts_tick(harness, cursor)
    (alert,) = receiver.alerts
    assert alert["error"] == "the API said no to ***"
    assert alert["text"].startswith("pullmode: pull of acme_audit failed: the API said no to *** <")
    assert SECRET not in json.dumps(alert) + cursor


def failed_check(instance: dg.DagsterInstance) -> str:
    """A run of the source's asset whose ERROR check ``normalized_schema`` failed; its run id."""
    key = dg.AssetKey(["ingestion", "acme_audit"])

    @dg.asset(key=key, check_specs=[dg.AssetCheckSpec("normalized_schema", asset=key)])
    def corrupted() -> dg.MaterializeResult:
        return dg.MaterializeResult(
            check_results=[dg.AssetCheckResult(check_name="normalized_schema", passed=False, description="3 bad rows")]
        )

    return dg.materialize([corrupted], instance=instance).run_id


def test_a_failed_error_check_of_a_source_alerts(
    harness: Harness, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    failed_check(instance)
    alerts_tick(harness, None)
    (alert,) = receiver.alerts
    assert (alert["kind"], alert["source"], alert["check"]) == ("check_failure", "acme_audit", "normalized_schema")
    assert alert["error"] == "check normalized_schema failed: 3 bad rows"


def test_a_reset_of_the_alert_sensors_cursor_sends_no_alert_twice(
    harness: Harness, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    """The alert sensor's cursor lost (reset by hand, or read under another code location name, as
    `make dev` once did): the event log is read from its start again, and the ``pullmode/alerted`` tag
    each alerted run carries keeps what was sent from being sent again, while a new failure is."""
    failed = harness.run(harness.tick(None).run_requests[0])
    checked = failed_check(instance)
    alerts_tick(harness, None)
    sent = [(a["kind"], a["run_id"]) for a in receiver.alerts]
    assert sent == [("run_failure", failed.run_id), ("check_failure", checked)]
    alerts_tick(harness, None)  # reset
    assert [(a["kind"], a["run_id"]) for a in receiver.alerts] == sent
    (later,) = failed_runs(instance, 1)
    alerts_tick(harness, None)  # reset again, with a failure no alert was sent for
    assert [(a["kind"], a["run_id"]) for a in receiver.alerts] == [*sent, ("run_failure", later)]


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
    result = failure_alerts(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    problem = f"$PULLMODE_ALERT_WEBHOOK_URL is not a usable webhook URL: {why}"
    assert result.skip_reason is not None
    assert result.skip_reason.skip_message == f"no new failure; 1 alert(s) waiting for the webhook ({problem})"
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
    assert f"alert sent for run {failed.run_id}" in instance_files
    # The receiver got both requests at the full URL, the user info as Basic auth.
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    for request in receiver.received:
        assert (request.path, request.query, request.header("authorization")) == (
            "/hook/T0/B0/slacktoken",
            {"token": [token]},
            basic,
        )
        assert request.header("idempotency-key") == f"{failed.run_id}:run_failure"
    alert = receiver.received[-1].json()
    assert set(alert) == {"text", "kind", "source", "run_id", "partition", "error", "run_url", "idempotency_key"}
    assert alert["idempotency_key"] == f"{failed.run_id}:run_failure"
    assert alert["text"].startswith("pullmode: pull of acme_audit failed") and "***" in alert["error"]
    assert _tags(harness.instance, failed.run_id)["pullmode/alerted"] == "run_failure"
    secrets = [user, password, token, "frag-c4n4ry", "slacktoken", SECRET]
    places = {"cursor and skip reason": "\n".join(seen), "payload": json.dumps(alert), "instance files": instance_files}
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
    run_ids = failed_runs(instance, 3)
    evaluate(instance, AlertState(), Lines())  # delivered; then Dagster's timeout loses this cursor
    again = evaluate(instance, AlertState(), Lines())
    assert receiver.run_ids == run_ids and again.pending == []
    assert [_tags(instance, r)["pullmode/alerted"] for r in run_ids] == ["run_failure"] * 3


def test_delivering_stops_at_the_budget_and_the_rest_waits_unattempted(
    instance: dg.DagsterInstance, hook: tuple[Hook, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, server = hook
    receiver.advance = 9.0  # each POST takes 9 s of the evaluation's clock; the budget is 30 s
    monkeypatch.setenv("PULLMODE_ALERT_WEBHOOK_URL", server.url("/hook/T0/B0/slacktoken"))
    monkeypatch.delenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS", raising=False)
    assert delivery_limits() == (30.0, 45.0)
    run_ids = failed_runs(instance, 6)
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
    run_ids = failed_runs(instance, 4)
    lines = Lines()
    state = evaluate(instance, AlertState(), lines)
    # The first POST may take the whole window: it times out at 3 s, past the budget; the rest wait.
    assert [(p["alert"]["run_id"], p["attempts"], p.get("wait")) for p in state.pending] == [
        (run_ids[0], 1, 1),
        *[(r, 0, None) for r in run_ids[1:]],
    ]
    port = server.port
    assert lines[0] == (
        f"alert for run {run_ids[0]} may have been delivered (the POST: timed out (the whole request took longer "
        f"than 3s) from http://127.0.0.1:{port}, gave up after 1 attempts); sending it again, with the same "
        "idempotency key, after 1 evaluation(s)"
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
    key = f"{run_id}:run_failure"
    assert [(r.header("idempotency-key"), r.json()["idempotency_key"]) for r in receiver.received] == [(key, key)] * 3
    assert lines[-1].startswith(
        f"alert for run {run_id} not sent again: 3 copies went out without an answer (the POST: timed out"
    )
    assert f"the webhook may have taken them (idempotency key {key}): pullmode: pull of acme_audit failed" in lines[-1]
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
    assert _tags(instance, run_id)["pullmode/alerted"] == "run_failure"
