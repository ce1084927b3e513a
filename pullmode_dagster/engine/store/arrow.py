"""Stored events as Arrow and pandas: what downstream assets and ``pullmode export`` read.

Rows come from the store a batch at a time and are converted column by column from buffers; only
readers import pyarrow, and only :func:`read_dataframe` imports pandas.
Design: docs/design/exports-and-arrow.md#arrow-and-pandas
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import pyarrow as pa

from ..errors import PullmodeError
from .schema import EVENT_SCHEMA, READ_BATCH_ROWS, Column, arrow_schema, arrow_type

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = arrow_schema()


class EventBatches(Protocol):
    """What the readers read from: a trace store (``TraceStore.event_batches`` converts its rows
    with :func:`record_batch`, so this module does not import the store back)."""

    def event_batches(
        self, *, source: str, start: datetime | None = ..., end: datetime | None = ..., batch_rows: int = ...
    ) -> Iterator[pa.RecordBatch]: ...


_MAX_OFFSET = 2**31 - 1  # pa.string() has 32-bit offsets


def _validity(values: Sequence[Any], nullable: bool) -> tuple[pa.Buffer | None, int]:
    # A NOT NULL column (the stores enforce it) is not scanned: the scan costs as much as the join.
    nulls = values.count(None) if nullable else 0
    if not nulls:
        return None, 0
    present = np.fromiter(map(operator.is_not, values, repeat(None)), np.bool_, len(values))
    return pa.py_buffer(np.packbits(present, bitorder="little")), nulls


def _strings(values: Sequence[str | None], column: Column, *, source: str) -> pa.Array:
    """A string array from one join and one encode: no per-value Python call for ASCII text."""
    n = len(values)
    validity, nulls = _validity(values, column.nullable)
    texts = ["" if v is None else v for v in values] if nulls else cast(Sequence[str], values)  # no None: no nulls
    joined = "".join(texts)
    if joined.isascii():
        data = joined.encode("ascii")
        lengths = np.fromiter(map(len, texts), np.int64, n)
    else:
        data = joined.encode("utf-8")
        lengths = np.fromiter(map(len, map(str.encode, texts)), np.int64, n)
    del joined
    if len(data) > _MAX_OFFSET:
        raise PullmodeError(f"source {source!r}: {column.name} holds more than 2 GiB in one batch of {n} rows")
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=nulls
    )


def _numbers(values: Sequence[float | int | None], column: Column) -> pa.Array:
    validity, nulls = _validity(values, column.nullable)
    if nulls:
        values = [0 if v is None else v for v in values]
    data = np.fromiter(values, np.float64 if column.kind == "float" else np.int64, len(values))
    return pa.Array.from_buffers(arrow_type(column.kind), len(values), [validity, pa.py_buffer(data)], null_count=nulls)


def record_batch(rows: Sequence[tuple[Any, ...]], *, source: str) -> pa.RecordBatch:
    """One batch of rows (in :data:`EVENT_COLUMNS` order, timestamps as the engine's UTC text) as a
    typed record batch.

    A list of rows is emptied as it is converted, and each column's values are let go once built:
    the caller still holds the list while it fetches the next batch, and two batches of Python
    objects at once would double what a batch costs."""
    columns: list[Sequence[Any] | None] = list(zip(*rows, strict=True)) if rows else [() for _ in EVENT_SCHEMA]
    if isinstance(rows, list):
        rows.clear()
    arrays = []
    for i, column in enumerate(EVENT_SCHEMA):
        values, columns[i] = columns[i], None
        assert values is not None
        if column.kind in ("float", "int"):
            arrays.append(_numbers(values, column))
            continue
        text = _strings(values, column, source=source)
        del values
        if column.kind != "timestamp":
            arrays.append(text)
            continue
        try:
            arrays.append(text.cast(arrow_type("timestamp")))
        except pa.ArrowInvalid:
            raise PullmodeError(
                f"source {source!r}: a stored {column.name} is not a UTC timestamp "
                "(the normalized_schema check names the rows)"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def batch_reader(
    store: EventBatches,
    *,
    source: str,
    start: datetime | None = None,
    end: datetime | None = None,
    batch_rows: int = READ_BATCH_ROWS,
) -> pa.RecordBatchReader:
    """The events as a stream of batches (for writers that take one: Parquet, CSV)."""
    batches = store.event_batches(source=source, start=start, end=end, batch_rows=batch_rows)
    return pa.RecordBatchReader.from_batches(SCHEMA, batches)


def read_table(
    store: EventBatches, *, source: str, start: datetime | None = None, end: datetime | None = None
) -> pa.Table:
    """The events of ``source`` dated in ``[start, end)`` as one Arrow table (its batches as read)."""
    return pa.Table.from_batches(list(store.event_batches(source=source, start=start, end=end)), schema=SCHEMA)


def read_dataframe(
    store: EventBatches, *, source: str, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """The same as a DataFrame: ``event_timestamp`` and ``pulled_at`` UTC datetimes, token counts
    int64, ``cost_usd`` float64, text columns (``raw_payload`` included) strings."""
    return read_table(store, source=source, start=start, end=end).to_pandas()
