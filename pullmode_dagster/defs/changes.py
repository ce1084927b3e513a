"""What ``pullmode_failure_alerts`` alerts on: a source's changes of state, not every failed run.

Per source, an *incident* opens with its first failed pull (one ``failing`` alert), sends a
``still_failing`` reminder at most every ``$PULLMODE_ALERT_REMINDER_SECONDS`` while pulls keep failing,
and closes with one ``recovered`` when a run of the source succeeds or a quiet poll finds it answering.
Its freshness turning FAIL (``stale``) and back (``fresh``), and each ERROR check turning failed
(``check_failing``) and passing again (``check_passing``), alert once per change.

The state (the event log position, each source's incident, freshness and failing checks, the alerts
still to deliver) is kept in the instance's key-value store, where no reset of the sensor's cursor
reaches; the alerts that belong to a run are also recorded on it (``pullmode/alerted``).
Design: docs/design/monitoring.md#alerts
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from . import instance_api
from .assets import KEY_PREFIX, asset_key
from .names import ALERTED_TAG, SOURCE_TAG
from .sensors import QUIET_POLL

REMINDER_ENV = "PULLMODE_ALERT_REMINDER_SECONDS"
DEFAULT_REMINDER = timedelta(hours=1)
"""A source failing on a one-minute cron fails 60 times an hour: one reminder an hour keeps the open
incident in view of whoever watches the channel without teaching them to mute it."""
UI_ENV = "PULLMODE_UI_BASE_URL"
DEFAULT_UI = "http://127.0.0.1:3000"
STATE_KEY = "pullmode_failure_alerts/state"
"""Where the state lives in the instance's key-value store (one per instance, whatever the code
location is called)."""
BATCH = 100
"""Run status events of each kind read per evaluation (more wait for the next)."""
LEGACY_FAILING = "run_failure"
"""What the tag said of a failed run alerted before alerts were sent on change: its ``failing``."""


def ui_base() -> str:
    return (os.environ.get(UI_ENV) or DEFAULT_UI).rstrip("/")


def reminder_interval() -> tuple[timedelta | None, str | None]:
    """How often an open incident reminds (None: never, ``0``), and what is wrong with the setting
    (then the default applies)."""
    text = os.environ.get(REMINDER_ENV, "").strip()
    if not text:
        return DEFAULT_REMINDER, None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        return DEFAULT_REMINDER, f"${REMINDER_ENV} must be a number of seconds, 0 or more; using 3600"
    return (timedelta(seconds=seconds) if seconds else None), None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class Incident:
    """A source's pulls failing, from its first failed run until one succeeds."""

    run_id: str
    """The first failed run: the incident's alerts are recorded on it and keyed by it."""
    since: float
    """When that run failed (its event's timestamp)."""
    last_failure: int
    """The storage id of the latest failure: a quiet poll recorded after it closes the incident."""
    reminded_at: str
    """When the last ``failing`` or ``still_failing`` alert was queued (the sensor's clock, ISO)."""
    failures: int = 1


@dataclass
class SourceState:
    incident: Incident | None = None
    stale: float | None = None
    """The freshness FAIL alerted (its state change's timestamp); None while fresh."""
    checks: dict[str, str] = field(default_factory=dict)
    """ERROR checks alerted as failing: check name -> the run of that evaluation."""

    def empty(self) -> bool:
        return self.incident is None and self.stale is None and not self.checks


