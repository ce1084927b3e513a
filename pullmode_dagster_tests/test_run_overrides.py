"""A run cannot change what the deployment bound (docs/ui-access.md, docs/compliance.md).

Dagster makes the values a code location binds to its resources mere defaults of the run config, so
whoever can launch a run (the launchpad, the GraphQL API: no login by default) could point the trace
store at a database of their choosing, turn ``event_content`` to ``shown``, or send the source's AWS
keys to an S3 endpoint of theirs. Each such run fails before anything is pulled, its message naming
what it changed (never the value); a run config that only repeats the bound values, as the
launchpad's "Scaffold all default config" writes them, runs as usual.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

from pullmode_dagster.defs.io_manager import EVENTS_IO_MANAGER_KEY
from pullmode_dagster.defs.names import job_name
from pullmode_dagster.defs.resources import PROTECTED_RESOURCES, default_resources
from pullmode_dagster.demo.server import LoopbackServer, Request, Response

from .conftest import SourceWriter
from .dagster_helpers import Clock, Harness, make_harness
from .documents import http_source, s3_source
from .fakes import CursorFeed, make_events
from .s3_helpers import ndjson

PARTITION = "2026-03-01"
ACTOR = "override.person@people.example"


@pytest.fixture
def instance() -> Any:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def harness(
    api: LoopbackServer, sources: SourceWriter, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: Any
) -> Harness:
    monkeypatch.setenv("ACME_AUDIT_TOKEN", "tok-override-4242")
    monkeypatch.delenv("PULLMODE_EVENT_CONTENT", raising=False)  # hidden
    events = make_events(4, t0=datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    for event in events:
        event["actor"]["email"] = ACTOR
    api.routes["/v1/events"] = CursorFeed(events)
    sources.write(http_source(api.url("/v1/events")))
    return make_harness(
        sources.directory, instance, Clock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC)), tmp_path, "acme_audit"
    )


def launch(harness: Harness, run_config: dict[str, Any], source: str = "acme_audit") -> dg.ExecuteInProcessResult:
    """A window run of the source's job with ``run_config``: what the launchpad sends the run worker."""
    job = harness.project.defs.resolve_job_def(job_name(source))
    # Dagster itself accepts the run config: the project's check is what stands in the way.
    assert dg.validate_run_config(job, run_config)
    return job.execute_in_process(
        run_config=run_config, instance=harness.instance, partition_key=PARTITION, raise_on_error=False
    )


def refusal(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RESOURCE_INIT_FAILURE]
    return failure.engine_event_data.error.message  # type: ignore[union-attr]


def stored(harness: Harness) -> list[dict[str, Any]]:
    """The trace store's rows; none when the refused run never even created it."""
    return harness.rows() if harness.store_path.exists() else []


def dagster_storage_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(str(entry) for entry in instance.all_logs(run_id))


@pytest.mark.parametrize(
    ("resource", "config", "named"),
    [
        pytest.param("pull_settings", {"event_content": "shown"}, "event_content", id="show-event-content"),
        pytest.param("trace_store", {"url": "sqlite:///{tmp}/exfil.db"}, "url", id="store-elsewhere"),
        pytest.param(
            "pull_settings",
            {"max_attempts": 1000, "backoff_initial_seconds": "0", "batch_size": 2000},
            "max_attempts",
            id="retry-settings",
        ),
    ],
)
def test_a_run_config_that_changes_a_bound_resource_is_refused_before_anything_is_pulled(
    resource: str, config: dict[str, Any], named: str, harness: Harness, api: LoopbackServer, tmp_path: Path
) -> None:
    config = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in config.items()}
    result = launch(harness, {"resources": {resource: {"config": config}}})
    message = refusal(result)
    assert f"resources.{resource}.config.{named}" in message and "which the code location binds" in message
    assert "exfil" not in message and "shown" not in message  # names, never the values
    assert api.requests == []  # nothing fetched from the vendor with the deployment's credentials
    assert not (tmp_path / "exfil.db").exists()  # nothing written anywhere else
    assert stored(harness) == []
    assert ACTOR not in dagster_storage_text(harness.instance, result.run_id)


