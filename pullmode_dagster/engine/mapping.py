"""``eventMapping``: JSONPaths compiled once per pull, applied to every record of every page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import EventMapping
from .events import NormalizationError, NormalizedEvent, Reject, dumps, normalize, stable_event_id
from .jsonpath import MISSING, compile_path


class EventMapper:
    """Turns raw records into normalized events or rejects, never both, never neither."""

    def __init__(self, mapping: EventMapping, *, source_name: str, organization_id: str | None):
        self.source_name = source_name
        self.organization_id = organization_id
        self._paths = {
            field: compile_path(path) for field in EventMapping.FIELDS if (path := getattr(mapping, field)) is not None
        }
        self._id_path = self._paths.pop("source_event_id", None)
        self._ts_path = self._paths.pop("event_timestamp")

    def map(self, raw: Any, location: str) -> NormalizedEvent | Reject:
        try:
            raw_payload = dumps(raw)
        except (TypeError, ValueError) as exc:
            return Reject(self.source_name, f"record is not JSON-serializable: {exc}", repr(raw), location)
        try:
            if not isinstance(raw, dict):
                raise NormalizationError(f"record is not an object: {type(raw).__name__}")
            timestamp = self._ts_path.first(raw)
            if timestamp is MISSING or timestamp is None:
                raise NormalizationError(f"event_timestamp: {self._ts_path.text} matched nothing")
            if self._id_path is None:
                event_id: Any = stable_event_id(raw)
            else:
                event_id = self._id_path.first(raw)
                if event_id is MISSING or event_id is None:
                    raise NormalizationError(f"source_event_id: {self._id_path.text} matched nothing")
            values = {}
            for field, path in self._paths.items():
                value = path.first(raw)
                values[field] = None if value is MISSING else value
            return normalize(
                source_name=self.source_name,
                organization_id=self.organization_id,
                raw=raw,
                raw_payload=raw_payload,
                source_event_id=event_id,
                event_timestamp=timestamp,
                **values,
            )
        except NormalizationError as exc:
            return Reject(self.source_name, str(exc), raw_payload, location)

    def map_page(
        self, records: Sequence[Any], *, location: str, locations: Sequence[str] | None = None
    ) -> tuple[list[NormalizedEvent], list[Reject]]:
        events: list[NormalizedEvent] = []
        rejects: list[Reject] = []
        for i, raw in enumerate(records):
            where = locations[i] if locations is not None else f"{location}, record {i + 1}"
            result = self.map(raw, where)
            (events if type(result) is NormalizedEvent else rejects).append(result)  # type: ignore[arg-type]
        return events, rejects
