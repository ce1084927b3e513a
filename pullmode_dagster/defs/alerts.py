"""``pullmode_failure_alerts``: one alert for every failed run that touched a source asset, and for
every failed ERROR-severity check of one.

POSTed as JSON to ``$PULLMODE_ALERT_WEBHOOK_URL`` (logged only without it); each is sent once, retried
while the webhook is down. Design: docs/design/monitoring.md#alerts
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
import httpx

from ..engine.http import safe_url
from .assets import KEY_PREFIX, SOURCE_TAG

SENSOR_NAME = "pullmode_failure_alerts"
WEBHOOK_ENV = "PULLMODE_ALERT_WEBHOOK_URL"
UI_ENV = "PULLMODE_UI_BASE_URL"
DEFAULT_UI = "http://127.0.0.1:3000"
MAX_ATTEMPTS = 20
"""About ten minutes of retries at the sensor's 30-second interval."""
BATCH = 100


@dataclass
class AlertState:
    runs: str | None = None
    """Where reading RUN_FAILURE events resumes (the event log's own cursor)."""
    succeeded: str | None = None
    """Where reading RUN_SUCCESS events resumes (their check evaluations may have failed)."""
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Alerts not delivered yet: ``{"alert": {...}, "attempts": n}``."""

    @classmethod
    def from_json(cls, text: str | None) -> AlertState:
        if not text:
            return cls()
        doc = json.loads(text)
        return cls(runs=doc.get("runs"), succeeded=doc.get("succeeded"), pending=list(doc.get("pending", [])))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


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


def deliver(alert: dict[str, Any], url: str, *, transport: httpx.BaseTransport | None = None) -> str | None:
    """POST one alert; None when the receiver took it, else why not (no secret: the URL's host only)."""
    try:
        with httpx.Client(timeout=10.0, transport=transport) as client:
            response = client.post(url, json=alert)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__} from {safe_url(httpx.URL(url).copy_with(path='/'))}"
    if response.is_success:
        return None
    return f"HTTP {response.status_code} from {safe_url(httpx.URL(url).copy_with(path='/'))}"


def evaluate(instance: dg.DagsterInstance, state: AlertState, log: Any) -> AlertState:
    """Queue the failures that happened since the last evaluation, then try to deliver the queue."""
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
    webhook = os.environ.get(WEBHOOK_ENV)
    left: list[dict[str, Any]] = []
    for item in pending:
        alert = item["alert"]
        if not webhook:
            log.warning(alert["text"])
            continue
        problem = deliver(alert, webhook)
        if problem is None:
            log.info(f"alert sent for run {alert['run_id']}")
            continue
        attempts = item["attempts"] + 1
        if attempts >= MAX_ATTEMPTS:
            log.error(f"alert for run {alert['run_id']} dropped after {attempts} attempts ({problem}): {alert['text']}")
            continue
        log.warning(f"alert for run {alert['run_id']} not delivered ({problem}); trying again later")
        left.append({"alert": alert, "attempts": attempts})
    return AlertState(runs=failed.cursor or state.runs, succeeded=succeeded.cursor or state.succeeded, pending=left)


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
    return dg.SensorResult(cursor=state.to_json(), skip_reason=f"no new failure{waiting}")
