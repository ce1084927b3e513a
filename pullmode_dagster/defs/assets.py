"""One asset per source: ``ingestion/<name>`` (or as a translator names it), time-partitioned,
materialized by a pull.

A run either polls from the cursor the poller handed it (``poll: true``) or, when materialized by
hand or by a backfill, re-pulls its partition's window; a window pull never moves the cursor.
Design: docs/design/assets.md#the-source-asset
"""

import re
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from ..engine.adapters import ADAPTERS, Window
from ..engine.cursor import CursorFormatError, CursorState
from ..engine.declare.content import ContentPolicy
from ..engine.declare.credentials import ResolvedCredentials
from ..engine.declare.loading import InvalidSource
from ..engine.declare.models import SourceConfig
from ..engine.errors import PullmodeError
from ..engine.events.model import MAPPED_FIELDS
from ..engine.fetch.redaction import Redactor
from ..engine.pull import PullReport, run_pull
from ..engine.store import Integrity, TraceStore
from ..engine.store.schema import EVENT_SCHEMA
from . import instance_api, outgoing
from .checks import check_results, check_specs
from .io_manager import EVENTS_IO_MANAGER_KEY
from .names import PROCESS_TAG, SOURCE_TAG, STATUS_TAG, pool_name
from .partitions import data_partitions, partitions_for
from .recovery import process_identity
from .resources import CredentialsResource, PullSettingsResource, TraceStoreResource
from .translator import GROUP as GROUP  # these three live in .translator; imported from here too
from .translator import KEY_PREFIX as KEY_PREFIX
from .translator import PullmodeTranslator, table_schema
from .translator import asset_key as asset_key

CHECKPOINT_KEY = "checkpoint"
"""Observation metadata: the cursor state whose events are in the store (a failed poll commits it)."""


class PullConfig(dg.Config):
    """Run config of a source asset. The poller sets both fields; a manual run leaves them unset."""

    poll: bool = Field(
        default=False,
        description="true: pull what is new, from `cursor` (what the poller requests). "
        "false: re-pull this partition's time window.",
    )
    cursor: str = Field(default="", description="The committed cursor state (JSON) the poll starts from.")


def row_counts(store: TraceStore, source: SourceConfig, partition_keys: Iterable[str]) -> dict[str, int]:
    """The stored events of ``source`` dated in each partition's window: one indexed count each."""
    partitions = partitions_for(source)
    counts: dict[str, int] = {}
    for partition_key in partition_keys:
        window = partitions.time_window_for_partition_key(partition_key)
        counts[partition_key] = store.count(source=source.name, start=window.start, end=window.end)
    return counts


def partition_row_count(store: TraceStore, source: SourceConfig, partition_key: str) -> int:
    """``dagster/row_count`` of a materialization of ``partition_key``: the events of ``source`` the
    store holds dated in that partition's window (not what one poll wrote). For any record of a
    partition: a run's, or a quiet poll's runless one."""
    return row_counts(store, source, [partition_key])[partition_key]


def report_metadata(report: PullReport, source: SourceConfig, content: ContentPolicy) -> dict[str, object]:
    """Materialization metadata: what the run wrote and where the cursor went (the partition's row
    count is added by the caller, from the store). Only what means something for the source: a
    ``files`` count where its adapter reads files (or a custom puller reported some). The ``preview``
    of the first events only as ``content`` lets it out of the store (none when hidden)."""
    metadata: dict[str, object] = {
        "events_written": report.written,
        "duplicates_skipped": report.duplicates,
        "rejected": report.rejected,
        "records_seen": report.records,
        "pages": report.pages,
    }
    if ADAPTERS[source.adapter].reads_files or report.files:
        metadata["files"] = report.files
    metadata |= {
        "requests": report.requests,
        "bytes": report.bytes,
        "mode": "window" if report.window else "poll",
        "drained": report.drained,
        "cursor_before": dg.MetadataValue.json(report.cursor_before.to_dict()),
        "cursor_after": dg.MetadataValue.json(report.cursor_after.to_dict()),
        "newest_event_timestamp": report.newest_event_timestamp or "none",
        "duration_seconds": round(report.duration_seconds, 3),
    }
    if report.lag_seconds is not None:
        metadata["lag_seconds"] = round(report.lag_seconds, 1)
    if report.window:
        metadata["window"] = f"{report.window.start.isoformat()} .. {report.window.end.isoformat()}"
        metadata["outside_window"] = report.outside_window
    columns = [c for c in EVENT_SCHEMA if c.name in MAPPED_FIELDS]
    preview = content.preview({c.name: getattr(e, c.name) for c in columns} for e in report.preview)
    if preview:
        metadata["preview"] = dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in preview], schema=table_schema(columns)
        )
    return metadata


