"""The normalized event: the seed's canonical shape, as an object and as the row a pull carries.

The rules a record passes to become one are in :mod:`.rules`; one that fails becomes a
:class:`~.rejects.Reject`. Design: docs/design/normalization.md#the-normalized-event
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import MAXYEAR, datetime
from typing import Any, overload

MAPPED_FIELDS = (
    "source_event_id",
    "event_timestamp",
    "actor",
    "action",
    "target",
    "cost_usd",
    "tokens_input",
    "tokens_output",
)
"""The normalized fields ``eventMapping`` fills, in the seed's order."""

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""Fixed width, so timestamps sort correctly as text in every store (years 1000-9999)."""

MIN_YEAR = 1000
"""Earliest year stored: below it the text is not fixed-width on every store."""

MAX_YEAR = MAXYEAR
"""Latest year stored (9999): the last a four-digit year, and a datetime, can hold."""

TIMESTAMP_WIDTH = len(datetime(MAX_YEAR, 12, 31).strftime(TIMESTAMP_FORMAT))
"""Characters in every stored timestamp (27)."""

MAX_TOKENS = 2**63 - 1
"""Largest token count: a signed 64-bit integer (SQLite INTEGER, Postgres bigint)."""


@dataclass(slots=True, frozen=True)
class NormalizedEvent:
    """The seed's canonical shape, plus where it came from."""

    source_name: str
    source_event_id: str
    event_timestamp: str
    actor: str | None
    action: str | None
    target: str | None
    cost_usd: float
    tokens_input: int
    tokens_output: int
    raw_payload: str
    organization_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


EventRow = tuple[str, str, str, str | None, str | None, str | None, float, int, int, str, str | None]
"""A normalized event as the tuple of :class:`NormalizedEvent`'s fields, in order (``NormalizedEvent(*row)``
builds the object), which is also the stores' column order. A pull carries its events in this shape:
a tuple is built ten times faster than the frozen dataclass."""

EVENT_FIELDS: tuple[str, ...] = NormalizedEvent.__slots__
"""The fields of an :data:`EventRow`, in order."""


class EventRows(Sequence[NormalizedEvent]):
    """A batch of normalized events held as :data:`EventRow` tuples. It is a sequence of
    :class:`NormalizedEvent` to whoever reads it (built on access); a store that knows this type
    writes ``rows`` as they are, so a pull builds no event object at all."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[EventRow]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> NormalizedEvent: ...
    @overload
    def __getitem__(self, index: slice) -> list[NormalizedEvent]: ...
    def __getitem__(self, index: int | slice) -> NormalizedEvent | list[NormalizedEvent]:
        if isinstance(index, slice):
            return [NormalizedEvent(*row) for row in self.rows[index]]
        return NormalizedEvent(*self.rows[index])

    def __iter__(self) -> Iterator[NormalizedEvent]:
        return (NormalizedEvent(*row) for row in self.rows)

    def __repr__(self) -> str:
        return f"EventRows({len(self.rows)} events)"
