"""Stored events as Arrow and pandas: what downstream assets and ``pullmode export`` read.

Rows come from the store a batch at a time (:meth:`TraceStore.event_batches`) and are converted
column by column, so a window of any size goes through memory one batch at a time. Only readers
import pyarrow (and pandas); a pull never does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..errors import PullmodeError
from .schema import EVENT_SCHEMA, arrow_schema, arrow_type

if TYPE_CHECKING:
    import pandas as pd

    from .base import TraceStore

SCHEMA = arrow_schema()


def record_batch(rows: Sequence[tuple[Any, ...]], *, source: str) -> pa.RecordBatch:
    """One batch of rows (in :data:`EVENT_COLUMNS` order, timestamps as the engine's UTC text) as a
    typed record batch."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in EVENT_SCHEMA]
    arrays = []
    for column, values in zip(EVENT_SCHEMA, columns, strict=True):
        if column.kind == "timestamp":
            try:
                arrays.append(pa.array(values, pa.string()).cast(arrow_type("timestamp")))
            except pa.ArrowInvalid:
                raise PullmodeError(
                    f"source {source!r}: a stored {column.name} is not a UTC timestamp "
                    "(the normalized_schema check names the rows)"
                ) from None
        else:
            arrays.append(pa.array(values, arrow_type(column.kind)))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def batch_reader(
    store: TraceStore, *, source: str, start: datetime | None = None, end: datetime | None = None
) -> pa.RecordBatchReader:
    """The events as a stream of batches (for writers that take one: Parquet, CSV)."""
    return pa.RecordBatchReader.from_batches(SCHEMA, store.event_batches(source=source, start=start, end=end))


def read_table(
    store: TraceStore, *, source: str, start: datetime | None = None, end: datetime | None = None
) -> pa.Table:
    """The events of ``source`` dated in ``[start, end)`` as one Arrow table (its batches as read)."""
    return pa.Table.from_batches(list(store.event_batches(source=source, start=start, end=end)), schema=SCHEMA)


def read_dataframe(
    store: TraceStore, *, source: str, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """The same as a DataFrame: ``event_timestamp`` and ``pulled_at`` UTC datetimes, token counts
    int64, ``cost_usd`` float64, text columns (``raw_payload`` included) strings."""
    return read_table(store, source=source, start=start, end=end).to_pandas()
