"""The source documents the tests write, one builder per kind of source: each a valid document a test
changes by overriding fields (``None`` leaves a field out). One home, so a field the source model
gains or renames is changed once (the one-click connectors' builders in connector_contract.py
are connector_source with each vendor's fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import parse_source
from pullmode_dagster.engine.declare.models import SourceConfig

from .fakes import EVENT_MAPPING

S3_REGION = "us-east-1"
"""The region of the tests' buckets (moto's)."""


def document(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; a field overridden with ``None`` is left out."""
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def parsed(doc: dict[str, Any], directory: Path) -> SourceConfig:
    """``doc`` parsed as the file ``<name>.yaml`` in ``directory`` would be, for a test that drives an
    adapter without a sources directory; a problem fails the test."""
    source, problems = parse_source(doc, file=directory / f"{doc['name']}.yaml", adapters=ADAPTERS)
    assert source is not None, problems
    return source


def source_document(
    adapter: str, name: str, schedule: str, fields: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """What every builder's document holds (a name, an adapter, the tests' start date, a schedule),
    then the adapter's ``fields``, then the test's ``overrides``."""
    return document(
        {"name": name, "adapter": adapter, "startDate": "2026-01-01", "schedule": schedule, **fields}, overrides
    )


def http_source(url: str, **overrides: Any) -> dict[str, Any]:
    """A minimal valid http_polling source, cursor-paginated, with the usual mapping."""
    fields = {
        "organizationId": "org_42",
        "credentials": {"token": {"env": "ACME_AUDIT_TOKEN"}},
        "url": url,
        "headers": {"Authorization": "Bearer ${{credentials.token}}"},
        "cursorJsonPath": "$.next_cursor",
        "eventsJsonPath": "$.data",
        "eventMapping": dict(EVENT_MAPPING),
    }
    return source_document("http_polling", "acme_audit", "*/5 * * * *", fields, overrides)


def s3_source(endpoint: str, **overrides: Any) -> dict[str, Any]:
    """An s3_polling source over NDJSON files under ``audit/`` in the bucket ``audit-drops``."""
    keys = {"aws_access_key_id": {"env": "DROP_KEY_ID"}, "aws_secret_access_key": {"env": "DROP_SECRET"}}
    fields = {
        "organizationId": "org_7",
        "bucket": "audit-drops",
        "prefix": "audit/",
        "region": S3_REGION,
        "parser": "ndjson",
        "endpointUrl": endpoint,
        "credentials": keys,
        "eventMapping": dict(EVENT_MAPPING),
    }
    return source_document("s3_polling", "audit_drop", "*/10 * * * *", fields, overrides)


def workato_source(url: str, **overrides: Any) -> dict[str, Any]:
    """The worked example's custom puller (``examples/workato.py``) against a Workato-like API at ``url``."""
    fields = {
        "module": "pullmode_dagster.examples.workato:WorkatoJobsPuller",
        "options": {"recipe_id": "12345", "base_url": url},
        "credentials": {"token": {"env": "WORKATO_TOKEN"}},
        "eventMapping": {"source_event_id": "$.id", "event_timestamp": "$.started_at", "action": "$.status"},
    }
    return source_document("custom", "workato_jobs", "*/10 * * * *", fields, overrides)


def custom_source(module: str, **overrides: Any) -> dict[str, Any]:
    """A custom puller ``module`` (``package.module:Class``) whose records carry ``id`` and ``t``."""
    mapping = {"source_event_id": "$.id", "event_timestamp": "$.t"}
    return workato_source("http://127.0.0.1:1", **{"module": module, "eventMapping": mapping, **overrides})


def connector_source(adapter: str, name: str, credentials: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A one-click connector's source: its adapter, name and credentials, the rest at its defaults."""
    return source_document(adapter, name, "*/5 * * * *", {"credentials": credentials}, overrides)


def canary_source(url: str, secrets: Path, **overrides: Any) -> dict[str, Any]:
    """An http_polling source named ``canary`` that sends each of the canary suite's secrets (from
    the environment and from files in ``secrets``, in several encodings) to ``url``."""
    canary = {
        "name": "canary",
        "credentials": {
            "token": {"env": "CNRY_TOKEN"},
            "key": {"file": str(secrets / "key")},
            "multi": {"file": str(secrets / "multi")},
            "uni": {"env": "CNRY_UNI"},
            "js": {"env": "CNRY_JS"},
        },
        "params": {
            "key": "${{credentials.key}}",
            "multi": "${{credentials.multi}}",
            "uni": "${{credentials.uni}}",
            "js": "${{credentials.js}}",
        },
    }
    return http_source(url, **{**canary, **overrides})


def canary_custom_source(module: str, secrets: Path) -> dict[str, Any]:
    """The canary's secrets handed to a custom puller ``module`` instead (no HTTP fields)."""
    custom = {"adapter": "custom", "module": module, "url": None, "headers": None, "params": None}
    return document(canary_source("", secrets), {**custom, "cursorJsonPath": None, "eventsJsonPath": None})
