"""Property tests: whatever a record holds, it becomes a stored event or a stored reject with a reason.

Arbitrary JSON-like records (with odd timestamps, huge or non-finite numbers, lone surrogates, NUL,
deep nesting) go through :class:`EventMapper`; nothing may raise, nothing may go uncounted, every
event must have the normalized shape, and every event and reject must be written to a real SQLite
store and a real Postgres store. Derandomized, so CI sees the same examples every run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pullmode_dagster.engine.events.mapping import EventMapper, EventMapping
from pullmode_dagster.engine.events.model import MAX_TOKENS, NormalizedEvent
from pullmode_dagster.engine.events.rejects import Reject
from pullmode_dagster.engine.store import SqliteTraceStore, TraceStore
from pullmode_dagster.engine.store.postgres import PostgresTraceStore

from .fakes import map_one
from .pg import fresh_database

SETTINGS = settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

MAPPING = EventMapping(
    source_event_id="$.id",
    event_timestamp="$.at",
    actor="$.who.email",
    action="$.type",
    target="$.model",
    cost_usd="$.cost",
    tokens_input="$.usage.in",
    tokens_output="$.usage.out",
)
UNMAPPED_ID = EventMapping(event_timestamp="$.at", actor="$.who.email", cost_usd="$.cost")

FIXED_WIDTH = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

# --- Strategies ---------------------------------------------------------------------------------

SPECIAL_CHARS = ["\ud800", "\udfff", "\ud83d", "\x00", "\ufffd", "\ufeff", "\u2028", "😀", "é", "\\", '"', "\n"]
odd_chars = st.one_of(st.characters(categories=["Cs"]), st.sampled_from(SPECIAL_CHARS))
texts = st.one_of(
    st.text(max_size=12),
    st.text(max_size=12),
    st.lists(st.one_of(st.characters(), odd_chars), max_size=6).map("".join),
)

huge_ints = st.one_of(
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), 2**64, 10**30, 10**308, 10**400, -(10**400)]),
    st.integers(min_value=0, max_value=3000).map(lambda n: 10**n),
)
odd_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0, 9.3e18, 2.0**63]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    huge_ints,
    odd_floats,
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)),
    max_leaves=12,
)


def nest(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


deep_values = st.integers(min_value=1, max_value=3000).map(nest)

offsets = st.integers(min_value=-1439, max_value=1439).map(lambda m: timezone(timedelta(minutes=m)))
datetimes = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))
iso_texts = st.one_of(
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), datetimes, offsets),
    st.builds(lambda d: d.isoformat(), datetimes),
    st.builds(lambda d: d.isoformat(sep=" ", timespec="seconds") + "Z", datetimes),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:00:00-05:00",
            "0999-12-31T23:59:59Z",
            "1000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "2026-02-30T00:00:00Z",
            "2026-03-01T25:00:00Z",
        ]
    ),
)
epochs = st.one_of(
    huge_ints,
    odd_floats,
    st.integers(min_value=-(10**19), max_value=10**19),
    st.floats(min_value=-1e19, max_value=1e19),
)
timestamps = st.one_of(
    iso_texts,
    epochs,
    epochs.map(str),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e999", "1_772_359_200", "yesterday", "\ud800", "12:00"]),
    texts,
    json_like,
)
numbers = st.one_of(
    huge_ints,
    odd_floats,
    huge_ints.map(str),
    odd_floats.map(str),
    st.sampled_from(["", "abc", "1e999", "0x10", " 12 ", "2.0", "1e3", "-0", "9223372036854775808"]),
    json_like,
)


MISSING = object()
plain_text = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8)
good_timestamps = st.one_of(
    st.builds(
        lambda d, tz: d.replace(tzinfo=tz).isoformat(),
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
        offsets,
    ),
    st.integers(min_value=-(10**10), max_value=10**10),
)


@st.composite
def records(draw: st.DrawFn) -> Any:
    """Mostly objects shaped like audit events, each field usually sane and sometimes odd, so that
    the checks after the first one are reached too."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(json_like)  # anything at all, objects or not

    def field(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        pick = draw(st.integers(min_value=0, max_value=9))
        return MISSING if pick == 0 else draw(odd) if pick <= 2 else draw(usual)

    fields = {
        "id": field(plain_text, st.one_of(texts, huge_ints, odd_floats, json_like)),
        "at": field(good_timestamps, timestamps),
        "who": field(st.fixed_dictionaries({"email": plain_text}), st.fixed_dictionaries({"email": json_like})),
        "type": field(plain_text, json_like),
        "model": field(plain_text, texts),
        "cost": field(st.floats(min_value=0, max_value=1e6), numbers),
        "usage": field(
            st.fixed_dictionaries({"in": st.integers(0, 10**6), "out": st.integers(0, 10**6)}),
            st.fixed_dictionaries({"in": numbers, "out": numbers}),
        ),
        "extra": field(st.lists(st.one_of(plain_text, st.integers())), st.one_of(json_like, deep_values)),
        draw(st.one_of(plain_text, plain_text, texts)): field(plain_text, scalars),
    }
    return {k: v for k, v in fields.items() if v is not MISSING}


# --- Stores (one of each for the module; every example writes under a source name of its own) -----


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TraceStore]]:
    sqlite = SqliteTraceStore(Path(tmp_path_factory.mktemp("props")) / "store.db")
    with fresh_database() as url:
        postgres = PostgresTraceStore(url)
        try:
            yield [sqlite, postgres]
        finally:
            postgres.close()
            sqlite.close()


