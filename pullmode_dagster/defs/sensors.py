"""The poller sensor: one per source, owning both the cron and the committed cursor.

Its cursor holds the committed pull cursor plus the pull in flight; the committed cursor moves only
when that run has succeeded (Dagster writes a sensor's cursor at launch, not at success).
Design (and the sensor cursor format): docs/design/poller.md#the-poller-sensor
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import dagster as dg
from croniter import croniter

from ..engine.cursor import CursorFormatError, CursorState, load_object
from ..engine.declare.models import SourceConfig
from ..engine.errors import PullmodeError
from ..engine.fetch.redaction import Redactor
from ..engine.probe import ProbeResult, probe_source
from . import instance_api, outgoing
from .assets import CHECKPOINT_KEY, PullConfig, partition_row_count
from .names import MAY_STILL_WRITE, MODE_TAG, PULL_ID_TAG, SOURCE_TAG, poller_name, pool_name
from .outgoing import CursorSeal
from .pools import ensure_pool_limits, run_pools
from .recovery import owner_is_dead, process_identity, reap_if_dead
from .resources import CredentialsResource, PullSettingsResource, TraceStoreResource

if TYPE_CHECKING:
    from dagster_aws.s3 import S3Resource  # imported only with an S3 source (test_lazy_imports.py)

INTERVAL_ENV = "PULLMODE_SENSOR_INTERVAL_SECONDS"
INTERVAL_SECONDS = int(os.environ.get(INTERVAL_ENV) or 30)
"""How often the daemon evaluates each poller and the alert sensor (Dagster's default). Measured at 55 s
too (``bench/daemon_bench.py``): 0.14 against 0.16 CPU-s per quiet poll, for a new event stored 47 s
after it appeared instead of 10 s; the shorter interval is worth its cost. ``INTERVAL_ENV`` is a test
hook, not a setting: the end-to-end tests under ``dagster-daemon`` and ``dagster dev`` set it to a few
seconds (the demo's automation sensor takes it too)."""
CLI_GRACE = timedelta(minutes=10)
"""A pull the CLI announced but whose run never appeared is forgotten after this long."""

Clock = Callable[[], datetime]
Prober = Callable[[CursorState], ProbeResult]
"""Asks the source whether anything is after a committed cursor (``engine/probe.py``)."""
QUIET_POLL = "quiet poll"


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(t: str) -> datetime:
    return datetime.fromisoformat(t).astimezone(UTC)


@dataclass(frozen=True)
class InFlight:
    pull_id: str
    tick: str
    requested_at: str
    partition_key: str
    cursor: str
    via: str = "sensor"
    owner: str | None = None
    """The process that announced the pull (``pullmode pull``): if it died before its run existed,
    the announcement is forgotten at once instead of after CLI_GRACE."""


STATE_FIELDS = ("committed", "in_flight", "last_tick", "last_pull", "more_to_pull", "probe_after")
DIGEST_FIELD = "committed_digest"


def committed_digest(committed: CursorState) -> str:
    """A fingerprint of the committed cursor as the poller wrote it: an edit of ``committed`` in the
    stored sensor cursor (the UI shows it whole) is how the poller tells a rewind by hand."""
    return hashlib.sha256(committed.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PollPlanState:
    """What the poller sensor keeps in its cursor."""

    committed: CursorState = field(default_factory=CursorState)
    in_flight: InFlight | None = None
    last_tick: str | None = None
    last_pull: dict[str, str] | None = None
    more_to_pull: bool = False
    """The last pull succeeded but stopped with more to pull (``maxPagesPerRun``, its deadline): the
    next evaluation pulls on without waiting for the cron, so a backlog drains at full speed."""
    probe_after: str | None = None
    """The source answered the probe with HTTP 429: the tick stays due, and nobody asks it again
    before this time (each question during a rate limit would prolong it)."""
    set_by_hand: bool = False
    """Read, never stored: the committed cursor was set since the poller last wrote it (``dagster
    sensor cursor --set``, the UI's "Set cursor value", ``pullmode rewind``): a bare cursor state, or
    a ``committed`` that no longer matches its ``committed_digest``."""

    @classmethod
    def from_json(cls, text: str | None) -> PollPlanState:
        doc = load_object(text, what="sensor cursor")
        if doc is None:
            return cls()
        if "committed" not in doc:
            # A bare cursor state: a data engineer rewinding (or fast-forwarding) the source.
            return cls(committed=CursorState.from_dict(doc), set_by_hand=True)
        unknown = set(doc) - {*STATE_FIELDS, DIGEST_FIELD}
        if unknown:
            raise CursorFormatError(f"unknown sensor cursor field(s): {', '.join(sorted(unknown))}")
        in_flight = doc.get("in_flight")
        try:
            flight = InFlight(**in_flight) if in_flight else None
        except TypeError as exc:
            raise CursorFormatError(f"sensor cursor in_flight is malformed: {exc}") from None
        committed = CursorState.from_dict(doc.get("committed") or {})
        digest = doc.get(DIGEST_FIELD)  # absent in cursors written before it existed: trusted
        return cls(
            committed=committed,
            in_flight=flight,
            last_tick=doc.get("last_tick"),
            last_pull=doc.get("last_pull"),
            more_to_pull=doc.get("more_to_pull") is True,
            probe_after=doc.get("probe_after"),
            set_by_hand=digest is not None and digest != committed_digest(committed),
        )

    def to_json(self) -> str:
        doc: dict[str, Any] = {"committed": self.committed.to_dict(), DIGEST_FIELD: committed_digest(self.committed)}
        if self.in_flight:
            doc["in_flight"] = asdict(self.in_flight)
        if self.last_tick:
            doc["last_tick"] = self.last_tick
        if self.last_pull:
            doc["last_pull"] = self.last_pull
        if self.more_to_pull:
            doc["more_to_pull"] = True
        if self.probe_after:
            doc["probe_after"] = self.probe_after
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class QuietPoll:
    """The probe found nothing new: no run; a runless materialization of ``partition_key`` records
    that the source was checked and is healthy (its history, freshness and the UI see it)."""

    partition_key: str
    probe: ProbeResult
    cursor: CursorState
    """The committed cursor, unchanged (sealed)."""
    checked_at: datetime
    """When the poller asked (its clock)."""
    row_count: int | None = None
    """The partition's stored events (``dagster/row_count``), when the store could tell."""

    def metadata(self) -> dict[str, object]:
        return {
            "events_written": 0,
            "cursor_after": dg.MetadataValue.json(self.cursor.to_dict()),
            "checked_at": _iso(self.checked_at),
            "probe_seconds": self.probe.seconds,
            "requests": self.probe.requests,
            "poll": QUIET_POLL,
        } | ({"dagster/row_count": self.row_count} if self.row_count is not None else {})

    def materialization(self, key: dg.AssetKey, redact: Any) -> dg.AssetMaterialization:
        return dg.AssetMaterialization(
            key, partition=self.partition_key, metadata=outgoing.metadata(self.metadata(), redact)
        )

    def line(self, source: str) -> str:
        return f"{source}: nothing new ({self.probe.describe()}); recorded a quiet poll"


@dataclass
class PollDecision:
    state: PollPlanState
    run_request: dg.RunRequest | None = None
    skip_reason: str | None = None
    log: list[str] = field(default_factory=list)
    quiet: QuietPoll | None = None
    redact: Redactor = field(default_factory=Redactor)
    """The evaluation's redactor (its secrets read once): what the quiet poll's record goes through."""


def latest_tick(schedule: str, now: datetime) -> datetime:
    """The most recent cron time at or before ``now`` (UTC)."""
    floor = now.astimezone(UTC).replace(second=0, microsecond=0)
    if croniter.match(schedule, floor) and floor == now:
        return floor
    return croniter(schedule, now.astimezone(UTC)).get_prev(datetime).astimezone(UTC)


def find_pull_run(instance: dg.DagsterInstance, pull_id: str) -> dg.DagsterRun | None:
    records = instance.get_run_records(filters=dg.RunsFilter(tags={PULL_ID_TAG: pull_id}), limit=1)
    return records[0].dagster_run if records else None


def run_metadata(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> dict[str, Any] | None:
    """The metadata of a run's materialization of ``key`` as plain values (None: none reported)."""
    records = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    found = None
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None and materialization.asset_key == key:
            found = {k: v.value for k, v in materialization.metadata.items()}
            if "cursor_after" in found:  # the run's own report; the others count a partition's events
                return found
    return found


def run_checkpoint(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> CursorState | None:
    """The last checkpoint a poll run recorded (None: it wrote nothing durable)."""
    latest = None
    records = instance_api.run_records_of_type(instance, run_id, dg.DagsterEventType.ASSET_OBSERVATION)
    for record in records:
        observation = record.event_log_entry.asset_observation
        if observation is not None and observation.asset_key == key and CHECKPOINT_KEY in observation.metadata:
            latest = observation.metadata[CHECKPOINT_KEY].value
    return CursorState.from_dict(latest) if latest is not None else None


class PollPlanner:
    """The decision a poller makes on each evaluation; shared by the sensor and ``pullmode pull``.

    It plans when and from which cursor to pull; the engine's :class:`~pullmode_dagster.Puller`
    does the pulling (hence the different name)."""

    def __init__(self, source: SourceConfig, asset: dg.AssetsDefinition):
        self.source = source
        self.key = asset.key  # the source asset's, as its translator named it
        # The source asset is built with partitions_for(source): time windows, which Dagster types as
        # any PartitionsDefinition (or None).
        self.partitions_def = cast(dg.TimeWindowPartitionsDefinition, asset.partitions_def)
        self.op_name = asset.op.name

    def run_config(self, cursor: str) -> dg.RunConfig:
        """A poll from ``cursor``: the asset's typed config (``PullConfig``)."""
        return dg.RunConfig(ops={self.op_name: PullConfig(poll=True, cursor=cursor)})

    def run_request(self, flight: InFlight) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=flight.pull_id,
            partition_key=flight.partition_key,
            run_config=self.run_config(flight.cursor),
            tags={SOURCE_TAG: self.source.name, MODE_TAG: "poll", PULL_ID_TAG: flight.pull_id},
        )

    def sealed(self, state: PollPlanState, seal: CursorSeal) -> PollPlanState:
        """``state`` with every cursor it holds sealed (one set by hand, or stored before sealing
        knew a spelling): what the sensor stores and hands a run never holds a credential."""
        flight = state.in_flight
        if flight is not None:
            try:
                cursor = seal(CursorState.from_json(flight.cursor), "in-flight cursor").to_json()
            except CursorFormatError:
                cursor = seal.redact(flight.cursor)  # the run refuses it; shown redacted meanwhile
            flight = replace(flight, cursor=cursor)
        return replace(state, committed=seal(state.committed, "committed cursor"), in_flight=flight)

    def settle(
        self,
        state: PollPlanState,
        instance: dg.DagsterInstance,
        now: datetime,
        log: list[str],
        seal: CursorSeal | None = None,
    ) -> tuple[PollPlanState, dg.DagsterRun | None]:
        """Resolve the pull in flight: commit its cursor (sealed) if its run succeeded, forget it if it
        failed. Also returns the run of a pull still in flight (None when there is none, or it has no
        run yet)."""
        seal = seal or CursorSeal(self.source)
        flight = state.in_flight
        if flight is None:
            return state, None
        run = find_pull_run(instance, flight.pull_id)
        if run is None:
            if flight.via == "cli" and (
                now - _parse(flight.requested_at) > CLI_GRACE or (flight.owner and owner_is_dead(flight.owner))
            ):
                log.append(f"pull {flight.pull_id} was announced but never started; forgetting it")
                return replace(state, in_flight=None), None
            return state, None
        run = reap_if_dead(instance, run)
        status = run.status
        if status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            return state, run
        last = {"pull_id": flight.pull_id, "run_id": run.run_id, "status": status.value}
        settled = replace(state, in_flight=None, last_pull=last, more_to_pull=False)
        if status != dg.DagsterRunStatus.SUCCESS:
            checkpoint = run_checkpoint(instance, run.run_id, self.key)
            checkpoint = seal(checkpoint, "checkpoint") if checkpoint is not None else None
            if checkpoint is not None and checkpoint != state.committed:
                log.append(
                    f"run {run.run_id} {status.value.lower()}; committed its checkpoint {checkpoint.to_json()} "
                    "(its events are stored) and the next tick pulls on from there"
                )
                return replace(settled, committed=checkpoint), None
            log.append(
                f"run {run.run_id} {status.value.lower()}; the cursor stays at {state.committed.to_json()} "
                "and the next tick pulls again from it"
            )
            return settled, None
        report = run_metadata(instance, run.run_id, self.key) or {}
        if "cursor_after" not in report:
            log.append(f"run {run.run_id} succeeded without reporting a cursor; the cursor stays")
            return settled, None
        cursor = seal(CursorState.from_dict(report["cursor_after"]), "cursor_after")
        more = report.get("drained") is False
        log.append(
            f"run {run.run_id} succeeded; committed cursor {cursor.to_json()}"
            + ("; more to pull, so the next evaluation pulls on" if more else "")
        )
        return replace(settled, committed=cursor, more_to_pull=more), None

    def decide(
        self,
        state: PollPlanState,
        *,
        instance: dg.DagsterInstance,
        now: datetime,
        force: bool = False,
        via: str = "sensor",
        probe: Prober | None = None,
    ) -> PollDecision:
        """One evaluation: settle the pull in flight, then request the next one when it is due, no
        other pull of the source runs, its time has a partition, and ``probe`` (when given, unless the
        source opts out or a backlog remains) finds something new. ``force`` pulls now whatever the
        cron says (``pullmode pull``). What it returns is sealed and redacted (``outgoing.py``)."""
        seal = CursorSeal(self.source)
        decision = self._decide(self.sealed(state, seal), instance, now, force, via, seal, probe)
        decision.log = [seal.redact(line) for line in decision.log]
        decision.skip_reason = seal.redact(decision.skip_reason) if decision.skip_reason else None
        decision.redact = seal.redact
        return decision

    def _decide(
        self,
        state: PollPlanState,
        instance: dg.DagsterInstance,
        now: datetime,
        force: bool,
        via: str,
        seal: CursorSeal,
        probe: Prober | None = None,
    ) -> PollDecision:
        log: list[str] = []
        if state.set_by_hand:
            state = self._rewound(state, log)
        state, run = self.settle(state, instance, now, log, seal)
        if state.in_flight is not None:
            return self._still_in_flight(state, run, log)
        due, skip = self._due(state, now, force)
        if due is None:
            return PollDecision(state, skip_reason=skip, log=log)
        active = self._active_run(instance)
        if active is not None:
            return PollDecision(state, skip_reason=_another_pull(active), log=log)
        if due < self.partitions_def.start:
            return PollDecision(state, skip_reason=f"{_iso(due)} is before startDate", log=log)
        if probe is not None and self.source.probe and not state.more_to_pull:
            asked = self._ask(state, due, now=now, force=force, probe=probe, log=log)
            if asked is not None:
                return asked
        return self._request(state, due, instance=instance, now=now, force=force, via=via, log=log)

    def _ask(
        self, state: PollPlanState, due: datetime, *, now: datetime, force: bool, probe: Prober, log: list[str]
    ) -> PollDecision | None:
        """The probe before a run: a decision without a run (nothing new, or throttled), or None to
        request the run as always (news, "unknown", or a failed probe: the run then fails with its
        logs, alert and checkpoint semantics).

        A 429 leaves ``last_tick`` alone so the tick stays due and is pulled once the source lets us
        (its data is not skipped until the next cron tick), and sets ``probe_after`` so that the
        evaluations meanwhile do not ask again; ``pullmode pull`` (forced) asks anyway."""
        if not force and state.probe_after and now < _parse(state.probe_after):
            return PollDecision(
                state,
                skip_reason=f"the source is rate limiting (HTTP 429); asking again at {state.probe_after}",
                log=log,
            )
        result = probe(state.committed)
        if result.verdict == "nothing_new":
            partition_key = self.partitions_def.get_partition_key_for_timestamp(due.timestamp())
            last_tick = state.last_tick if force else _iso(latest_tick(self.source.schedule, now))
            quiet = QuietPoll(partition_key, result, state.committed, now)
            return PollDecision(replace(state, last_tick=last_tick, probe_after=None), log=log, quiet=quiet)
        if result.verdict == "throttled":
            wait = max(result.retry_after or 0.0, 1.0)
            again = _iso(now + timedelta(seconds=wait))
            reason = f"the source is rate limiting (HTTP 429); asking again at {again}: {result.reason}"
            return PollDecision(replace(state, probe_after=again), skip_reason=reason, log=log)
        if result.verdict == "failed":
            log.append(f"the probe failed ({result.reason}); launching the run, which reports the failure")
        return None

    def _rewound(self, state: PollPlanState, log: list[str]) -> PollPlanState:
        """A cursor set by hand is the committed cursor from now on, and due at once (as a bare one
        always was: it has no ``last_tick``), not at the next cron tick. The pull it replaces (one in
        flight, a backlog to drain) is no longer awaited, so its run's end cursor or checkpoint is never
        committed over it; a run of that pull still going holds off the next pull until it ends
        (``_active_run``)."""
        line = f"cursor set by hand: rewound to {state.committed.to_json()}"
        if state.in_flight is not None:
            line += f"; pull {state.in_flight.pull_id}, in flight, will not be committed"
        log.append(line + "; the next pull starts there")
        return replace(state, in_flight=None, last_tick=None, more_to_pull=False, set_by_hand=False)

    def in_flight(self, state: PollPlanState, instance: dg.DagsterInstance, now: datetime) -> str | None:
        """Why no pull of this source may start now (None: none is in flight): the pull the poller
        awaits, else any poll run of the source in progress. For ``pullmode rewind``."""
        state, run = self.settle(state, instance, now, [])
        if state.in_flight is not None:
            return _flight_line(state.in_flight, run)
        active = self._active_run(instance)
        return _another_pull(active) if active is not None else None

    def _still_in_flight(self, state: PollPlanState, run: dg.DagsterRun | None, log: list[str]) -> PollDecision:
        flight = state.in_flight
        assert flight is not None
        if run is None and flight.via == "sensor":
            # Requested but not created yet (or lost): asking again is safe, the run key dedups.
            return PollDecision(state, self.run_request(flight), log=log)
        return PollDecision(state, skip_reason=_flight_line(flight, run), log=log)

    def _due(self, state: PollPlanState, now: datetime, force: bool) -> tuple[datetime | None, str | None]:
        """When the pull to request is for (None, with the reason, when nothing is due): now when
        forced or a backlog remains, else the latest cron tick not yet pulled."""
        if force or state.more_to_pull:
            return now, None
        tick = latest_tick(self.source.schedule, now)
        if state.last_tick is not None and tick <= _parse(state.last_tick):
            upcoming = croniter(self.source.schedule, now).get_next(datetime)
            return None, f"waiting for the next tick at {_iso(upcoming)}"
        return tick, None

    def _active_run(self, instance: dg.DagsterInstance) -> str | None:
        """A run of this source still in progress whose process is alive, by run id: a poll another
        evaluation or ``pullmode pull`` launched, or a window re-pull (a backfill, the asset page, the
        job). Found by the source's pool (defs/pools.py), which every run of its op is in, or, for a
        run created before the pools, the poller's tags. The run queue holds a second run of the
        pool anyway; asking here keeps the poller's own request out of the queue, and ``pullmode
        pull``, which runs in process without the queue, from running beside it.

        Asked by status alone (Dagster indexes it) and matched here: a tag filter joins every run the
        source ever had, so its cost would grow with the run history."""
        pool = pool_name(self.source.name)
        wanted = {SOURCE_TAG: self.source.name, MODE_TAG: "poll"}
        candidates = [
            run
            for run in (
                r.dagster_run for r in instance.get_run_records(filters=dg.RunsFilter(statuses=list(MAY_STILL_WRITE)))
            )
            if pool in run_pools(run) or all(run.tags.get(k) == v for k, v in wanted.items())
        ]
        active = [r for r in candidates if reap_if_dead(instance, r).status in MAY_STILL_WRITE]
        return active[0].run_id if active else None

    def _request(
        self,
        state: PollPlanState,
        due: datetime,
        *,
        instance: dg.DagsterInstance,
        now: datetime,
        force: bool,
        via: str,
        log: list[str],
    ) -> PollDecision:
        """Mint the pull (its id is the run key: one run per cron tick) and put it in flight."""
        partition_key = self.partitions_def.get_partition_key_for_timestamp(due.timestamp())
        tick = _iso(due)
        if via != "sensor":
            pull_id = f"{self.source.name}:{via}:{now.isoformat()}"
        elif state.more_to_pull:
            pull_id = f"{self.source.name}:backlog:{tick}"
        elif find_pull_run(instance, f"{self.source.name}:{tick}") is not None:
            # A tick pulled before is due again only after a cursor set by hand. Dagster would skip a
            # request under a used run key, and the next evaluation would settle the old run as this
            # pull (committing its end cursor over the rewind): the pull gets an id of its own.
            pull_id = f"{self.source.name}:rewind:{now.isoformat()}"
        else:
            pull_id = f"{self.source.name}:{tick}"
        flight = InFlight(
            pull_id=pull_id,
            tick=tick,
            requested_at=now.isoformat(),
            partition_key=partition_key,
            cursor=state.committed.to_json(),
            via=via,
            owner=process_identity() if via == "cli" else None,
        )
        # A backlog pull also serves the cron tick it falls after; a forced one serves none.
        last_tick = state.last_tick if force else _iso(latest_tick(self.source.schedule, now))
        state = replace(state, in_flight=flight, last_tick=last_tick, more_to_pull=False, probe_after=None)
        log.append(f"pull {pull_id} requested from cursor {flight.cursor}")
        return PollDecision(state, self.run_request(flight), log=log)


def _flight_line(flight: InFlight, run: dg.DagsterRun | None) -> str:
    where = f"run {run.run_id} ({run.status.value})" if run else "its run is starting"
    return f"pull {flight.pull_id} in flight: {where}"


def _another_pull(run_id: str) -> str:
    return f"another pull of this source is in flight: run {run_id}"


def probe_resource_defs(bound: Mapping[str, object]) -> dict[str, object]:
    """What a probe may need of the resources bound: all of them but the IO managers (the probe's
    own resources may depend on any other the user bound, a secrets vault say)."""
    io_managers = (dg.IOManagerDefinition, dg.ConfigurableIOManager, dg.IOManager)
    return {k: v for k, v in bound.items() if not isinstance(v, io_managers)}


class PollerResources:
    """The resources of every poller in a code location, as ``build_project`` bound them.

    The poller sensors declare no resource parameters on purpose: for a sensor that does, Dagster
    opens a new ``DagsterInstance`` on every evaluation (its storage, its schema check), most of
    what a quiet evaluation cost. An evaluation opens these itself instead (``opened``), on the
    instance it keeps, and only when it asks the source: built with ``dg.build_resources`` at first
    use and torn down when the evaluation ends, as Dagster does for a sensor that declares them, so
    a resource with a lifecycle (setup, teardown, a pool) works. Credentials are resolved on every
    probe, so a rotated secret is seen by the next one."""

    def __init__(self, bound: Mapping[str, object], sources: Iterable[str] = ()):
        self._bound = probe_resource_defs(bound)
        self._lock = threading.Lock()
        self._prepared = False
        self._sources = sorted(sources)
        """Every source of the code location, disabled ones too: their pools get their limit at the
        first evaluation of any poller here (``ensure_pool_limits``), before a backfill queues a run."""

    def prepare(self, instance: dg.DagsterInstance) -> None:
        """Once per process: the sources' pool limits."""
        with self._lock:
            if not self._prepared:
                ensure_pool_limits(instance, self._sources)
                self._prepared = True

    @contextmanager
    def opened(self, instance: dg.DagsterInstance) -> Iterator[Callable[[], Any]]:
        """For one evaluation: a getter that builds the resources at its first call; they are torn
        down when the block ends."""
        self.prepare(instance)
        with ExitStack() as stack:
            built: list[Any] = []

            def get() -> Any:
                if not built:
                    built.append(stack.enter_context(dg.build_resources(self._bound, instance=instance)))
                return built[0]

            yield get


_instances: dict[str, dg.DagsterInstance] = {}
_instances_lock = threading.Lock()


def evaluation_instance(context: dg.SensorEvaluationContext) -> dg.DagsterInstance:
    """The instance an evaluation asks about runs: one per code server process, opened at its first
    evaluation and kept (``context.instance`` opens a new one every time: tens of milliseconds of
    storage setup for a question that takes one). A context built in a test hands its own."""
    ref = context.instance_ref
    if ref is None:
        return context.instance
    key = dg.serialize_value(ref)
    with _instances_lock:
        instance = _instances.get(key)
        if instance is None:
            instance = _instances[key] = dg.DagsterInstance.from_ref(ref)
        return instance


class TickLog:
    """``context.log``, opened at the first line written: Dagster opens a ``DagsterInstance`` and a
    captured-log file for it, which a quiet poll (nothing to say but its materialization) skips."""

    def __init__(self, context: dg.SensorEvaluationContext):
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context.log, name)


def build_prober(
    source: SourceConfig,
    credentials: CredentialsResource,
    trace_store: TraceStoreResource,
    pull_settings: PullSettingsResource,
    logger: Any,
    s3: S3Resource | None = None,
) -> Prober:
    """The probe with the resources a run of ``source`` would use (its credentials, retry policy and
    S3 client settings), asking the trace store which returned events it already holds. It runs
    where the sensor runs: the code server, which therefore needs the sources' credentials."""

    def known_ids(ids: list[str]) -> set[str]:
        with trace_store.open() as store:
            return store.known_ids(source.name, ids)

    def ask(committed: CursorState) -> ProbeResult:
        try:
            secrets = credentials.resolve(source)
            content = pull_settings.content_policy(source)
            context = pull_settings.pull_context(logger, s3=s3, content=content)
        except PullmodeError as exc:  # a missing credential, a bad retry or content setting: the run reports it
            redact = outgoing.secrets_for(source).redact
            return ProbeResult("failed", 0.0, 0, reason=redact(" ".join(str(exc).split())))
        return probe_source(source, committed, known_ids=known_ids, context=context, credentials=secrets)

    return ask


def resources_prober(source: SourceConfig, resources: Any, logger: Any) -> Prober:
    """``build_prober`` over built resources (``PollerResources.get()``, ``dg.build_resources``),
    taken as the objects a run gets (an ``S3Resource``, not the client it attaches to a context)."""
    objects = instance_api.resource_objects(resources)
    return build_prober(
        source,
        objects["credentials"],
        objects["trace_store"],
        objects["pull_settings"],
        logger,
        objects.get("s3"),
    )


def counted(quiet: QuietPoll, source: SourceConfig, trace_store: TraceStoreResource) -> QuietPoll:
    """``quiet`` with its partition's stored events, as a run's record has them; without, when the
    store cannot answer (the quiet poll is still recorded)."""
    try:
        with trace_store.open() as store:
            return replace(quiet, row_count=partition_row_count(store, source, quiet.partition_key))
    except Exception:
        return quiet


def sensor_result(decision: PollDecision, key: dg.AssetKey) -> dg.SensorResult:
    """The evaluation's outcome for Dagster: a run request, a quiet poll's runless materialization
    (no run), or a skip with its reason."""
    cursor = decision.state.to_json()
    if decision.run_request is not None:
        return dg.SensorResult(run_requests=[decision.run_request], cursor=cursor)
    if decision.quiet is not None:
        materialization = decision.quiet.materialization(key, decision.redact)
        return dg.SensorResult(asset_events=[materialization], cursor=cursor)
    return dg.SensorResult(skip_reason=decision.skip_reason, cursor=cursor)


def build_poller_sensor(
    source: SourceConfig,
    job: dg.UnresolvedAssetJobDefinition,
    poller: PollPlanner,
    resources: PollerResources,
    *,
    clock: Clock = utc_now,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=poller_name(source.name),
        job=job,
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING if source.enabled else dg.DefaultSensorStatus.STOPPED,
        description=f"Polls {source.name} on `{source.schedule}` (UTC): asks the source whether anything is new "
        "and launches a run only then; its cursor is the committed pull cursor, advanced only after the run it "
        "launched succeeded.",
    )
    def poll(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        try:
            state = PollPlanState.from_json(context.cursor)
        except CursorFormatError as exc:
            raise dg.DagsterInvariantViolationError(f"source {source.name!r}: {exc}") from None
        instance = evaluation_instance(context)
        with resources.opened(instance) as built:

            def prober(committed: CursorState) -> ProbeResult:
                return resources_prober(source, built(), TickLog(context))(committed)

            try:
                decision = poller.decide(state, instance=instance, now=clock(), probe=prober)
            except PullmodeError as exc:  # a cursor that cannot be sealed: refused, never stored
                raise dg.DagsterInvariantViolationError(str(exc)) from None
            for line in decision.log:  # none on a quiet poll: its record is the materialization
                context.log.info(f"{source.name}: {line}")
            if decision.quiet is not None:
                decision.quiet = counted(decision.quiet, source, built().trace_store)
        return sensor_result(decision, poller.key)

    return poll
