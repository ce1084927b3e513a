"""``pullmode_failure_alerts``: one alert for every failed run that touched a source asset, and for
every failed ERROR-severity check of one.

POSTed as JSON to ``$PULLMODE_ALERT_WEBHOOK_URL`` (logged only without it); each is sent once, retried
while the webhook is down. One evaluation delivers for a bounded time (well under Dagster's sensor
timeout) and marks each run it alerted for with a run tag at once, so an evaluation cut short never
sends an alert again. A request that went out and got no answer may have been taken: it is sent again
only after a backoff, at most :data:`MAX_UNANSWERED` times in all, always with the same idempotency key.
Design: docs/design/monitoring.md#alerts
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
import httpx

from ..engine.errors import PullError
from ..engine.http import HttpSession, RetryPolicy, safe_url
from ..engine.redaction import Redactor
from ..engine.sources import load_sources
from . import outgoing
from .assets import KEY_PREFIX, SOURCE_TAG
from .sensor_state import sensor_timeout_seconds

SENSOR_NAME = "pullmode_failure_alerts"
WEBHOOK_ENV = "PULLMODE_ALERT_WEBHOOK_URL"
UI_ENV = "PULLMODE_UI_BASE_URL"
DEFAULT_UI = "http://127.0.0.1:3000"
MAX_ATTEMPTS = 20
"""About ten minutes of retries at the sensor's 30-second interval."""
BATCH = 100
BUDGET_SECONDS = 30.0
"""No delivery starts later than this into an evaluation (nor later than half of Dagster's sensor timeout)."""
WINDOW_SECONDS = 45.0
"""Every delivery of an evaluation ends this long into it (or at three quarters of Dagster's sensor
timeout): a POST, answer included, may take all that is left, so never less than a quarter of it."""
MAX_UNANSWERED = 3
"""Copies of one alert sent at most when no answer came back in time (the receiver may have taken each)."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
ALERTED_TAG = "pullmode/alerted"
"""On a run: the alerts delivered for it (``run_failure``, ``check:<source>:<check>:<partition>``)."""


class WebhookUrlError(ValueError):
    """``$PULLMODE_ALERT_WEBHOOK_URL`` is not a URL alerts can be POSTed to (the message never quotes it)."""


@dataclass(frozen=True)
class Webhook:
    """The validated webhook: where to POST, how to show it, and what in it is secret."""

    url: str
    """Without its user info (sent as Basic auth instead, so no message can quote it)."""
    origin: str
    """All a message shows: scheme, host and port (a Slack webhook's path is its token)."""
    auth: httpx.BasicAuth | None
    redact: Redactor
    """Replaces the URL's user name, password, query and fragment, in every spelling."""

    @classmethod
    def from_env(cls) -> Webhook | None:
        """The configured webhook, None when unset or blank; :class:`WebhookUrlError` when unusable."""
        text = os.environ.get(WEBHOOK_ENV, "")
        # A value pasted from a secret file ends with a newline: surrounding whitespace is never part
        # of a URL, so it is dropped rather than refused; whitespace inside is refused below.
        return cls.parse(text.strip()) if text.strip() else None

    @classmethod
    def parse(cls, text: str) -> Webhook:
        what = f"${WEBHOOK_ENV} is not a usable webhook URL"
        inside = next((i for i, c in enumerate(text) if c.isspace() or not c.isprintable()), None)
        if inside is not None:
            raise WebhookUrlError(f"{what}: it holds whitespace or a control character at position {inside + 1}")
        if not text.lower().startswith(("http://", "https://")):
            raise WebhookUrlError(f"{what}: it must start with http:// or https://")
        problem = _authority_problem(text)
        if problem:
            raise WebhookUrlError(f"{what}: {problem}")
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL:
            raise WebhookUrlError(f"{what}: it does not parse as a URL") from None
        if not url.host:
            raise WebhookUrlError(f"{what}: it has no host")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise WebhookUrlError(f"{what}: its port must be from 1 to 65535")
        query = url.query.decode("ascii", "replace")
        values = [v for _, v in urllib.parse.parse_qsl(query, keep_blank_values=True)]
        secrets = [url.username, url.password, query, urllib.parse.unquote_plus(query), url.fragment, *values]
        port = f":{url.port}" if url.port is not None else ""
        return cls(
            url=str(url.copy_with(username=None, password=None)),
            origin=f"{url.scheme}://{f'[{url.host}]' if ':' in url.host else url.host}{port}",
            auth=httpx.BasicAuth(url.username, url.password) if url.userinfo else None,
            redact=Redactor(secrets),
        )


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")


def _authority_problem(text: str) -> str | None:
    """What is wrong with the URL's host and port as written (None: nothing). URL parsers are lenient
    (``+80`` or other scripts' digits as a port, ``%68`` as a host); a URL that only fails at delivery
    would fail on every evaluation, so it is refused here, once, clearly."""
    try:
        hostport = urllib.parse.urlsplit(text).netloc.rpartition("@")[2]
    except ValueError:  # a bracketed host that is no IP address
        return "its host is not a valid IPv6 address"
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "its host is not a valid IPv6 address"
    else:
        host, _, port = hostport.partition(":")
        if not host:
            return "it has no host"
        if not _HOST_NAME.fullmatch(host):
            return "its host must be a DNS name (ASCII letters, digits, '-' and '.'; IDNA for others) or an IP address"
        if host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return "its host is not a valid IPv4 address"
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return "its port must be a number from 1 to 65535"
    return None


def delivery_limits() -> tuple[float, float]:
    """(budget, window) in seconds from the first delivery: none starts after the budget and all end by
    the window, well inside Dagster's sensor timeout, past which the tick fails and its cursor is lost.
    A POST may use all the window has left: the slower the receiver, the fewer duplicates."""
    limit = sensor_timeout_seconds()
    return min(BUDGET_SECONDS, limit / 2), min(WINDOW_SECONDS, limit * 3 / 4)


@dataclass
class AlertState:
    runs: str | None = None
    """Where reading RUN_FAILURE events resumes (the event log's own cursor)."""
    succeeded: str | None = None
    """Where reading RUN_SUCCESS events resumes (their check evaluations may have failed)."""
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Alerts not delivered yet: ``{"alert": {...}, "attempts": n}``."""
    webhook_problem: str | None = None
    """Why the webhook URL is unusable, for the skip reason (not saved: it is read again each time)."""

    @classmethod
    def from_json(cls, text: str | None) -> AlertState:
        if not text:
            return cls()
        doc = json.loads(text)
        return cls(runs=doc.get("runs"), succeeded=doc.get("succeeded"), pending=list(doc.get("pending", [])))

    def to_json(self) -> str:
        doc = {k: v for k, v in asdict(self).items() if k != "webhook_problem"}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def ui_base() -> str:
    return (os.environ.get(UI_ENV) or DEFAULT_UI).rstrip("/")


def _source_of(run: dg.DagsterRun) -> str | None:
    """The source a run pulled (poll runs and `pullmode pull` carry the tag; a materialization or
    backfill from the UI names the asset)."""
    if run.tags.get(SOURCE_TAG):
        return run.tags[SOURCE_TAG]
    for key in run.asset_selection or ():
        if len(key.path) == 2 and key.path[0] == KEY_PREFIX:
            return key.path[1]
    return None


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The step's failure description (the pull's own one-line, redacted error), else the run's."""
    steps = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in steps:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data if event else None
        if data and data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description
        if data and data.error:
            return (data.error.message or "").strip().splitlines()[0]
    runs = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return runs[0].event_log_entry.message if runs else "the run failed"


def run_alert(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any] | None:
    run = instance.get_run_by_id(run_id)
    source = _source_of(run) if run else None
    if run is None or source is None:
        return None
    partition = run.tags.get("dagster/partition")
    error = _failure_message(instance, run_id)
    url = f"{ui_base()}/runs/{run_id}"
    where = f" (partition {partition})" if partition else ""
    return {
        "text": f"pullmode: pull of {source} failed{where}: {error} <{url}|run {run_id[:8]}>",
        "kind": "run_failure",
        "source": source,
        "run_id": run_id,
        "partition": partition,
        "error": error,
        "run_url": url,
    }


def check_alert(record: dg.EventLogRecord) -> dict[str, Any] | None:
    event = record.event_log_entry.dagster_event
    evaluation = event.asset_check_evaluation_data if event else None
    if evaluation is None or evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
        return None
    key = evaluation.asset_key
    if len(key.path) != 2 or key.path[0] != KEY_PREFIX:
        return None
    run_id = record.event_log_entry.run_id
    url = f"{ui_base()}/runs/{run_id}"
    description = evaluation.description or ""
    error = f"check {evaluation.check_name} failed" + (f": {description}" if description else "")
    return {
        "text": f"pullmode: {key.path[1]}: {error} <{url}|run {run_id[:8]}>",
        "kind": "check_failure",
        "source": key.path[1],
        "check": evaluation.check_name,
        "run_id": run_id,
        "partition": evaluation.partition,
        "error": error,
        "run_url": url,
    }


def alert_id(alert: dict[str, Any]) -> str:
    """What one alert is about, within its run."""
    if alert["kind"] == "run_failure":
        return "run_failure"
    return f"check:{alert['source']}:{alert['check']}:{alert.get('partition') or ''}"


def _alerted(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    run = instance.get_run_by_id(run_id)
    tag = run.tags.get(ALERTED_TAG, "") if run else ""
    return [part for part in tag.split(",") if part]


def was_sent(instance: dg.DagsterInstance, alert: dict[str, Any]) -> bool:
    return alert_id(alert) in _alerted(instance, alert["run_id"])


def mark_sent(instance: dg.DagsterInstance, alert: dict[str, Any]) -> None:
    """Recorded on the run the moment the receiver took the alert: the sensor's cursor is saved only
    when the evaluation ends, and one cut short by Dagster's timeout would otherwise send it again."""
    done = _alerted(instance, alert["run_id"])
    if instance.get_run_by_id(alert["run_id"]) is not None and alert_id(alert) not in done:
        instance.add_run_tags(alert["run_id"], {ALERTED_TAG: ",".join([*done, alert_id(alert)])})


def idempotency_key(alert: dict[str, Any]) -> str:
    """The same for every copy of one alert, and different for any other: the run, and what about it."""
    return f"{alert['run_id']}:{alert_id(alert)}"


class _BodyWatch(httpx.BaseTransport):
    """httpx's transport, noting whether the request's body was all written to the connection: a
    request that then got no answer may have been taken by the receiver (it cannot be known)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.body_sent = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.body_sent = False
        request.stream = _Written(request.stream, self)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class _Written(httpx.SyncByteStream):
    """A request body that tells its watch once its last chunk was written (the connection asks for the
    next chunk only after writing one)."""

    def __init__(self, stream: Any, watch: _BodyWatch):
        self._stream = stream
        self._watch = watch

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream
        self._watch.body_sent = True


@dataclass(frozen=True)
class Delivery:
    """How one POST ended: ``problem`` is None when the receiver took the alert; ``unanswered`` when the
    alert went out and no answer came back (a timeout, a connection lost), so it may have been taken."""

    problem: str | None
    unanswered: bool = False


def deliver(alert: dict[str, Any], hook: Webhook, *, timeout: float, log: Any, clock: Callable[[], float]) -> Delivery:
    """POST one alert with its idempotency key (a header, and a field of the JSON), answer included
    within ``timeout``; a problem shows the webhook's origin only."""
    watch = _BodyWatch()
    key = idempotency_key(alert)
    session = HttpSession(
        timeout=timeout,
        retry=RetryPolicy(max_attempts=1, retry_statuses=frozenset()),
        auth=hook.auth,
        redactor=hook.redact,
        transport=watch,
        clock=clock,
        logger=log,
    )
    try:
        with session:
            response = session.send(
                "POST",
                hook.url,
                what="the POST",
                headers={"Content-Type": "application/json", IDEMPOTENCY_HEADER: key},
                content=json.dumps({**alert, "idempotency_key": key}),
            )
    except PullError as exc:
        problem = hook.redact(str(exc).replace(hook.redact(safe_url(hook.url)), hook.origin))
        return Delivery(problem, unanswered=watch.body_sent)
    except Exception as exc:  # the sensor never fails on a delivery; a library's text may quote the URL
        return Delivery(f"{type(exc).__name__} from {hook.origin}", unanswered=watch.body_sent)
    if response.is_success:
        return Delivery(None)
    return Delivery(f"HTTP {response.status_code} from {hook.origin}")


def evaluate(
    instance: dg.DagsterInstance,
    state: AlertState,
    log: Any,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> AlertState:
    """Queue the failures that happened since the last evaluation, then deliver the queue for at most
    the budget. An invalid webhook URL counts as a failed delivery, so the alerts wait for a fix."""
    failed = instance.fetch_run_status_changes(
        dg.DagsterEventType.RUN_FAILURE, limit=BATCH, cursor=state.runs, ascending=True
    )
    succeeded = instance.fetch_run_status_changes(
        dg.DagsterEventType.RUN_SUCCESS, limit=BATCH, cursor=state.succeeded, ascending=True
    )
    pending = list(state.pending)
    queued = {p["alert"].get("run_id") for p in pending if p["alert"]["kind"] == "run_failure"}
    for record in failed.records:
        run_id = record.event_log_entry.run_id
        alert = run_alert(instance, run_id) if run_id not in queued else None
        if alert is not None:
            pending.append({"alert": alert, "attempts": 0})
            queued.add(run_id)
    for record in [*failed.records, *succeeded.records]:
        evaluations = instance.get_records_for_run(
            record.event_log_entry.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        for evaluation in evaluations:
            alert = check_alert(evaluation)
            if alert is not None:
                pending.append({"alert": alert, "attempts": 0})
    # A failure message is whatever the run recorded: redacted with its source's secrets before it is
    # sent, logged or saved in the cursor (and pending alerts saved before this rule, again).
    redactors = SourceRedactors()
    pending = [{**item, "alert": _redacted(item["alert"], redactors(item["alert"].get("source")))} for item in pending]
    after = AlertState(runs=failed.cursor or state.runs, succeeded=succeeded.cursor or state.succeeded)
    try:
        hook = Webhook.from_env()
    except WebhookUrlError as exc:
        log.error(str(exc))
        after.webhook_problem = unusable = str(exc)
        hook = None
    else:
        if hook is None:
            for item in pending:
                log.warning(item["alert"]["text"])
            return after
        pending = [{**item, "alert": _redacted(item["alert"], hook.redact)} for item in pending]
    budget, window = delivery_limits()
    started: float | None = None  # the first delivery: the budget and the window count from it
    for number, item in enumerate(pending):
        alert = item["alert"]
        if was_sent(instance, alert):
            continue  # sent by an evaluation that was cut short before it saved the cursor
        if item.get("wait"):  # backing off after a copy that got no answer
            after.pending.append({**item, "wait": item["wait"] - 1})
            continue
        now = clock()
        started = now if started is None else started
        if now - started >= budget:
            later = len(pending) - number
            log.warning(f"{later} alert(s) left for the next evaluation: delivering took {budget:g}s already")
            after.pending.extend(pending[number:])
            break
        if hook is None:
            outcome = Delivery(unusable)
        else:
            # All the window has left (never less than window - budget), in tenths: messages quote it.
            timeout = math.floor((started + window - now) * 10) / 10
            outcome = deliver(alert, hook, timeout=timeout, log=log, clock=clock)
        if outcome.problem is None:
            mark_sent(instance, alert)
            log.info(f"alert sent for run {alert['run_id']}")
            continue
        retry = _after_failure(item, outcome, log)
        if retry is not None:
            after.pending.append(retry)
    return after


def _after_failure(item: dict[str, Any], outcome: Delivery, log: Any) -> dict[str, Any] | None:
    """The pending item to try again (None: dropped, said in the log). A copy that got no answer may
    have been taken, so the next one waits 1, then 3 evaluations, and there are at most MAX_UNANSWERED."""
    alert, problem = item["alert"], outcome.problem
    run = alert["run_id"]
    attempts = item["attempts"] + 1
    unanswered = item.get("unanswered", 0) + outcome.unanswered
    if outcome.unanswered and unanswered >= MAX_UNANSWERED:
        log.error(
            f"alert for run {run} not sent again: {unanswered} copies went out without an answer ({problem}); "
            f"the webhook may have taken them (idempotency key {idempotency_key(alert)}): {alert['text']}"
        )
        return None
    if attempts >= MAX_ATTEMPTS:
        log.error(f"alert for run {run} dropped after {attempts} attempts ({problem}): {alert['text']}")
        return None
    retry = {"alert": alert, "attempts": attempts}
    if unanswered:
        retry["unanswered"] = unanswered
    if outcome.unanswered:
        retry["wait"] = 2**unanswered - 1
        log.warning(
            f"alert for run {run} may have been delivered ({problem}); sending it again, with the same "
            f"idempotency key, after {retry['wait']} evaluation(s)"
        )
    else:
        log.warning(f"alert for run {run} not delivered ({problem}); trying again later")
    return retry


class SourceRedactors:
    """Each source's redactor (``outgoing.secrets_for``), by name; the source files are read once, and
    only when an alert needs them. A source whose file is gone or invalid has none to apply."""

    def __init__(self) -> None:
        self._by_name: dict[str, Redactor] | None = None

    def __call__(self, name: object) -> Redactor:
        if self._by_name is None:
            loaded = load_sources().sources
            self._by_name = {n: outgoing.secrets_for(source).redact for n, source in loaded.items()}
        return self._by_name.get(name, Redactor()) if isinstance(name, str) else Redactor()


def _redacted(alert: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    """The alert with ``redact``'s secrets (its source's, the webhook's) replaced in every text."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in alert.items()} if redact else alert


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends one alert per failed pull (and failed ERROR check) of a source to "
    f"${WEBHOOK_ENV}; logs it when unset.",
)
def failure_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    state = evaluate(context.instance, AlertState.from_json(context.cursor), context.log)
    waiting = f"; {len(state.pending)} alert(s) waiting for the webhook" if state.pending else ""
    if state.webhook_problem:
        waiting += f" ({state.webhook_problem})"
    return dg.SensorResult(cursor=state.to_json(), skip_reason=f"no new failure{waiting}")
