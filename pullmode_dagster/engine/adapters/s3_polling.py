"""``s3_polling``: NDJSON, CSV and JSON-array files from S3 and S3-compatible stores.

Cursor = the greatest key fully processed (``after_key``), listed on with ``StartAfter``; files are
streamed. A late upload under a key before the cursor is left to a window re-pull.
Design: docs/design/adapters.md#s3_polling
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ..cursor import CursorState
from ..declare.models import ConfigProblem, SourceConfig
from ..declare.templating import Template
from ..errors import PullError
from ..events.mapping import EventMapping
from ..events.rejects import Reject
from .base import NEW, NOTHING_NEW, Page, Position, ProbeAnswer, Puller, Window
from .file_formats import UNITS, ParseProblem, UnreadableFile, parse_records
from .registry import Adapter, register

CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
# botocore logs signed request headers (the session token among them) at DEBUG; no deployment's
# log level may turn that into a leak.
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)
RECORDS_PER_PAGE = 2000
PROBE_MARKERS = 3
"""Listings a probe spends walking past folder markers before it calls the source's state news."""


class S3PollingSource(SourceConfig):
    """An ``s3_polling`` source file."""

    adapter: Literal["s3_polling"]
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    region: str | None = None
    parser: Literal["ndjson", "csv", "json-array"]
    endpoint_url: str | None = Field(default=None, description="S3-compatible stores: MinIO, moto, ...")
    event_mapping: EventMapping
    max_files_per_run: int = Field(default=100, ge=1, le=1_000_000)
    window_prefix: str | None = Field(
        default=None, description="listing prefix for a window re-pull, e.g. audit/${{window.start:%Y/%m/%d}}/"
    )

    def watermark_rewind_problem(self) -> str | None:
        return "its cursor is the last key read (after_key), not a time"

    def problems(self) -> list[ConfigProblem]:
        problems = self.template_problems({"windowPrefix": self.window_prefix}, scopes=("ingestionSource", "window"))
        for key in self.credentials:
            if key not in CREDENTIAL_KEYS:
                problems.append((f"credentials.{key}", f"s3_polling takes {', '.join(CREDENTIAL_KEYS)}"))
        if ("aws_access_key_id" in self.credentials) != ("aws_secret_access_key" in self.credentials):
            problems.append(("credentials", "set both aws_access_key_id and aws_secret_access_key, or neither"))
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            problems.append(("endpointUrl", "must be an http:// or https:// URL"))
        return problems

    def describe(self) -> str:
        via = f" via {self.endpoint_url}" if self.endpoint_url else ""
        return f"Pulls {self.parser} files from s3://{self.bucket}/{self.prefix}{via} (s3_polling)"


@dataclass(frozen=True)
class S3ClientSpec:
    """What a client is built from, for one pull."""

    region: str | None
    endpoint_url: str | None
    aws_access_key_id: str | None
    aws_secret_access_key: str | None
    aws_session_token: str | None
    max_attempts: int


