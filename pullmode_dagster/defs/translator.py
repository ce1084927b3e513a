"""How a source becomes its asset's ``AssetSpec``: the one place a project reshapes the source assets
(key prefix, group, tags, owners, description, automation condition, metadata, blocking checks),
in the manner of dagster-dlt's ``DagsterDltTranslator`` and dagster-sling's ``DagsterSlingTranslator``.

Design (what a translator may change, and what the wiring keeps): docs/design/assets.md#the-translator
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from ..engine.adapters import ADAPTERS
from ..engine.declare.models import SourceConfig
from ..engine.store.schema import DAGSTER_TYPE_NAMES, EVENT_SCHEMA, Column
from .freshness import freshness_for
from .names import ADAPTER_TAG, ORGANIZATION_TAG, OWNER_TAG, SOURCE_TAG

GROUP = "ingestion_sources"
KEY_PREFIX = "ingestion"
EVENTS_TABLE = "pulled_events"


def asset_key(name: str) -> dg.AssetKey:
    """The default key of source ``name``'s asset: ``ingestion/<name>``."""
    return dg.AssetKey([KEY_PREFIX, name])


def tag_value(value: str) -> str:
    """Dagster tag values: at most 63 characters of letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:63]


def owners_of(owner: str | None) -> list[str]:
    if not owner:
        return []
    return [owner] if "@" in owner else [f"team:{tag_value(owner)}"]


def describe(source: SourceConfig) -> str:
    """What the asset pulls and from where: refs and URLs without query strings, never a secret."""
    lines = [source.description or "", source.describe(), f"Polled on `{source.schedule}` (UTC)."]
    if source.credentials:
        refs = ", ".join(f"`{k}` from {ref.describe()}" for k, ref in sorted(source.credentials.items()))
        lines.append(f"Credentials: {refs}.")
    if source.file:
        lines.append(f"Defined in `{source.file}`.")
    return "\n\n".join(line for line in lines if line)


def table_schema(columns: Iterable[Column] = EVENT_SCHEMA) -> dg.TableSchema:
    """The trace store's columns (:data:`EVENT_SCHEMA`, their one home) as Dagster shows a table."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                DAGSTER_TYPE_NAMES[c.kind],
                description=c.description,
                # Unique within one source's rows: the store's key is (source_name, source_event_id).
                constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=c.name == "source_event_id"),
            )
            for c in columns
        ]
    )


def table_name(name: str) -> str:
    """Where source ``name``'s rows live: the events table, filtered to the source. One table holds
    every source, so the filter is part of the name: a bare ``pulled_events`` would make Dagster
    show every source asset as stored at the same address."""
    return f"{EVENTS_TABLE} WHERE source_name = '{name}'"


def code_references(source: SourceConfig) -> dict[str, dg.CodeReferencesMetadataValue]:
    """``dagster/code_references``: the source's YAML file (absolute, as Dagster's own references
    are; ``dg.link_code_references_to_git`` turns it into a link to the repository)."""
    if source.file is None:
        return {}
    with warnings.catch_warnings():  # both classes are beta in Dagster 1.13; stable enough to show a file
        warnings.simplefilter("ignore", dg.BetaWarning)
        reference = dg.LocalFileCodeReference(file_path=str(source.file.resolve()), label="source file")
        return {"dagster/code_references": dg.CodeReferencesMetadataValue(code_references=[reference])}


@dataclass(frozen=True)
class PullmodeTranslator:
    """Maps a source (:class:`SourceConfig`) to its asset's ``AssetSpec``. The defaults are the code
    location's: key ``ingestion/<name>``, group ``ingestion_sources``, non-blocking checks.

    Set the fields for the common changes; subclass for the rest, overriding :meth:`get_asset_spec`
    (call ``super()`` and ``.replace_attributes(...)``) or :meth:`get_checks_blocking`. Pass it to
    ``build_definitions(translator=...)``. The poller, job, checks, alerts and ``pullmode pull``
    follow the key it gives."""

    key_prefix: str | Sequence[str] = KEY_PREFIX
    group_name: str = GROUP
    blocking_checks: bool = False
    """Whether a failed ``normalized_schema`` or ``unique_source_event_id`` check stops the
    source's downstream assets from materializing in the same run."""

    def get_asset_key(self, name: str) -> dg.AssetKey:
        """The key of source ``name``'s asset (also of the placeholder shown when its file is invalid)."""
        prefix = [self.key_prefix] if isinstance(self.key_prefix, str) else list(self.key_prefix)
        return dg.AssetKey([*prefix, name])

    def get_asset_spec(self, source: SourceConfig) -> dg.AssetSpec:
        """The asset of ``source``: what the UI shows and what Dagster schedules by. Definition-level
        metadata lives here (the column schema, the table, the source file); each materialization
        carries only what its pull did."""
        tags = {SOURCE_TAG: source.name, ADAPTER_TAG: source.adapter}
        if source.owner:
            tags[OWNER_TAG] = tag_value(source.owner)
        if source.organization_id:
            tags[ORGANIZATION_TAG] = tag_value(source.organization_id)
        return dg.AssetSpec(
            key=self.get_asset_key(source.name),
            group_name=self.group_name,
            description=describe(source),
            kinds={ADAPTERS[source.adapter].kind},
            tags=tags,
            owners=owners_of(source.owner),
            metadata={
                "schedule": source.schedule,
                "source_file": str(source.file or ""),
                "dagster/column_schema": table_schema(),
                "dagster/table_name": table_name(source.name),
                **code_references(source),
            },
            freshness_policy=freshness_for(source.schedule),
        )

    def get_checks_blocking(self, source: SourceConfig) -> bool:
        """Whether ``source``'s asset checks block its downstream assets (``AssetCheckSpec(blocking=)``)."""
        return self.blocking_checks
