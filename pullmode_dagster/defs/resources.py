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
from pydantic import Field

from ..engine.adapters import PullContext, S3ClientSpec
from ..engine.config import SourceConfig
from ..engine.credentials import resolve_credentials
from ..engine.http import MAX_ATTEMPTS_ENV, RetryPolicy
from ..engine.locks import source_lock
from ..engine.pull import DEFAULT_BATCH_SIZE
from ..engine.store import STORE_URL_ENV, TraceStore, open_store

if TYPE_CHECKING:
    # dagster-aws (and boto3) cost about a second to import: only a code location with an S3
    # source imports them (default_resources, assets.py).
    from dagster_aws.s3 import S3Resource


class CredentialsResource(dg.ConfigurableResource):
    """Resolves a source's credential refs (``{env: ...}`` / ``{file: ...}``) on every call: a
    rotated secret is picked up by the next run, and no value is ever kept in the process."""

    def resolve(self, source: SourceConfig) -> dict[str, str]:
        base_dir = source.file.parent if source.file else None
        return resolve_credentials(source.credentials, source_name=source.name, base_dir=base_dir)


class StaticCredentialsResource(CredentialsResource):
    """Fixed values per source, for tests and local experiments: ``{source: {key: value}}``."""

    values: dict[str, dict[str, str]] = Field(default_factory=dict, description="source name -> key -> secret")

    def resolve(self, source: SourceConfig) -> dict[str, str]:
        return dict(self.values.get(source.name, {}))


class TraceStoreResource(dg.ConfigurableResource):
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

    def lock(self, source: str, *, poll: bool = True) -> AbstractContextManager[None]:
        """The source's pull lock (polls only: window re-pulls never move the cursor, so they may
        run beside a poll); raises SourceBusy when another process holds it."""
        return source_lock(source, url=self.resolved_url()) if poll else nullcontext()


class PullSettingsResource(dg.ConfigurableResource):
    """How pulls behave: the retry policy and the write batch size."""

    max_attempts: int | None = Field(
        default=None, description="attempts per request (429, 5xx, timeouts); default $PULLMODE_MAX_ATTEMPTS, else 5"
    )
    backoff_initial_seconds: float | None = Field(
        default=None,
        description="first backoff, doubling per attempt; default $PULLMODE_BACKOFF_INITIAL_SECONDS, else 1",
    )
    backoff_max_seconds: float | None = Field(
        default=None, description="longest backoff; default $PULLMODE_BACKOFF_MAX_SECONDS, else 30"
    )
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, description="events per store transaction")

    def pull_context(self, logger: object, *, s3: S3Resource | None = None) -> PullContext:
        defaults = RetryPolicy()
        retry = RetryPolicy(
            max_attempts=self.max_attempts or defaults.max_attempts,
            backoff_initial=self.backoff_initial_seconds or defaults.backoff_initial,
            backoff_max=self.backoff_max_seconds or defaults.backoff_max,
        )
        return PullContext(logger=logger, retry=retry, s3_client_factory=s3_client_factory(s3) if s3 else None)


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
            max_attempts=dg.EnvVar.int(MAX_ATTEMPTS_ENV) if os.environ.get(MAX_ATTEMPTS_ENV) else None
        ),
    }
    if s3:
        from dagster_aws.s3 import S3Resource

        # The S3 adapter builds one client per pull from freshly resolved credentials; this
        # resource carries the deployment-wide defaults (region, endpoint for MinIO and the like).
        resources["s3"] = S3Resource()
    return resources