def boto3_client(spec: S3ClientSpec) -> Any:
    """The engine's own client factory (the Dagster layer builds clients through S3Resource)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        region_name=spec.region,
        endpoint_url=spec.endpoint_url,
        aws_access_key_id=spec.aws_access_key_id,
        aws_secret_access_key=spec.aws_secret_access_key,
        aws_session_token=spec.aws_session_token,
        config=Config(retries={"max_attempts": spec.max_attempts, "mode": "standard"}, connect_timeout=10),
    )


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    last_modified: datetime


class S3Position(Position):
    after_key: str | None = None
    """The greatest key fully processed."""


class S3PollingPuller(Puller):
    config_model = S3PollingSource
    position_model = S3Position
    source: S3PollingSource
    window_by_event_time = False  # a window re-pull is defined by the files, not the events in them

    def _client(self) -> Any:
        c = self.credentials
        for key in ("aws_access_key_id", "aws_session_token"):
            if key in c:
                self.header_credential(key)
        spec = S3ClientSpec(
            region=self.source.region,
            endpoint_url=self.source.endpoint_url,
            aws_access_key_id=c.get("aws_access_key_id"),
            aws_secret_access_key=c.get("aws_secret_access_key"),
            aws_session_token=c.get("aws_session_token"),
            max_attempts=self.context.retry.max_attempts,
        )
        factory: Callable[[S3ClientSpec], Any] = self.context.s3_client_factory or boto3_client
        return factory(spec)

    def _fail(self, what: str, exc: Exception) -> PullError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{err.get('Code', 'error')} (HTTP {status}): {err.get('Message', '')}".rstrip(": ")
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return PullError(self.redact(f"source {self.source.name!r}: {what}: {detail}"))

    def _list(self, client: Any, prefix: str, start_after: str | None) -> Iterator[S3Object]:
        """Keys in order, one LIST page (1,000 keys) at a time, lazily."""
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"Bucket": self.source.bucket, "Prefix": prefix}
        if start_after:
            args["StartAfter"] = start_after
        while True:
            try:
                response = client.list_objects_v2(**args)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(f"cannot list s3://{self.source.bucket}/{prefix}", exc) from None
            self.requests += 1
            for item in response.get("Contents", []):
                if item["Key"].endswith("/") and item.get("Size", 0) == 0:
                    continue  # a "folder" marker
                yield S3Object(item["Key"], item.get("Size", 0), item["LastModified"])
            if not response.get("IsTruncated"):
                return
            args.pop("StartAfter", None)
            args["ContinuationToken"] = response["NextContinuationToken"]

    def _file_pages(self, client: Any, obj: S3Object, *, before: str | None, drained: bool) -> Iterator[Page]:
        """One file as pages of records; only the last page moves the resume key past it."""
        from botocore.exceptions import BotoCoreError, ClientError

        url = f"s3://{self.source.bucket}/{obj.key}"
        try:
            body = client.get_object(Bucket=self.source.bucket, Key=obj.key)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"cannot read {url}", exc) from None
        self.requests += 1
        stream = gzip.GzipFile(fileobj=body, mode="rb") if obj.key.endswith(".gz") else body
        unit = UNITS[self.source.parser]

        def page(records: list[Any], numbers: list[int], rejects: list[Reject], plain: bool, **kw: Any) -> Page:
            return Page(
                records, location=url, where=lambda i: f"{url} {unit} {numbers[i]}", rejects=rejects, plain=plain, **kw
            )

        records: list[Any] = []
        numbers: list[int] = []
        rejects: list[Reject] = []
        plain = True  # every record of the page is plain JSON
        try:
            for number, item, plain_record in parse_records(self.source.parser, stream):
                if isinstance(item, ParseProblem):
                    rejects.append(Reject(self.source.name, item.reason, item.raw, f"{url} {unit} {number}"))
                    continue
                records.append(item)
                numbers.append(number)
                plain = plain and plain_record
                if len(records) >= RECORDS_PER_PAGE:
                    yield page(
                        records,
                        numbers,
                        rejects,
                        plain,
                        nbytes=0,
                        resume={"after_key": before},
                        drained=False,
                        boundary=False,
                    )
                    records, numbers, rejects, plain = [], [], [], True
        except UnreadableFile as exc:
            raise PullError(self.redact(f"source {self.source.name!r}: cannot read {url}: {exc}")) from None
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"cannot read {url}", exc) from None
        finally:
            body.close()
        yield page(
            records, numbers, rejects, plain, nbytes=obj.size, resume={"after_key": obj.key}, drained=drained, files=1
        )

    def probe(self, start: CursorState) -> ProbeAnswer:
        """One ``ListObjectsV2`` with ``StartAfter`` the cursor's key and ``MaxKeys=1`` under the
        source's prefix: a file after it is news. A folder marker (which the run skips) is asked past,
        a few times at most, then counted as news."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client()
        after = self.position(start).after_key
        args: dict[str, Any] = {"Bucket": self.source.bucket, "Prefix": self.source.prefix, "MaxKeys": 1}
        for _ in range(PROBE_MARKERS):
            if after:
                args["StartAfter"] = after
            try:
                response = client.list_objects_v2(**args)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(f"cannot list s3://{self.source.bucket}/{self.source.prefix}", exc) from None
            finally:
                self.requests += 1
            items = response.get("Contents", [])
            if not items:
                return NOTHING_NEW
            item = items[0]
            if not (item["Key"].endswith("/") and item.get("Size", 0) == 0):
                return NEW
            after = item["Key"]
        return NEW

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        client = self._client()
        if window is not None:
            yield from self._window_pages(client, window)
            return
        before = self.position(start).after_key
        listing = self._list(client, self.source.prefix, before)
        budget = self.source.max_files_per_run
        current = next(listing, None)
        while current is not None:
            budget -= 1
            # One key of lookahead: drained means the listing is exhausted, not the file budget.
            following = next(listing, None)
            yield from self._file_pages(client, current, before=before, drained=following is None)
            before = current.key
            if budget == 0:
                return
            current = following

    def _window_pages(self, client: Any, window: Window) -> Iterator[Page]:
        """Every file of the window: under ``windowPrefix`` when set, else under ``prefix`` with a
        LastModified inside the window (that lists the whole prefix: laid-out buckets should set
        ``windowPrefix``)."""
        src = self.source
        if src.window_prefix:
            context = {"ingestionSource": src.template_fields(), "window": vars(window)}
            prefix, in_window = Template(src.window_prefix).render(context), None
        else:
            prefix, in_window = src.prefix, (window.start, window.end)
        objects = [
            o
            for o in self._list(client, prefix, None)
            if in_window is None or in_window[0] <= o.last_modified < in_window[1]
        ]
        for i, obj in enumerate(objects):
            yield from self._file_pages(client, obj, before=None, drained=i == len(objects) - 1)


register(
    Adapter("s3_polling", S3PollingSource, S3PollingPuller, kind="s3", resources=frozenset({"s3"}), reads_files=True)
)