@dataclass
class AlertState:
    """The alert sensor's state: saved in the instance (``StateStore``), its copy in the cursor."""

    seen: int | None = None
    """The event log's storage id up to which run status changes were read."""
    sources: dict[str, SourceState] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Alerts not delivered yet: ``{"alert": {...}, "run": ..., "id": ..., "attempts": n}``."""
    sent: list[str] = field(default_factory=list)
    """What this evaluation delivered (or logged, without a webhook), for its skip reason; not saved."""
    problems: list[str] = field(default_factory=list)
    """Settings that are unusable, for the skip reason (read again each time; not saved)."""

    def source(self, name: str) -> SourceState:
        return self.sources.setdefault(name, SourceState())

    @classmethod
    def from_json(cls, text: str | None) -> AlertState:
        if not text:
            return cls()
        doc = json.loads(text)
        if "runs" in doc or "succeeded" in doc:  # the cursor from before alerts were sent on change
            # -1: no event of that kind existed then, so any now is past the other kind's position.
            positions = [_legacy_position(doc.get(k)) for k in ("runs", "succeeded")]
            known = [p for p in positions if p is not None and p >= 0]
            return cls(seen=min(known) if known else None, pending=[_legacy_item(p) for p in doc.get("pending", [])])
        sources = {}
        for name, value in (doc.get("sources") or {}).items():
            incident = value.get("incident")
            sources[name] = SourceState(
                incident=Incident(**incident) if incident else None,
                stale=value.get("stale"),
                checks=dict(value.get("checks") or {}),
            )
        return cls(seen=doc.get("seen"), sources=sources, pending=list(doc.get("pending", [])))

    def to_json(self) -> str:
        sources = {n: asdict(s) for n, s in sorted(self.sources.items()) if not s.empty()}
        doc = {"seen": self.seen, "sources": sources, "pending": self.pending}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _legacy_position(cursor: object) -> int | None:
    """The storage id in an event log cursor of the old state (base64 JSON, Dagster's format)."""
    if not isinstance(cursor, str):
        return None
    try:
        value = json.loads(base64.b64decode(cursor))["value"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def _legacy_item(item: dict[str, Any]) -> dict[str, Any]:
    """A pending alert of the old state, delivered under the key and tag it had."""
    alert = item["alert"]
    if alert.get("kind") == "check_failure":
        ident = f"check:{alert['source']}:{alert['check']}:{alert.get('partition') or ''}"
    else:
        ident = LEGACY_FAILING
    return {**item, "run": alert.get("run_id"), "id": ident}


class StateStore:
    """The state in the instance's key-value store (Dagster's daemons keep their own cursors there):
    it survives a daemon restart, and no reset or rename that empties the sensor's cursor reaches it."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance

    def read(self) -> str | None:
        return instance_api.read_value(self.instance, STATE_KEY)

    def save(self, state: AlertState) -> None:
        instance_api.write_value(self.instance, STATE_KEY, state.to_json())


# -- the ledger on the runs ----------------------------------------------------------------------------


def _alerted(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    run = instance.get_run_by_id(run_id)
    tag = run.tags.get(ALERTED_TAG, "") if run else ""
    return [part for part in tag.split(",") if part]


def was_sent(instance: dg.DagsterInstance, item: dict[str, Any]) -> bool:
    """Recorded on its run as delivered (alerts about no run have the saved state as their record)."""
    if not item.get("run"):
        return False
    done = _alerted(instance, item["run"])
    return item["id"] in done or (item["id"] == "failing" and LEGACY_FAILING in done)


def mark_sent(instance: dg.DagsterInstance, item: dict[str, Any]) -> None:
    """Recorded on the run the moment the receiver took the alert, before any state is saved."""
    run_id = item.get("run")
    if not run_id or instance.get_run_by_id(run_id) is None:
        return
    done = _alerted(instance, run_id)
    if item["id"] not in done:
        instance_api.add_run_tags(instance, run_id, {ALERTED_TAG: ",".join([*done, item["id"]])})


def idempotency_key(item: dict[str, Any]) -> str:
    """The same for every copy of one alert, and different for any other."""
    return f"{item.get('run') or item['alert']['source']}:{item['id']}"


LABELS = {
    "failing": "failing",
    "still_failing": "still failing",
    "recovered": "recovered",
    "stale": "stale",
    "fresh": "fresh again",
    "check_failing": "check {check} failing",
    "check_passing": "check {check} passing again",
    "run_failure": "failing",
    "check_failure": "check {check} failing",
}


def describe(alert: dict[str, Any]) -> str:
    """One alert in a few words, for the tick's skip reason and log: ``acme_audit failing (run 8f606570)``."""
    label = LABELS.get(alert.get("kind", ""), alert.get("kind", "alert")).format(check=alert.get("check"))
    run_id = alert.get("run_id")
    how = f" (run {run_id[:8]})" if run_id else " (quiet poll)" if alert.get("kind") == "recovered" else ""
    return f"{alert['source']} {label}{how}"


# -- reading what changed ------------------------------------------------------------------------------


class SourceKeys:
    """Each source's asset key (a translator may change them), both ways; a key not in the map is
    read by the default shape ``ingestion/<name>``."""

    def __init__(self, keys: Mapping[str, dg.AssetKey] | None = None):
        self._keys = dict(keys or {})
        self._sources = {key: name for name, key in self._keys.items()}

    def key(self, source: str) -> dg.AssetKey:
        return self._keys.get(source) or asset_key(source)

    def source(self, key: dg.AssetKey) -> str | None:
        if key in self._sources:
            return self._sources[key]
        return key.path[1] if len(key.path) == 2 and key.path[0] == KEY_PREFIX else None


def _source_of(run: dg.DagsterRun, keys: SourceKeys) -> str | None:
    """The source a run pulled (poll runs and ``pullmode pull`` carry the tag; a materialization or
    backfill from the UI names the asset); None for a run that only ran checks, or another job."""
    selection = run.asset_selection or frozenset()
    source = run.tags.get(SOURCE_TAG)
    for key in selection if source is None else ():
        source = keys.source(key) or source
    if source is None or (selection and keys.key(source) not in selection):
        return None
    # No asset selected (a whole job's run may say so too) but checks are: the checks alone, no pull.
    return None if not selection and run.asset_check_selection else source


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The step's failure description (the pull's own one-line, redacted error), else why its
    resources did not start (a run refused for changing them: defs/resources.py), else the run's."""
    steps = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.STEP_FAILURE)
    for record in steps:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data if event else None
        if data and data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description
        if data and data.error:
            return (data.error.message or "").strip().splitlines()[0]
    inits = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.RESOURCE_INIT_FAILURE)
    for record in inits:
        event = record.event_log_entry.dagster_event
        error = event.engine_event_data.error if event else None
        if error and error.message.strip():
            return error.message.strip().splitlines()[0]
    runs = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.RUN_FAILURE)
    return runs[0].event_log_entry.message if runs else "the run failed"


