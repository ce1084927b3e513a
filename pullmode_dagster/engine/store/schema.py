"""The trace store's columns, typed: one list that the stores, readers (Arrow, pandas, export) and the
preview table all derive their types from, instead of guessing from column names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..events.model import MAPPED_FIELDS

if TYPE_CHECKING:
    import pyarrow as pa

Kind = Literal["text", "timestamp", "float", "int", "json"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool
    description: str


EVENT_SCHEMA: tuple[Column, ...] = (
    Column("source_name", "text", False, "The source file's `name`."),
    Column("source_event_id", "text", False, "The vendor's id of the event; unique per source."),
    Column("event_timestamp", "timestamp", False, "When the event happened, UTC."),
    Column("actor", "text", True, "Who (user, key, service account)."),
    Column("action", "text", True, "What they did."),
    Column("target", "text", True, "On what (model, resource)."),
    Column("cost_usd", "float", False, "Cost in US dollars (0 when the source has none)."),
    Column("tokens_input", "int", False, "Input tokens (0 when the source has none)."),
    Column("tokens_output", "int", False, "Output tokens (0 when the source has none)."),
    Column("raw_payload", "json", False, "The original event, compact JSON text."),
    Column("organization_id", "text", True, "The source's `organizationId`."),
    Column("pulled_at", "timestamp", False, "When the pull stored the event, UTC."),
    Column("run_id", "text", True, "The Dagster run that stored it."),
)
"""Columns of ``pulled_events`` (besides the store's own ``id``), in insert order."""

READ_BATCH_ROWS = 50_000
"""Rows per Arrow batch when events are read back: a few tens of MB, whatever the window."""

assert tuple(c.name for c in EVENT_SCHEMA[1:9]) == MAPPED_FIELDS, "EVENT_SCHEMA must list MAPPED_FIELDS in order"

EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in EVENT_SCHEMA)

DAGSTER_TYPE_NAMES: dict[Kind, str] = {
    "text": "string",
    "timestamp": "datetime",
    "float": "float",
    "int": "int",
    "json": "json",
}
"""How a column kind is named in a table schema shown in the UI."""


def arrow_type(kind: Kind) -> pa.DataType:
    import pyarrow as pa

    return {
        "text": pa.string(),
        "json": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "float": pa.float64(),
        "int": pa.int64(),
    }[kind]


def arrow_schema() -> pa.Schema:
    """The events as Arrow sees them (pyarrow is imported only by readers, never by a pull)."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c.kind), nullable=c.nullable) for c in EVENT_SCHEMA])