def test_the_refusal_names_exactly_the_fields_that_differ(harness: Harness) -> None:
    settings = harness.project.defs.resources["pull_settings"]  # max_attempts=2 and fast backoffs, in Python
    bound = settings.get_resource_definition().config_schema.default_value  # type: ignore[union-attr]
    message = refusal(
        launch(harness, {"resources": {"pull_settings": {"config": {**bound, "event_content": "shown"}}}})
    )
    assert "changes resources.pull_settings.config.event_content, which the code location binds" in message
    # Left out, a bound field falls back to its default: that changes it too, and the message says why.
    message = refusal(launch(harness, {"resources": {"pull_settings": {"config": {"batch_size": 2000}}}}))
    assert "changes resources.pull_settings.config.backoff_initial_seconds, " in message
    assert "pull_settings.config.batch_size" not in message and "pull_settings.config.event_content" not in message
    assert "falls back to its default, not to the bound value" in message


def test_a_run_config_that_repeats_the_bound_values_runs(harness: Harness, api: LoopbackServer) -> None:
    """What the launchpad's "Scaffold all default config" puts in the editor: the bound values."""
    job = harness.project.defs.resolve_job_def(job_name("acme_audit"))
    snapshot = job.get_job_snapshot().config_schema_snapshot
    root = snapshot.get_config_snap(job.get_job_snapshot().mode_def_snaps[0].root_config_key)  # type: ignore[arg-type]
    defaults = yaml.safe_load(default_values_yaml_from_type_snap(snapshot, root))
    assert {"trace_store", "pull_settings"} <= set(defaults["resources"])
    assert defaults["resources"]["trace_store"]["config"]["url"] == f"sqlite:///{harness.store_path}"
    result = launch(harness, defaults)
    assert result.success
    assert len(harness.rows()) == 4 and len(api.requests) == 1


def test_a_run_without_resource_config_is_untouched(harness: Harness) -> None:
    assert launch(harness, {}).success
    assert {r["actor"] for r in harness.rows()} == {ACTOR}


def test_an_s3_endpoint_in_run_config_never_receives_the_sources_keys(
    s3: Any, sources: SourceWriter, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: Any
) -> None:
    """A source that leaves its endpoint unset (AWS itself) uses the ``s3`` resource's: a run that
    sets the resource's ``endpoint_url`` would have the source's signed requests, access key id and
    session token sent to a host of the launcher's choosing."""
    monkeypatch.setenv("DROP_KEY_ID", "AKIAOVERRIDEKEY01")
    monkeypatch.setenv("DROP_SECRET", "override-secret-key")
    s3.put_object(Bucket="audit-drops", Key="audit/0.ndjson", Body=ndjson(make_events(2)))
    seen: list[Request] = []

    def attacker(request: Request) -> Response:
        seen.append(request)
        return Response(200, b"")

    sources.write(s3_source(None, startDate="2026-01-01"))
    harness = make_harness(sources.directory, instance, Clock(datetime(2026, 3, 2, tzinfo=UTC)), tmp_path, "audit_drop")
    with LoopbackServer(fallback=attacker) as server:
        message = refusal(
            launch(harness, {"resources": {"s3": {"config": {"endpoint_url": server.base_url}}}}, "audit_drop")
        )
    assert "resources.s3.config.endpoint_url" in message
    assert seen == []
    assert stored(harness) == []


def test_every_resource_the_project_binds_is_one_a_run_may_not_change(harness: Harness) -> None:
    bound = set(harness.project.defs.resources or {}) | set(default_resources(s3=True))
    assert bound <= set(PROTECTED_RESOURCES) and EVENTS_IO_MANAGER_KEY in PROTECTED_RESOURCES