sources = count()

# --- Properties ---------------------------------------------------------------------------------


def check_event(event: NormalizedEvent) -> None:
    assert FIXED_WIDTH.fullmatch(event.event_timestamp), event.event_timestamp
    assert isinstance(event.cost_usd, float) and math.isfinite(event.cost_usd) and event.cost_usd >= 0
    for tokens in (event.tokens_input, event.tokens_output):
        assert type(tokens) is int and 0 <= tokens <= MAX_TOKENS
    assert event.source_event_id and "\x00" not in event.source_event_id
    json.loads(event.raw_payload, parse_constant=lambda name: pytest.fail(f"{name} in raw_payload"))
    for text in (event.source_event_id, event.raw_payload, event.actor, event.action, event.target):
        if text is not None:
            text.encode("utf-8")  # no lone surrogate: storable text


def check_reject(reject: Reject) -> None:
    assert reject.reason.strip()
    for text in (reject.reason, reject.raw_record, reject.location):
        text.encode("utf-8")


@SETTINGS
@given(raw=records())
def test_every_record_maps_to_an_event_or_a_reject(raw: Any) -> None:
    for mapping in (MAPPING, UNMAPPED_ID):
        result = map_one(EventMapper(mapping, source_name="s", organization_id="org"), raw, "page 1, record 1")
        if isinstance(result, NormalizedEvent):
            check_event(result)
        else:
            assert isinstance(result, Reject)
            check_reject(result)
            assert result.location == "page 1, record 1"


@SETTINGS
@given(page=st.lists(records(), max_size=8))
def test_every_page_is_stored_whole_on_both_stores(stores: list[TraceStore], page: list[Any]) -> None:
    source = f"src{next(sources)}"
    events, rejects = EventMapper(MAPPING, source_name=source, organization_id="org").map_page(page, location="p")
    assert len(events) + len(rejects) == len(page)  # nothing dropped uncounted
    for event in events:
        check_event(event)
    for reject in rejects:
        check_reject(reject)
    keys = {e.source_event_id for e in events}
    hashes = {r.record_hash for r in rejects}
    for store in stores:
        result = store.write_events(events, run_id="r")
        assert (result.written, result.duplicates) == (len(keys), len(events) - len(keys))
        assert store.write_rejects(rejects, run_id="r") == len(hashes)
        assert store.count(source=source) == len(keys)
        assert store.count(source=source, rejected=True) == len(hashes)
        rows = {row["source_event_id"]: row for row in store.tail(source=source, limit=100)}
        for event in events:
            stored_id = event.source_event_id
            row = rows[stored_id]
            if row["raw_payload"] != event.raw_payload:
                continue  # a later duplicate of a key: the first one was kept
            assert FIXED_WIDTH.fullmatch(row["event_timestamp"])
            assert (row["tokens_input"], row["tokens_output"]) == (event.tokens_input, event.tokens_output)
            assert row["cost_usd"] == event.cost_usd
        integrity = store.integrity(source=source, run_id="r")
        assert integrity.invalid_rows == 0, integrity.invalid_examples


def test_the_strategies_reach_every_outcome() -> None:
    """The examples above are not all rejects: both outcomes and the odd reasons are exercised."""
    reasons: list[str] = []
    stored = 0

    @SETTINGS
    @given(raw=records())
    def collect(raw: Any) -> None:
        nonlocal stored
        result = map_one(EventMapper(MAPPING, source_name="s", organization_id=None), raw, "p")
        if isinstance(result, NormalizedEvent):
            stored += 1
        else:
            reasons.append(result.reason)

    collect()
    assert stored >= 5
    text = "\n".join(reasons)
    for expected in ("invalid Unicode", "NaN or Infinity", "out of range", "not an object", "matched nothing"):
        assert expected in text, expected


def test_stored_timestamps_keep_the_instant() -> None:
    """A spot check that the fixed-width text is the same instant as the input (not just well formed)."""
    mapper = EventMapper(MAPPING, source_name="s", organization_id=None)

    @SETTINGS
    @given(d=st.datetimes(min_value=datetime(1001, 1, 2), max_value=datetime(9998, 12, 30)), tz=offsets)
    def check(d: datetime, tz: timezone) -> None:
        event = map_one(mapper, {"id": "e", "at": d.replace(tzinfo=tz).isoformat()}, "p")
        assert isinstance(event, NormalizedEvent)
        assert event.event_timestamp == d.replace(tzinfo=tz).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    check()
