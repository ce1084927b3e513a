"""Resources: small typed ``ConfigurableResource`` classes, each with one job.

Tests swap implementations (a fixed set of credentials, a store in a temp directory, a fast retry
policy); nothing is patched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, field_validator

from ..engine.adapters import PullContext, S3ClientSpec
from ..engine.declare.content import EVENT_CONTENT_ENV, ContentPolicy
from ..engine.declare.credentials import ResolvedCredentials
from ..engine.declare.models import SourceConfig
from ..engine.fetch.session import BACKOFF_INITIAL_ENV, BACKOFF_MAX_ENV, MAX_ATTEMPTS_ENV, RetryPolicy
from ..engine.pull import DEFAULT_BATCH_SIZE
from ..engine.store import STORE_URL_ENV, TraceStore, open_store
from ..engine.store.locks import source_lock

if TYPE_CHECKING:
    # dagster-aws (and boto3) cost about a second to import: only a code location with an S3
    # source imports them (default_resources, assets.py).
    from dagster_aws.s3 import S3Resource


PROTECTED_RESOURCES = ("credentials", "trace_store", "pull_settings", "s3", "pullmode_events")
"""The project's resource keys (``pullmode_events``: ``io_manager.EVENTS_IO_MANAGER_KEY``). What the
code location binds under them, a run's config may not change (:func:`refuse_run_overrides`)."""


class RunConfigRefused(Exception):
    """A run's config changes a resource the code location bound: the run fails before it starts."""


def refuse_run_overrides(context: dg.InitResourceContext) -> None:
    """Refuse a run whose config changes what the code location bound for the project's resources.

    Dagster makes the values a code location binds mere defaults of the resources' run config, so
    whoever can launch a run (the launchpad, GraphQL, no login by default) could otherwise point the
    trace store at a database of their choosing, turn ``event_content`` to ``shown`` or send the
    source's AWS keys to an ``endpoint_url`` of theirs. The deployment's code and environment decide
    these; a run config may only repeat them (the launchpad's "Scaffold all default config" does).
    Checked whenever one of the project's resources starts in a step, before anything is pulled."""
    run = getattr(context, "run", None)  # None outside a run: a sensor's resources, a test's
    if run is None:
        return
    given = (run.run_config or {}).get("resources") or {}
    defined = getattr(context, "all_resource_defs", None) or {}
    changed: list[str] = []
    left_out = False
    for key in PROTECTED_RESOURCES:
        entry = given.get(key)
        if not isinstance(entry, dict) or "config" not in entry or key not in defined:
            continue  # not set by the run, or not used by this step (the step that uses it checks it)
        schema = defined[key].config_schema
        bound = schema.default_value if schema is not None and schema.default_provided else None
        config = entry["config"]
        if not (isinstance(config, dict) and isinstance(bound, dict)):
            changed += [f"resources.{key}.config"] if config != bound else []
            continue
        # A field the run config leaves out takes the field's own default, not the bound value.
        fields = getattr(schema.config_type if schema is not None else None, "fields", None) or {}
        for name in sorted({*config, *bound}):
            field = fields.get(name)
            default = field.default_value if field is not None and field.default_provided else None
            if config.get(name, default) != bound.get(name, default):
                changed.append(f"resources.{key}.config.{name}")
                left_out = left_out or name not in config
    if changed:
        # Names only, never values: a store URL holds a password.
        note = " (a field left out of a resource's config falls back to its default, not to the bound value)"
        raise RunConfigRefused(
            f"run refused: its run config changes {', '.join(changed)}{note if left_out else ''}, which the "
            "code location binds; the deployment's environment decides the project's resources "
            "(docs/ui-access.md). Launch it without that part of the run config."
        )


