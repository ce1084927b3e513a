"""Asset checks on every source asset, computed from the rows the run wrote.

``normalized_schema``: every row is in the normalized shape. ``unique_source_event_id``: no key is
stored twice (the store's unique key guarantees it; the check catches a table created without it).
"""

from __future__ import annotations

import dagster as dg

from ..engine.declare.content import ContentPolicy
from ..engine.fetch.redaction import Redactor
from ..engine.store import Integrity
from . import outgoing

NORMALIZED_SCHEMA = "normalized_schema"
UNIQUE_SOURCE_EVENT_ID = "unique_source_event_id"


def check_specs(key: dg.AssetKey, *, blocking: bool) -> list[dg.AssetCheckSpec]:
    """The two checks of the asset ``key``; ``blocking``: a failure keeps its downstream assets from
    materializing in the same run (the translator's choice, off by default)."""
    return [
        dg.AssetCheckSpec(
            NORMALIZED_SCHEMA,
            asset=key,
            description="Rows written by the run are in the normalized shape: UTC ISO 8601 timestamp, "
            "non-negative cost and token counts, raw_payload valid JSON.",
            blocking=blocking,
        ),
        dg.AssetCheckSpec(
            UNIQUE_SOURCE_EVENT_ID,
            asset=key,
            description="No source_event_id written by the run is stored more than once for this source.",
            blocking=blocking,
        ),
    ]


def check_results(
    key: dg.AssetKey, integrity: Integrity, *, rejected: int | None, redact: Redactor, content: ContentPolicy
) -> list[dg.AssetCheckResult]:
    """The two checks' results. ``rejected`` is the pull's count (None when the checks run alone,
    on what is stored for a window, with no pull); the examples are stored event ids, so redacted,
    and named only as ``content`` allows (the counts always)."""
    schema: dict[str, object] = {
        "rows_checked": integrity.rows,
        "invalid_rows": integrity.invalid_rows,
        "invalid_examples": content.examples(integrity.invalid_examples),
    }
    if rejected is not None:
        schema["rejected_records"] = rejected
    return [
        dg.AssetCheckResult(
            asset_key=key,
            check_name=NORMALIZED_SCHEMA,
            passed=integrity.invalid_rows == 0,
            metadata=outgoing.metadata(schema, redact),
            description=f"{integrity.invalid_rows} of {integrity.rows} rows break the normalized shape"
            if integrity.invalid_rows
            else None,
        ),
        dg.AssetCheckResult(
            asset_key=key,
            check_name=UNIQUE_SOURCE_EVENT_ID,
            passed=integrity.duplicate_keys == 0,
            metadata=outgoing.metadata(
                {
                    "rows_checked": integrity.rows,
                    "duplicate_keys": integrity.duplicate_keys,
                    "duplicate_examples": content.examples(integrity.duplicate_examples),
                },
                redact,
            ),
            description=f"{integrity.duplicate_keys} source_event_id(s) stored more than once"
            if integrity.duplicate_keys
            else None,
        ),
    ]
