"""Mapping and normalization: the one place a record becomes a normalized event or a reject."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pullmode_dagster.engine.config import EventMapping
from pullmode_dagster.engine.events import NormalizedEvent, Reject, stable_event_id
from pullmode_dagster.engine.mapping import EventMapper

FULL = EventMapping(
    source_event_id="$.id",
    event_timestamp="$.at",
    actor="$.who.email",
    action="$.type",
    target="$.model",
    cost_usd="$.cost",
    tokens_input="$.tin",
    tokens_output="$.tout",
)


def mapped(raw: Any, mapping: EventMapping = FULL) -> NormalizedEvent | Reject:
    return EventMapper(mapping, source_name="s", organization_id="org").map(raw, "page 1, record 1")


def event(raw: dict[str, Any], mapping: EventMapping = FULL) -> NormalizedEvent:
    result = mapped(raw, mapping)
    assert isinstance(result, NormalizedEvent), result
    return result


def reject(raw: Any, mapping: EventMapping = FULL) -> Reject:
    result = mapped(raw, mapping)
    assert isinstance(result, Reject), result
    return result


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00.000000Z"),
        ("2026-03-01T12:00:00+02:00", "2026-03-01T10:00:00.000000Z"),
        ("2026-03-01T05:30:00.123456-04:30", "2026-03-01T10:00:00.123456Z"),
        ("2026-03-01 10:00:00", "2026-03-01T10:00:00.000000Z"),
        (1772359200, "2026-03-01T10:00:00.000000Z"),
        (1772359200.5, "2026-03-01T10:00:00.500000Z"),
        (1772359200123, "2026-03-01T10:00:00.123000Z"),
        ("1772359200", "2026-03-01T10:00:00.000000Z"),
        (1772359200123456, "2026-03-01T10:00:00.123456Z"),
    ],
)
def test_timestamps_normalize_to_iso_utc(at: Any, expected: str) -> None:
    assert event({"id": "e1", "at": at}).event_timestamp == expected


def test_full_mapping_and_raw_payload() -> None:
    raw = {
        "id": 7,
        "at": "2026-03-01T10:00:00Z",
        "who": {"email": "a@b.c"},
        "type": "completion",
        "model": "m",
        "cost": "0.125",
        "tin": 10,
        "tout": 2.0,
        "ünï": "côdé",
    }
    e = event(raw)
    assert (e.source_event_id, e.actor, e.action, e.target) == ("7", "a@b.c", "completion", "m")
    assert (e.cost_usd, e.tokens_input, e.tokens_output) == (0.125, 10, 2)
    assert e.organization_id == "org"
    assert json.loads(e.raw_payload) == raw


def test_absent_optional_fields_default() -> None:
    e = event({"id": "e1", "at": "2026-03-01T10:00:00Z"})
    assert (e.actor, e.action, e.target, e.cost_usd, e.tokens_input, e.tokens_output) == (
        None,
        None,
        None,
        0.0,
        0,
        0,
    )


def test_non_string_text_fields_become_text() -> None:
    e = event({"id": "e1", "at": "2026-03-01T10:00:00Z", "who": {"email": {"primary": "x"}}, "type": 3})
    assert e.actor == '{"primary":"x"}'
    assert e.action == "3"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"id": "e1"}, "event_timestamp: $.at matched nothing"),
        ({"id": "e1", "at": None}, "event_timestamp: $.at matched nothing"),
        ({"id": "e1", "at": "yesterday"}, "event_timestamp is not ISO 8601 or epoch: 'yesterday'"),
        ({"id": "e1", "at": True}, "event_timestamp is not a timestamp"),
        ({"at": "2026-03-01T10:00:00Z"}, "source_event_id: $.id matched nothing"),
        ({"id": "", "at": "2026-03-01T10:00:00Z"}, "source_event_id is empty"),
        ({"id": "e1", "at": "2026-03-01T10:00:00Z", "cost": "free"}, "cost_usd is not a number: 'free'"),
        ({"id": "e1", "at": "2026-03-01T10:00:00Z", "cost": -0.5}, "cost_usd is negative: -0.5"),
        ({"id": "e1", "at": "2026-03-01T10:00:00Z", "cost": "NaN"}, "cost_usd is not finite"),
        ({"id": "e1", "at": "2026-03-01T10:00:00Z", "tin": 1.5}, "tokens_input is not a whole number: 1.5"),
        ({"id": "e1", "at": "2026-03-01T10:00:00Z", "tout": -3}, "tokens_output is negative: -3"),
        ({"id": "e1", "at": "2026-03-01T10:00:00Z", "tout": True}, "tokens_output is not a number: True"),
        ("just a string", "record is not an object: str"),
        ([1, 2], "record is not an object: list"),
    ],
)
def test_records_that_cannot_be_normalized_are_rejected_with_a_reason(raw: Any, reason: str) -> None:
    r = reject(raw)
    assert reason in r.reason
    assert r.location == "page 1, record 1"
    assert json.loads(r.raw_record) == raw


def test_unmapped_event_id_falls_back_to_a_stable_hash() -> None:
    mapping = EventMapping(event_timestamp="$.at")
    a = event({"at": "2026-03-01T10:00:00Z", "x": 1, "y": 2}, mapping)
    b = event({"y": 2, "x": 1, "at": "2026-03-01T10:00:00Z"}, mapping)
    c = event({"at": "2026-03-01T10:00:00Z", "x": 2, "y": 2}, mapping)
    assert a.source_event_id == b.source_event_id == stable_event_id({"x": 1, "y": 2, "at": "2026-03-01T10:00:00Z"})
    assert a.source_event_id.startswith("sha256:")
    assert c.source_event_id != a.source_event_id


def test_map_page_splits_events_and_rejects() -> None:
    mapper = EventMapper(FULL, source_name="s", organization_id=None)
    events, rejects = mapper.map_page(
        [{"id": 1, "at": 1772359200}, {"id": 2}, {"id": 3, "at": 1772359260}], location="page 4"
    )
    assert [e.source_event_id for e in events] == ["1", "3"]
    assert [(r.location, r.reason) for r in rejects] == [("page 4, record 2", "event_timestamp: $.at matched nothing")]