def _payload(kind: str, source: str, text: str, run_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """The Slack-compatible ``text`` and the same fields in every alert (None where they do not apply)."""
    url = f"{ui_base()}/runs/{run_id}" if run_id else None
    link = f" <{url}|run {run_id[:8]}>" if run_id else ""
    alert = {"text": f"pullmode: {source} {text}{link}", "kind": kind, "source": source, "run_id": run_id}
    return {**alert, "partition": None, "error": None, "run_url": url, **fields}


def _asset_link(key: dg.AssetKey) -> tuple[str, str]:
    path = "/".join(key.path)
    url = f"{ui_base()}/assets/{path}"
    return url, f"<{url}|{path}>"


class Detector:
    """One evaluation's reading of the event log: the alerts each change queues, in ``state``."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        state: AlertState,
        now: datetime,
        remind: timedelta | None,
        keys: SourceKeys | None = None,
    ):
        self.keys = keys or SourceKeys()
        self.instance = instance
        self.state = state
        self.now = now
        self.remind = remind
        self._keys = {idempotency_key(item) for item in state.pending}

    def queue(self, alert: dict[str, Any], ident: str, run: str | None) -> None:
        item = {"alert": alert, "run": run, "id": ident, "attempts": 0}
        if idempotency_key(item) not in self._keys:
            self._keys.add(idempotency_key(item))
            self.state.pending.append(item)

    def read(self, sources: Sequence[str]) -> None:
        """Run status changes up to the log's newest event now (failures and successes in their order),
        then quiet polls for the open incidents, then freshness of ``sources``."""
        upto = instance_api.newest_event_id(self.instance)
        if upto is None:
            return
        kinds = (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_SUCCESS)
        batches = [self._status_changes(kind, upto) for kind in kinds]
        # A full batch ends where that kind was read to: nothing of the other kind is taken past it.
        bound = min([upto, *(b.records[-1].storage_id for b in batches if b.has_more)])
        records = sorted((r for b in batches for r in b.records if r.storage_id <= bound), key=lambda r: r.storage_id)
        for record in records:
            self._run_ended(record)
        self.state.seen = bound
        for name, health in self.state.sources.items():
            if health.incident is not None:
                self._quiet_poll(name, health, bound)
        self._freshness(sources)

    def _status_changes(self, kind: Any, upto: int) -> dg.EventRecordsResult:
        records_filter = dg.RunStatusChangeRecordsFilter(
            event_type=kind, after_storage_id=self.state.seen, before_storage_id=upto + 1
        )
        return self.instance.fetch_run_status_changes(records_filter, limit=BATCH, ascending=True)

    def _run_ended(self, record: dg.EventLogRecord) -> None:
        run = self.instance.get_run_by_id(record.event_log_entry.run_id)
        if run is None:
            return
        self._checks(run)
        source = _source_of(run, self.keys)
        if source is None:
            return
        if record.event_log_entry.dagster_event_type == dg.DagsterEventType.RUN_FAILURE:
            self._failed(source, run, record)
        else:
            self._healthy(source, run, None)

    def _failed(self, source: str, run: dg.DagsterRun, record: dg.EventLogRecord) -> None:
        health = self.state.source(source)
        incident = health.incident
        partition = run.tags.get("dagster/partition")
        where = f" (partition {partition})" if partition else ""
        error = _failure_message(self.instance, run.run_id)
        fields = {"partition": partition, "error": error}
        if incident is None:
            health.incident = Incident(run.run_id, record.timestamp, record.storage_id, _iso(self.now))
            alert = _payload("failing", source, f"is failing{where}: {error}", run.run_id, **fields)
            self.queue({**alert, "since": _iso_ts(record.timestamp), "failed_runs": 1}, "failing", run.run_id)
            return
        incident.failures += 1
        incident.last_failure = record.storage_id
        if self.remind is None or self.now - datetime.fromisoformat(incident.reminded_at) < self.remind:
            return
        incident.reminded_at = _iso(self.now)
        text = f"still failing since {_when(incident.since)} ({incident.failures} failed runs); latest{where}: {error}"
        alert = _payload("still_failing", source, text, run.run_id, **fields)
        extra = {"since": _iso_ts(incident.since), "failed_runs": incident.failures}
        self.queue({**alert, **extra}, "still_failing", run.run_id)

    def _healthy(self, source: str, run: dg.DagsterRun | None, quiet: dg.EventLogRecord | None) -> None:
        health = self.state.sources.get(source)
        incident = health.incident if health else None
        if health is None or incident is None:
            return
        health.incident = None
        count = f"{incident.failures} failed run{'s' if incident.failures != 1 else ''} since {_when(incident.since)}"
        if run is not None:
            text, partition = f"recovered: a pull succeeded after {count}", run.tags.get("dagster/partition")
        else:
            assert quiet is not None
            text, partition = f"recovered: a quiet poll found it answering after {count}", quiet.partition_key
        alert = _payload("recovered", source, text, run.run_id if run else None, partition=partition)
        extra = {"since": _iso_ts(incident.since), "failed_runs": incident.failures}
        self.queue({**alert, **extra}, "recovered", incident.run_id)

    def _quiet_poll(self, source: str, health: SourceState, upto: int) -> None:
        """A quiet poll (the probe asked the source; nothing new) recorded after the last failure: the
        source answers again, which closes its incident as a successful run does."""
        assert health.incident is not None
        records_filter = dg.AssetRecordsFilter(
            asset_key=self.keys.key(source), after_storage_id=health.incident.last_failure, before_storage_id=upto + 1
        )
        for record in self.instance.fetch_materializations(records_filter, limit=BATCH, ascending=True).records:
            materialization = record.asset_materialization
            poll = materialization.metadata.get("poll") if materialization else None
            if not record.event_log_entry.run_id and poll is not None and poll.value == QUIET_POLL:
                self._healthy(source, None, record)
                return

    def _checks(self, run: dg.DagsterRun) -> None:
        """Each ERROR check of a source asset the run evaluated: an alert when it starts failing, and
        when it passes again."""
        records = instance_api.run_records_of_type(
            self.instance, run.run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
        for record in records:
            event = record.event_log_entry.dagster_event
            evaluation = event.asset_check_evaluation_data if event else None
            if evaluation is None or evaluation.severity != dg.AssetCheckSeverity.ERROR:
                continue
            source, name = self.keys.source(evaluation.asset_key), evaluation.check_name
            if source is None:
                continue
            health = self.state.source(source)
            fields = {"check": name, "partition": evaluation.partition}
            if not evaluation.passed and name not in health.checks:
                health.checks[name] = run.run_id
                description = evaluation.description or ""
                error = f"check {name} failed" + (f": {description}" if description else "")
                alert = _payload("check_failing", source, f"{error}", run.run_id, error=error, **fields)
                self.queue(alert, f"check_failing:{name}", run.run_id)
            elif evaluation.passed and name in health.checks:
                del health.checks[name]
                alert = _payload("check_passing", source, f"check {name} passes again", run.run_id, **fields)
                self.queue(alert, f"check_passing:{name}", run.run_id)

    def _freshness(self, sources: Sequence[str]) -> None:
        """Each source's freshness state as Dagster's freshness daemon last recorded it: an alert
        when it turns FAIL, and when it passes (or only warns) again."""
        if not sources:
            return
        records = instance_api.freshness_states(self.instance, [self.keys.key(s) for s in sources])
        for source in sources:
            record = records.get(self.keys.key(source))
            if record is None:
                continue
            health = self.state.source(source)
            changed = record.updated_at.timestamp()
            url, link = _asset_link(self.keys.key(source))
            if record.freshness_state == "FAIL" and health.stale != changed:
                health.stale = changed
                latest = self.instance.get_latest_materialization_event(self.keys.key(source))
                last = f"no pull has succeeded since {_when(latest.timestamp)}" if latest else "it was never pulled"
                text = f"is stale (its freshness policy failed): {last} {link}"
                self.queue(_payload("stale", source, text, asset_url=url), f"stale:{changed:.3f}", None)
            elif record.freshness_state in ("PASS", "WARN") and health.stale is not None:
                stale, health.stale = health.stale, None
                text = f"is fresh again (its freshness policy passes) {link}"
                self.queue(_payload("fresh", source, text, asset_url=url), f"fresh:{stale:.3f}", None)


def _iso_ts(timestamp: float) -> str:
    return _iso(datetime.fromtimestamp(timestamp, UTC))


def detect(
    instance: dg.DagsterInstance,
    state: AlertState,
    *,
    now: datetime,
    remind: timedelta | None,
    sources: Sequence[str] = (),
    keys: SourceKeys | None = None,
) -> AlertState:
    """``state`` moved on to what the event log and the freshness records say now, each change's alert
    queued in its ``pending`` (after those already waiting)."""
    detector = Detector(instance, AlertState.from_json(state.to_json()), now, remind, keys)
    detector.read(sources)
    return detector.state