class CheckpointRecorder:
    """Records a poll's durable progress as observations of its asset (``checkpoint``), at most every
    few seconds while it runs and once more when it fails, so the poller can commit it even when
    the run's process is killed."""

    EVERY_SECONDS = 5.0

    def __init__(self, context: dg.AssetExecutionContext, key: dg.AssetKey, start: CursorState):
        self.context = context
        self.key = key
        self.redact = Redactor()  # the pull's, once its secrets are resolved
        self.latest = start
        self._recorded = start
        self._last = float("-inf")  # the first checkpoint is recorded at once

    def advance(self, state: CursorState) -> None:
        self.latest = state
        if time.monotonic() - self._last >= self.EVERY_SECONDS:
            self._record()

    def _record(self) -> None:
        if self.latest != self._recorded:
            self.context.log_event(dg.AssetObservation(asset_key=self.key, metadata=self.metadata()))
            self._recorded = self.latest
        self._last = time.monotonic()

    def metadata(self) -> dict[str, object]:
        """The latest checkpoint as metadata (sealed by the engine; redacted all the same)."""
        return outgoing.metadata({CHECKPOINT_KEY: self.latest.to_dict()}, self.redact)

    def failed(self) -> dict[str, object]:
        """Record the last checkpoint now; failure metadata that names it."""
        self._record()
        return self.metadata()


def source_asset_spec(source: SourceConfig, translator: PullmodeTranslator) -> dg.AssetSpec:
    """The translator's spec of ``source``'s asset with what the wiring relies on, whatever it
    returned: the source tag (the IO manager finds the source by it), a skippable output (the checks
    run alone) and the events' IO manager."""
    spec = translator.get_asset_spec(source)
    spec = spec.merge_attributes(tags={SOURCE_TAG: source.name}).replace_attributes(skippable=True)
    return spec.with_io_manager_key(EVENTS_IO_MANAGER_KEY)


@dataclass(frozen=True)
class SourceAsset:
    """What a run of the asset needs to know of it, fixed when the code location loads."""

    source: SourceConfig
    key: dg.AssetKey


@dataclass(frozen=True)
class Pulled:
    """What one pull did, read back from the store while its lock was held."""

    report: PullReport
    integrity: Integrity
    written: dict[str, int]
    """The events this run wrote in each partition."""
    stored: dict[str, int]
    """The events the store holds in each of those partitions (and the run's own), after it."""
    total: int
    """The row count of the run's own partition (of the whole source when unpartitioned)."""