class DeploymentResource(dg.ConfigurableResource):
    """A project resource whose settings the deployment decides, never a run's config."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        refuse_run_overrides(context)


class CredentialsResource(DeploymentResource):
    """Resolves a source's credential refs (``{env: ...}`` / ``{file: ...}``) on every call, through
    the engine (:meth:`ResolvedCredentials.for_source`): a rotated secret is picked up by the next
    run, and no value is kept in the process. A resource so that tests can swap it."""

    def resolve(self, source: SourceConfig) -> ResolvedCredentials:
        """The secrets for one pull, with the redactor built from them."""
        return ResolvedCredentials.for_source(source)


class TraceStoreResource(DeploymentResource):
    """The trace store every source writes to."""

    url: str | None = Field(
        default=None,
        description="sqlite:///path.db or postgresql://...; default $PULLMODE_TRACE_STORE_URL, else "
        "sqlite:///.pullmode/trace_store.db",
    )

    def resolved_url(self) -> str | None:
        """The URL, also outside a run (``pullmode pull`` takes the lock itself), where Dagster has
        not resolved a ``dg.EnvVar`` yet."""
        return self.url.get_value() if isinstance(self.url, dg.EnvVar) else self.url

    def open(self) -> TraceStore:
        return open_store(self.resolved_url())

    def lock(
        self, source: str, *, poll: bool = True, on_lost: Callable[[str], None] | None = None
    ) -> AbstractContextManager[None]:
        """The source's pull lock (polls only: window re-pulls never move the cursor, so they may
        run beside a poll); raises SourceBusy when another process holds it, and tells ``on_lost``
        when it was lost under the pull."""
        return source_lock(source, url=self.resolved_url(), on_lost=on_lost) if poll else nullcontext()


class PullSettingsResource(DeploymentResource):
    """How pulls behave: the retry policy, the write batch size and what of the events' content
    reaches Dagster (``engine/declare/content.py``). A setting left unset comes from
    its environment variable at run time (``RetryPolicy.from_env``, as without Dagster), else the
    default; ``default_resources`` binds the variables a deployment sets as ``dg.EnvVar``."""

    max_attempts: int | None = Field(
        default=None, description="attempts per request (429, 5xx, timeouts); default $PULLMODE_MAX_ATTEMPTS, else 5"
    )
    # The two backoffs are seconds, but typed as text: Dagster has no float source, so a float
    # field cannot take a dg.EnvVar (and the UI could not name the variable). The engine parses
    # them (RetryPolicy.from_env); a number given in Python is kept as its text.
    backoff_initial_seconds: str | None = Field(
        default=None,
        description="first backoff in seconds, doubling per attempt; default $PULLMODE_BACKOFF_INITIAL_SECONDS, else 1",
    )
    backoff_max_seconds: str | None = Field(
        default=None, description="longest backoff in seconds; default $PULLMODE_BACKOFF_MAX_SECONDS, else 30"
    )
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, description="events per store transaction")
    event_content: str | None = Field(
        default=None,
        description="what of the events' field values runs write to Dagster (metadata, logs, checks, alerts): "
        "hidden | masked | shown; a source's eventContent wins; default $PULLMODE_EVENT_CONTENT, else hidden",
    )

    @field_validator("backoff_initial_seconds", "backoff_max_seconds", mode="before")
    @classmethod
    def _seconds_as_text(cls, value: object) -> object:
        """A number given in Python (tests: ``backoff_initial_seconds=0.01``); 0 counts as unset."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value) if value else None
        return value

    def retry_policy(self) -> RetryPolicy:
        """The policy these settings make; a setting of 0 (or blank) counts as unset, as it always has."""
        return RetryPolicy.from_env(
            max_attempts=self.max_attempts or None,
            backoff_initial=self.backoff_initial_seconds or None,
            backoff_max=self.backoff_max_seconds or None,
        )

    def content_policy(self, source: SourceConfig) -> ContentPolicy:
        """This run's rule for ``source``'s event content outside the store (a PullmodeError naming
        the variable when the deployment's setting is none of the choices)."""
        return ContentPolicy.for_source(source, self.event_content or None)

    def pull_context(
        self, logger: object, *, s3: S3Resource | None = None, content: ContentPolicy | None = None
    ) -> PullContext:
        """``content``: the run's :meth:`content_policy`, which also decides what a failure message
        may quote of a vendor's error response."""
        return PullContext(
            logger=logger,
            retry=self.retry_policy(),
            s3_client_factory=s3_client_factory(s3) if s3 else None,
            content=content,
        )


def s3_client_factory(defaults: S3Resource) -> Callable[[S3ClientSpec], Any]:
    """Clients built through dagster-aws ``S3Resource``, one per pull, from the source's freshly
    resolved credentials; the deployment's ``s3`` resource supplies what the source leaves unset
    (region, endpoint, TLS settings, or a profile when the source declares no keys)."""

    from dagster_aws.s3 import S3Resource

    def build(spec: S3ClientSpec) -> Any:
        resource = S3Resource(
            region_name=spec.region or defaults.region_name,
            endpoint_url=spec.endpoint_url or defaults.endpoint_url,
            max_attempts=spec.max_attempts,
            use_ssl=defaults.use_ssl,
            verify=defaults.verify,
            profile_name=None if spec.aws_access_key_id else defaults.profile_name,
            aws_access_key_id=spec.aws_access_key_id or defaults.aws_access_key_id,
            aws_secret_access_key=spec.aws_secret_access_key or defaults.aws_secret_access_key,
            aws_session_token=spec.aws_session_token
            or (None if spec.aws_access_key_id else defaults.aws_session_token),
        )
        return resource.get_client()

    return build


def default_resources(*, s3: bool = True) -> dict[str, object]:
    """What ``definitions.py`` binds: every setting from the environment, read at run time.
    ``s3``: whether some source needs the ``s3`` resource."""
    resources: dict[str, object] = {
        "credentials": CredentialsResource(),
        # Settings the deployment gives in its environment are bound as dg.EnvVar, so the UI shows
        # which variable a resource reads (never its value: a store URL may hold a password).
        "trace_store": TraceStoreResource(url=dg.EnvVar(STORE_URL_ENV) if os.environ.get(STORE_URL_ENV) else None),
        "pull_settings": PullSettingsResource(
            max_attempts=dg.EnvVar.int(MAX_ATTEMPTS_ENV) if os.environ.get(MAX_ATTEMPTS_ENV) else None,
            backoff_initial_seconds=dg.EnvVar(BACKOFF_INITIAL_ENV) if os.environ.get(BACKOFF_INITIAL_ENV) else None,
            backoff_max_seconds=dg.EnvVar(BACKOFF_MAX_ENV) if os.environ.get(BACKOFF_MAX_ENV) else None,
            event_content=dg.EnvVar(EVENT_CONTENT_ENV) if os.environ.get(EVENT_CONTENT_ENV) else None,
        ),
    }
    if s3:
        from dagster_aws.s3 import S3Resource

        # The S3 adapter builds one client per pull from freshly resolved credentials; this
        # resource carries the deployment-wide defaults (region, endpoint for MinIO and the like).
        resources["s3"] = S3Resource()
    return resources
