"""Mapping and normalization: the one place a record becomes a normalized event or a reject."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pullmode_dagster.engine.events.mapping import EventMapper, EventMapping
from pullmode_dagster.engine.events.model import NormalizedEvent
from pullmode_dagster.engine.events.rejects import Reject
from pullmode_dagster.engine.events.rules import NormalizationError, format_timestamp, parse_timestamp, stable_event_id
from pullmode_dagster.engine.store import TraceStore, WriteResult, open_store
from pullmode_dagster.engine.store.postgres import PostgresTraceStore

from .fakes import map_one
from .pg import fresh_database

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
    return map_one(EventMapper(mapping, source_name="s", organization_id="org"), raw, "page 1, record 1")


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


# --- Odd records: each is stored or rejected with a reason, and both stores accept the result. ---

GOOD = {"id": "good", "at": "2026-03-01T10:00:00Z"}


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    if request.param == "sqlite":
        with open_store(f"sqlite:///{tmp_path}/store.db") as s:
            yield s
    else:
        with fresh_database() as url, open_store(url) as s:
            yield s


def deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


AT = "2026-03-01T10:00:00Z"
STORED_CASES = {
    "year 1000": ({"id": "e1", "at": "1000-01-01T00:00:00Z"}, {"event_timestamp": "1000-01-01T00:00:00.000000Z"}),
    "year 9999": (
        {"id": "e1", "at": "9999-12-31T23:59:59.999999Z"},
        {"event_timestamp": "9999-12-31T23:59:59.999999Z"},
    ),
    "epoch of year 1000": ({"id": "e1", "at": -30610224000}, {"event_timestamp": "1000-01-01T00:00:00.000000Z"}),
    "largest token count": ({"id": "e1", "at": AT, "tin": 2**63 - 1}, {"tokens_input": 2**63 - 1}),
    "token count as text": ({"id": "e1", "at": AT, "tout": "9223372036854775807"}, {"tokens_output": 2**63 - 1}),
    "huge finite cost": ({"id": "e1", "at": AT, "cost": 1e308}, {"cost_usd": 1e308}),
    "subnormal cost": ({"id": "e1", "at": AT, "cost": 5e-324}, {"cost_usd": 5e-324}),
    "negative zero cost": ({"id": "e1", "at": AT, "cost": -0.0}, {"cost_usd": 0.0}),
    "big int outside the mapping": ({"id": "e1", "at": AT, "n": 10**30}, {}),
    "NUL in actor": ({"id": "e1", "at": AT, "who": {"email": "a\x00b"}}, {"actor": "a\x00b"}),
    "NUL escape in the payload": ({"id": "e1", "at": AT, "note": "x\x00y"}, {}),
    "non-characters and astral": (
        {"id": "e1", "at": AT, "who": {"email": "\ufffe\uffff😀"}},
        {"actor": "\ufffe\uffff😀"},
    ),
}


@pytest.mark.parametrize(("raw", "expected"), list(STORED_CASES.values()), ids=list(STORED_CASES))
def test_odd_but_valid_records_are_stored_on_both_stores(
    any_store: TraceStore, raw: dict[str, Any], expected: dict[str, Any]
) -> None:
    events, rejects = EventMapper(FULL, source_name="s", organization_id="org").map_page([raw, GOOD], location="p")
    assert rejects == []
    assert any_store.write_events(events, run_id="r") == WriteResult(2, 0)
    row = any_store.tail()[0]
    assert row["source_event_id"] == "e1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", row["event_timestamp"])
    assert json.loads(row["raw_payload"]) == raw
    for field, value in expected.items():
        stored = row[field]
        if isinstance(any_store, PostgresTraceStore) and isinstance(value, str):
            value = value.replace("\x00", "\ufffd")  # Postgres text cannot hold NUL
        assert stored == value, field


REJECTED_CASES = {
    "lone surrogate in a field": ({"id": "e1", "at": AT, "note": "x\ud800"}, "invalid Unicode"),
    "lone surrogate in actor": ({"id": "e1", "at": AT, "who": {"email": "\udfff"}}, "invalid Unicode"),
    "lone surrogate in a key": ({"id": "e1", "at": AT, "\ud83d": 1}, "invalid Unicode"),
    "year 1 moved before year 1 by its offset": (
        {"id": "e1", "at": "0001-01-01T00:00:00+01:00"},
        "event_timestamp is out of range (years 1000-9999 in UTC): '0001-01-01T00:00:00+01:00'",
    ),
    "year 9999 moved past 9999 by its offset": (
        {"id": "e1", "at": "9999-12-31T23:00:00-05:00"},
        "event_timestamp is out of range",
    ),
    "year 999": ({"id": "e1", "at": "0999-12-31T23:59:59Z"}, "event_timestamp is out of range"),
    "year 1000 that is 999 in UTC": ({"id": "e1", "at": "1000-01-01T00:30:00+01:00"}, "out of range"),
    "epoch of year 999": ({"id": "e1", "at": -30610224001}, "event_timestamp is out of range"),
    "epoch too large": ({"id": "e1", "at": 10**30}, "event_timestamp is out of range"),
    "epoch beyond a float": ({"id": "e1", "at": 10**400}, "event_timestamp is out of range"),
    "tokens 2^63": (
        {"id": "e1", "at": AT, "tin": 2**63},
        "tokens_input is out of range (above 2^63-1): 9223372036854775808",
    ),
    "tokens 2^63 as text": ({"id": "e1", "at": AT, "tout": "9223372036854775808"}, "tokens_output is out of range"),
    "tokens as a float above 2^63": ({"id": "e1", "at": AT, "tin": 9.3e18}, "tokens_input is out of range"),
    "cost beyond a float": ({"id": "e1", "at": AT, "cost": 10**400}, "cost_usd is out of range"),
    "cost text beyond a float": ({"id": "e1", "at": AT, "cost": "1e999"}, "cost_usd is out of range: '1e999'"),
    "NaN outside the mapping": ({"id": "e1", "at": AT, "x": math.nan}, "NaN or Infinity"),
    "Infinity as the cost": ({"id": "e1", "at": AT, "cost": math.inf}, "NaN or Infinity"),
    "nesting too deep": ({"id": "e1", "at": AT, "x": deep(5000)}, "nested too deeply"),
    "integer of 5000 digits": ({"id": "e1", "at": AT, "x": 10**5000}, "integer too large"),
    "NUL in the event id": ({"id": "e\x001", "at": AT}, "source_event_id holds a NUL character"),
}


@pytest.mark.parametrize(("raw", "reason"), list(REJECTED_CASES.values()), ids=list(REJECTED_CASES))
def test_records_that_cannot_be_stored_faithfully_are_rejected_and_the_reject_is_stored(
    any_store: TraceStore, raw: dict[str, Any], reason: str
) -> None:
    events, rejects = EventMapper(FULL, source_name="s", organization_id="org").map_page([raw, GOOD], location="p")
    assert [e.source_event_id for e in events] == ["good"]  # one bad record never costs its page
    assert len(rejects) == 1 and reason in rejects[0].reason
    assert rejects[0].location == "p, record 1"
    rejects[0].raw_record.encode("utf-8")  # storable text
    assert any_store.write_events(events, run_id="r") == WriteResult(1, 0)
    assert any_store.write_rejects(rejects, run_id="r") == 1
    assert any_store.write_rejects(rejects, run_id="r2") == 0  # a re-pulled reject is stored once
    stored = any_store._conn.execute("SELECT reason, raw_record FROM pulled_events_rejected").fetchall()  # type: ignore[attr-defined]
    assert [tuple(r) for r in stored] == [(rejects[0].reason, rejects[0].raw_record)]


def test_rejected_raw_record_keeps_the_record() -> None:
    raw = {"id": "e1", "at": AT, "note": "x\ud800", "n": math.nan, "ok": "é"}
    r = reject(raw)
    assert r.reason == "record holds NaN or Infinity, which JSON cannot represent"
    assert r.raw_record.isascii()
    back = json.loads(r.raw_record)
    assert back["note"] == "x\ud800" and math.isnan(back["n"]) and back["ok"] == "é"
    nested = reject({"id": "e1", "at": AT, "x": deep(5000), "big": 10**5000})
    assert nested.raw_record.startswith('{"id":"e1","at":"2026-03-01T10:00:00Z","x":[[[')
    assert nested.raw_record.count("[") == 5001 and nested.raw_record.endswith(f',"big":{hex(10**5000)}}}')


def test_a_reject_built_anywhere_is_storable_text() -> None:
    r = Reject("s", "why \ud800", "raw \udfff", "loc \ud83d")
    assert (r.reason, r.raw_record, r.location) == ("why \\ud800", "raw \\udfff", "loc \\ud83d")
    assert Reject("s", "é", "ü", "ö").raw_record == "ü"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(1000, 1, 1, tzinfo=UTC), "1000-01-01T00:00:00.000000Z"),
        (datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "0005-01-02T03:04:05.000006Z"),
        (datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2))), "2026-03-01T10:00:00.000000Z"),
    ],
)
def test_format_timestamp_is_always_fixed_width(value: datetime, expected: str) -> None:
    assert format_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0500-01-01", "out of range"),
        (float("inf"), "not finite"),
        ("nan", "not finite"),
        (-(10**400), "out of range"),
        ("\ud800", "not ISO 8601 or epoch: '\\ud800'"),
        ({"a": 1}, "not a timestamp: dict"),
    ],
)
def test_parse_timestamp_rejects_odd_values_with_a_reason(value: Any, reason: str) -> None:
    with pytest.raises(NormalizationError, match=re.escape(reason)):
        parse_timestamp(value)


def test_a_reject_with_nul_and_surrogates_is_stored_on_both_stores(any_store: TraceStore) -> None:
    rejects = [Reject("s", "why\x00 \ud800", "raw\x00\udfff", "line\x00 1"), Reject("s", "r", "raw\x00", "l")]
    assert any_store.write_rejects(rejects, run_id="r") == 2
    stored = any_store._conn.execute("SELECT reason, raw_record FROM pulled_events_rejected ORDER BY id").fetchall()  # type: ignore[attr-defined]
    nul = "\ufffd" if isinstance(any_store, PostgresTraceStore) else "\x00"
    assert [tuple(r) for r in stored] == [(f"why{nul} \\ud800", f"raw{nul}\\udfff"), ("r", f"raw{nul}")]