def build_source_asset(source: SourceConfig, translator: PullmodeTranslator) -> dg.AssetsDefinition:
    """``source``'s asset: a multi_asset that can be subset, so its checks also run alone (no pull),
    on what is stored. Its function is :func:`materialize`, with the resources it takes."""
    spec = source_asset_spec(source, translator)
    target = SourceAsset(source, spec.key)
    asset = dg.multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[spec],
        partitions_def=partitions_for(source),
        check_specs=check_specs(spec.key, blocking=translator.get_checks_blocking(source)),
        can_subset=True,
        # One run of the source at a time, however it was launched (defs/pools.py).
        pool=pool_name(source.name),
    )

    if "s3" in ADAPTERS[source.adapter].resources:
        # The S3 adapter builds its clients from the resource's settings, so it takes the resource
        # itself (and dagster-aws is imported only where an S3 source exists).
        from dagster_aws.s3 import S3Resource

        def pull_s3(
            context: dg.AssetExecutionContext,
            config: PullConfig,
            credentials: CredentialsResource,
            trace_store: TraceStoreResource,
            pull_settings: PullSettingsResource,
            s3: S3Resource,
        ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
            yield from materialize(target, context, config, credentials, trace_store, pull_settings, s3)

        return asset(pull_s3)

    def pull(
        context: dg.AssetExecutionContext,
        config: PullConfig,
        credentials: CredentialsResource,
        trace_store: TraceStoreResource,
        pull_settings: PullSettingsResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield from materialize(target, context, config, credentials, trace_store, pull_settings)

    return asset(pull)


def materialize(
    target: SourceAsset,
    context: dg.AssetExecutionContext,
    config: PullConfig,
    credentials: CredentialsResource,
    trace_store: TraceStoreResource,
    pull_settings: PullSettingsResource,
    s3: object = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """One run of a source asset: a poll or a window pull, or its checks alone."""
    source = target.source
    try:
        content = pull_settings.content_policy(source)
    except PullmodeError as exc:
        raise dg.Failure(description=str(exc)) from None
    if target.key not in context.selected_asset_keys:
        yield from stored_check_results(target, context, trace_store, content)
        return
    start, window = starting_point(source, context, config)
    claim_run(context)
    checkpoints = CheckpointRecorder(context, target.key, start)
    secrets = ResolvedCredentials()  # none known until resolved: redacts nothing
    try:
        # Resolved once: the pull uses them, and the failure paths below redact with them.
        secrets = credentials.resolve(source)
        checkpoints.redact = secrets.redact
        pulled = pull_and_count(
            target, context, trace_store, pull_settings, s3, start, window, secrets, checkpoints, content
        )
    except PullmodeError as exc:
        partial = report_metadata(exc.report, source, content) if isinstance(exc.report, PullReport) else {}
        raise dg.Failure(
            description=secrets.redact(exc),
            metadata=outgoing.metadata({**partial, **checkpoints.failed()}, secrets.redact),
        ) from None
    except Exception as exc:
        # Not one of ours: keep the traceback for debugging, but only ever show it redacted.
        context.log.error(secrets.redact(traceback.format_exc()))
        raise dg.Failure(
            description=f"source {source.name!r}: unexpected {type(exc).__name__}: {secrets.redact(exc)}",
            metadata=checkpoints.failed(),
        ) from None
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        # SIGINT / SIGTERM (Dagster maps SIGTERM to an interrupt): keep the progress, end the run.
        raise dg.Failure(
            description=secrets.redact(
                f"source {source.name!r}: interrupted (SIGINT or SIGTERM); checkpoint {checkpoints.latest.to_json()}"
            ),
            metadata={**checkpoints.failed(), "interrupted": True},
        ) from None
    context.log.info(secrets.redact(pulled.report.summary()))
    yield pull_result(target, context, pulled, content, secrets.redact)


def stored_check_results(
    target: SourceAsset, context: dg.AssetExecutionContext, trace_store: TraceStoreResource, content: ContentPolicy
) -> Iterator[dg.AssetCheckResult]:
    """The checks alone, from the UI: what is stored for the partition's window (no pull)."""
    source = target.source
    window = Window(*context.partition_time_window) if context.has_partition_key else None
    with trace_store.open() as store:
        integrity = store.integrity(
            source=source.name, start=window.start if window else None, end=window.end if window else None
        )
    selected = {c.name for c in context.selected_asset_check_keys}
    redact = outgoing.secrets_for(source).redact
    yield from (
        r
        for r in check_results(target.key, integrity, rejected=None, redact=redact, content=content)
        if r.check_name in selected
    )


def starting_point(
    source: SourceConfig, context: dg.AssetExecutionContext, config: PullConfig
) -> tuple[CursorState, Window | None]:
    """Where the pull starts: the poller's cursor (no window), else this partition's window."""
    if config.poll:
        try:
            # The cursor it starts from is the materialization's cursor_before.
            return CursorState.from_json(config.cursor), None
        except CursorFormatError as exc:
            raise dg.Failure(description=f"source {source.name!r}: cursor in run config: {exc}") from None
    time_window = context.partition_time_window
    window = Window(time_window.start, time_window.end)
    context.log.info(f"{source.name}: re-pulling window {window.start} .. {window.end}")
    return CursorState(), window


def claim_run(context: dg.AssetExecutionContext) -> None:
    """Tag the run with the process that runs this pull (a poll or a window): a poller or `pullmode
    pull` that finds the run in progress after its process died marks it failed (defs/recovery.py),
    so it does not hold the source's pool."""
    identity = process_identity()
    if context.run.tags.get(PROCESS_TAG) != identity:  # `pullmode pull` tags its run when creating it
        instance_api.add_run_tags(context.instance, context.run.run_id, {PROCESS_TAG: identity})


def pull_and_count(
    target: SourceAsset,
    context: dg.AssetExecutionContext,
    trace_store: TraceStoreResource,
    pull_settings: PullSettingsResource,
    s3: object,
    start: CursorState,
    window: Window | None,
    secrets: ResolvedCredentials,
    checkpoints: CheckpointRecorder,
    content: ContentPolicy,
) -> Pulled:
    """The pull, under the source's lock, and the counts its metadata reports, read before the lock
    is released."""
    source, run_id = target.source, context.run.run_id
    lock = trace_store.lock(source.name, poll=window is None, on_lost=lambda m: context.log.warning(secrets.redact(m)))
    with lock, trace_store.open() as store:
        report = run_pull(
            source,
            store=store,
            start=start,
            window=window,
            run_id=run_id,
            credentials=secrets,
            context=pull_settings.pull_context(context.log, s3=s3, content=content),
            batch_size=pull_settings.batch_size,
            on_checkpoint=checkpoints.advance,
        )
        integrity = store.integrity(source=source.name, run_id=run_id)
        hours = store.hour_counts(source=source.name, run_id=run_id) if window is None else {}
        own = context.partition_key if context.has_partition_key else None
        written = data_partitions(source, hours)  # what this run wrote in each partition
        stored = row_counts(store, source, [*written, *([own] if own else [])])
        total = stored[own] if own else store.count(source=source.name)
    return Pulled(report, integrity, written, stored, total)


def pull_result(
    target: SourceAsset, context: dg.AssetExecutionContext, pulled: Pulled, content: ContentPolicy, redact: Redactor
) -> dg.MaterializeResult:
    """The run's materialization (and its checks); a materialization of each other partition the
    poll wrote into is logged on the way."""
    own = context.partition_key if context.has_partition_key else None
    # Row count: what the partition holds after this poll (a quiet poll of a full partition is not
    # "0 rows"); what the poll itself wrote stays in events_written.
    metadata = {"dagster/row_count": pulled.total, **report_metadata(pulled.report, target.source, content)}
    for partition, count in pulled.written.items():
        if partition == own:
            metadata["events_in_this_partition"] = count
            continue
        context.log_event(
            dg.AssetMaterialization(
                asset_key=target.key,
                partition=partition,
                metadata={
                    "dagster/row_count": pulled.stored[partition],
                    "events_written": count,
                    "written_by_run": context.run.run_id,
                },
            )
        )
    selected = {c.name for c in context.selected_asset_check_keys}
    results = check_results(
        target.key, pulled.integrity, rejected=pulled.report.rejected, redact=redact, content=content
    )
    return dg.MaterializeResult(
        asset_key=target.key,
        metadata=outgoing.metadata(metadata, redact),
        check_results=[r for r in results if r.check_name in selected],
    )


def invalid_asset_name(invalid: InvalidSource, taken: set[str]) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", invalid.name.lower()).strip("_") or "source"
    if not name[0].isalpha():
        name = f"source_{name}"
    name = name[:56]
    return f"{name}_invalid" if name in taken else name


def build_invalid_source_asset(
    invalid: InvalidSource, name: str, translator: PullmodeTranslator
) -> dg.AssetsDefinition:
    """A bad file does not take the other sources down: it is left out, and this placeholder (same
    key the source would have had) carries the validation problems into the UI."""
    problems = "\n".join(f"- {p}" for p in invalid.problems)

    @dg.asset(
        key=translator.get_asset_key(name),
        group_name=translator.group_name,
        description=f"**This source file did not load**, so nothing is pulled:\n\n{problems}\n\n"
        "Fix the file (`pullmode validate` lists every problem) and reload the code location.",
        tags={STATUS_TAG: "invalid"},
        metadata={"source_file": str(invalid.file), "problems": "\n".join(invalid.problems)},
    )
    def invalid_source(context: dg.AssetExecutionContext) -> None:
        raise dg.Failure(description="\n".join(invalid.problems))

    return invalid_source
