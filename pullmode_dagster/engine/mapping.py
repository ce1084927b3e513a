"""``eventMapping``: JSONPaths compiled once per pull, applied to every record of every page.

A reference connector maps in code instead (``extract``: record -> field values, for shapes a
path cannot express, such as an actor chosen by ``actor.type``); either way the values go through
the one :func:`~.events.normalize`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .config import EventMapping, SourceConfig
from .events import (
    NormalizationError,
    NormalizedEvent,
    Reject,
    dumps,
    invalid_unicode_reason,
    is_utf8,
    normalize,
    raw_text,
    stable_event_id,
    unserializable_reason,
)
from .jsonpath import MISSING, compile_path


class EventMapper:
    """Turns raw records into normalized events or rejects, never both, never neither."""

    @classmethod
    def for_source(cls, source: SourceConfig) -> EventMapper:
        extract = getattr(source, "extract", None)
        mapping = getattr(source, "event_mapping", None)
        return cls(mapping, source_name=source.name, organization_id=source.organization_id, extract=extract)

    def __init__(
        self,
        mapping: EventMapping | None,
        *,
        source_name: str,
        organization_id: str | None,
        extract: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.source_name = source_name
        self.organization_id = organization_id
        self._extract = extract if mapping is None else None
        self._paths = {
            field: compile_path(path)
            for field in EventMapping.FIELDS
            if mapping is not None and (path := getattr(mapping, field)) is not None
        }
        self._id_path = self._paths.pop("source_event_id", None)
        self._ts_path = self._paths.pop("event_timestamp", None)
        if self._extract is None and self._ts_path is None:
            raise ValueError(f"source {source_name!r}: no eventMapping and no extract function")

    def _normalize(self, raw: Any) -> NormalizedEvent | tuple[str, str]:
        """The event, or (reason, raw text) for a reject (its location is named only then).

        Never raises: a record either normalizes or is rejected with a reason and storable raw
        text (see :mod:`.events` for the rules). The checks cost nothing on valid records: NaN,
        depth and type problems surface as exceptions of the one ``dumps``, and the Unicode check
        is O(1) for ASCII payloads."""
        try:
            raw_payload = dumps(raw)
        except (TypeError, ValueError, RecursionError) as exc:
            return unserializable_reason(exc), raw_text(raw)
        if not is_utf8(raw_payload):
            return invalid_unicode_reason(raw_payload), raw_text(raw)
        try:
            if not isinstance(raw, dict):
                raise NormalizationError(f"record is not an object: {type(raw).__name__}")
            if self._extract is not None:
                return self._normalize_extracted(raw, raw_payload)
            assert self._ts_path is not None
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
                raw_payload=raw_payload,
                source_event_id=event_id,
                event_timestamp=timestamp,
                **values,
            )
        except NormalizationError as exc:
            return str(exc), raw_payload
        except RecursionError:
            return "record is nested too deeply to normalize", raw_payload
        except Exception as exc:  # the last resort: one odd record must not fail its page
            return f"record cannot be normalized: {type(exc).__name__}: {exc}", raw_payload

    def _normalize_extracted(self, raw: dict[str, Any], raw_payload: str) -> NormalizedEvent:
        assert self._extract is not None
        try:
            values = self._extract(raw)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise NormalizationError(f"record does not have the expected shape: {type(exc).__name__}: {exc}") from None
        if values.get("event_timestamp") is None:
            raise NormalizationError("event_timestamp: the record has none")
        if values.get("source_event_id") is None:
            raise NormalizationError("source_event_id: the record has none")
        fields = {name: values.get(name) for name in EventMapping.FIELDS}
        return normalize(
            source_name=self.source_name, organization_id=self.organization_id, raw_payload=raw_payload, **fields
        )

    def map(self, raw: Any, location: str) -> NormalizedEvent | Reject:
        result = self._normalize(raw)
        return result if type(result) is NormalizedEvent else Reject(self.source_name, *result, location)  # type: ignore[misc]

    def map_page(
        self, records: Sequence[Any], *, location: str, where: Callable[[int], str] | None = None
    ) -> tuple[list[NormalizedEvent], list[Reject]]:
        """``where(i)`` names record ``i`` (default: "<location>, record <i+1>"); asked for rejects only."""
        events: list[NormalizedEvent] = []
        rejects: list[Reject] = []
        for i, raw in enumerate(records):
            result = self._normalize(raw)
            if type(result) is NormalizedEvent:
                events.append(result)
            else:
                name = where(i) if where is not None else f"{location}, record {i + 1}"
                rejects.append(Reject(self.source_name, *result, name))  # type: ignore[misc]
        return events, rejects
