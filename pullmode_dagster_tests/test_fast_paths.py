"""The engine's fast paths give exactly what the general paths give.

Issue #13 made the pull loop several times faster: pages decoded by msgspec, raw payloads written by
msgspec, the event mapping compiled into one generated function with each rule's common case
inlined, common timestamps rewritten as text, events kept as tuples and written many rows per
statement. Each is checked here against the general way it replaced, on arbitrary input.
"""

from __future__ import annotations

import io
import json
import math
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pullmode_dagster.engine.adapters.file_formats import ParseProblem, ndjson_records
from pullmode_dagster.engine.events.codec import ReprFloat, decode_json, dumps, plain_payloads
from pullmode_dagster.engine.events.jsonpath import MISSING, compile_path
from pullmode_dagster.engine.events.mapping import EventMapper, EventMapping
from pullmode_dagster.engine.events.model import EVENT_FIELDS, EventRows, NormalizedEvent
from pullmode_dagster.engine.events.rejects import Reject, raw_text
from pullmode_dagster.engine.events.rules import (
    ROW_NAMESPACE,
    ROW_RULES,
    NormalizationError,
    format_timestamp,
    invalid_unicode_reason,
    is_utf8,
    normalize_cost,
    normalize_count,
    normalize_event_id,
    normalize_row,
    normalize_text,
    normalize_timestamp,
    parse_timestamp,
    stable_event_id,
    unserializable_reason,
)
from pullmode_dagster.engine.store import SqliteTraceStore
from pullmode_dagster.engine.store.base import EVENT_COLUMNS

from .fakes import map_one
from .test_normalization_properties import MAPPING, SETTINGS, UNMAPPED_ID, iso_texts, json_like, records

ODD_PATHS = EventMapping(
    source_event_id="$.usage.in",
    event_timestamp="$.extra[0]",
    actor="$.extra[-1]",
    action="$..email",  # the general evaluator, called from the generated code
    cost_usd="$['cost']",
    tokens_output="$.usage.out",
)
MAPPINGS = [MAPPING, UNMAPPED_ID, ODD_PATHS]


def reference(mapping: EventMapping, raw: Any) -> tuple[Any, ...]:
    """The general mapping as it was: ``dumps``, a JSONPath walk per field, ``normalize_row`` with
    the timestamp parsed into a datetime; an event row, or (reason, raw text)."""
    try:
        payload = dumps(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        return unserializable_reason(exc), raw_text(raw)
    if not is_utf8(payload):
        return invalid_unicode_reason(payload), raw_text(raw)
    try:
        if not isinstance(raw, dict):
            raise NormalizationError(f"record is not an object: {type(raw).__name__}")
        paths = {f: compile_path(p) for f in EventMapping.FIELDS if (p := getattr(mapping, f)) is not None}
        ts_path, id_path = paths.pop("event_timestamp"), paths.pop("source_event_id", None)
        timestamp = ts_path.first(raw)
        if timestamp is MISSING or timestamp is None:
            raise NormalizationError(f"event_timestamp: {ts_path.text} matched nothing")
        if id_path is None:
            event_id = stable_event_id(raw)
        else:
            event_id = id_path.first(raw)
            if event_id is MISSING or event_id is None:
                raise NormalizationError(f"source_event_id: {id_path.text} matched nothing")
        values = {f: None if (v := p.first(raw)) is MISSING else v for f, p in paths.items()}
        # The rules one by one in their order, no common case inlined (ROW_RULES' generated code does that).
        return (
            "s",
            normalize_event_id(event_id),
            format_timestamp(parse_timestamp(timestamp)),
            *(normalize_text(values.get(f), f) for f in ("actor", "action", "target")),
            normalize_cost(values.get("cost_usd")),
            *(normalize_count(f, values.get(f)) for f in ("tokens_input", "tokens_output")),
            payload,
            "org",
        )
    except NormalizationError as exc:
        return str(exc), payload
    except RecursionError:
        return "record is nested too deeply to normalize", payload
    except Exception as exc:
        return f"record cannot be normalized: {type(exc).__name__}: {exc}", payload


def as_tuple(result: NormalizedEvent | Reject) -> tuple[Any, ...]:
    if isinstance(result, Reject):
        return result.reason, result.raw_record
    return tuple(getattr(result, f) for f in EVENT_FIELDS)


def expected(mapping: EventMapping, raw: Any) -> tuple[Any, ...]:
    """``reference``, with a reject's text as a Reject stores it."""
    result = reference(mapping, raw)
    return result if len(result) == len(EVENT_FIELDS) else as_tuple(Reject("s", *result, "p"))


MAPPERS = [EventMapper(m, source_name="s", organization_id="org") for m in MAPPINGS]


@SETTINGS
@given(raw=records())
def test_the_compiled_mapping_gives_what_the_general_mapping_gives(raw: Any) -> None:
    if depth(raw) > 400:
        return  # whether json gives up near the recursion limit depends on the caller's stack
    for mapping, mapper in zip(MAPPINGS, MAPPERS, strict=True):
        assert as_tuple(map_one(mapper, raw, "p")) == expected(mapping, raw)


def depth(value: Any) -> int:
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict | list):
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def encodings(raw: Any) -> list[bytes]:
    """``raw`` as a server might send it: escaped or not, spaced or compact. Records nested near the
    recursion limit are left out: whether ``json`` gives up on them depends on the caller's stack."""
    if depth(raw) > 400:
        return []
    out = []
    for ensure_ascii in (True, False):
        try:
            text = json.dumps(raw, ensure_ascii=ensure_ascii, separators=(",", ":") if ensure_ascii else None)
        except (ValueError, RecursionError):  # an integer of over 4300 digits, too deep
            continue
        out.append(text.encode("utf-8", "surrogatepass"))
    return out


def tokens(value: Any) -> list[tuple[type, str]]:
    """``value`` as a flat list of (type, scalar repr or bracket), without recursion (records may
    nest deeper than ``repr`` goes): equal lists mean equal values, types, key order and NaN."""
    out: list[tuple[type, str]] = []
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            out.append((dict, str(len(item))))
            todo.extend(reversed([x for kv in item.items() for x in kv]))
        elif isinstance(item, list):
            out.append((list, str(len(item))))
            todo.extend(reversed(item))
        else:
            out.append((type(item), repr(item)))
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, a ReprFloat standing for the float it is."""
    return [(float if t is ReprFloat else t, r) for t, r in tokens(a)] == tokens(b)


floats_anywhere = st.recursive(
    st.one_of(st.floats(), st.integers(), st.text(max_size=4), st.none()),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=3), children)),
    max_leaves=10,
)


@SETTINGS
@given(raw=st.one_of(records(), json_like, floats_anywhere))
def test_decoded_pages_and_their_payloads_are_what_the_stdlib_gives(raw: Any) -> None:
    for data in encodings(raw):
        try:
            general = json.loads(data)
        except RecursionError:
            continue
        doc, plain = decode_json(data)
        assert same(doc, general)
        if plain:  # only values that the fast encoder writes as dumps does
            assert is_utf8(dumps(doc))  # no NaN or Infinity (dumps raises), no lone surrogate
            for kind, text in tokens(doc):  # the floats msgspec writes as repr does, and the others
                assert kind is not float or ("e" not in text and text not in ("inf", "-inf", "nan"))
                assert kind is not ReprFloat or "e" in text
        pages = ([doc], doc if isinstance(doc, list) else [])
        references = ([general], general if isinstance(general, list) else [])  # the reference reads json's values
        for page, reference_page in zip(pages, references, strict=True):
            payloads = plain_payloads(page) if plain else [None] * len(page)
            for record, payload in zip(page, payloads, strict=True):
                assert payload is None or payload == dumps(record)
                assert payload is not None or not plain or type(record) is not dict
            for mapping, mapper in zip(MAPPINGS, MAPPERS, strict=True):
                rows, rejects = mapper.map_rows(page, location="p", plain=plain)
                results = [tuple(r) for r in rows.rows] + [(r.reason, r.raw_record) for r in rejects]
                assert sorted(results, key=repr) == sorted((expected(mapping, r) for r in reference_page), key=repr)


@pytest.mark.parametrize(
    "value", [0.0, -0.0, 1e-4, 0.25, 123.456, 9999999999999998.0, -1e-4, 1e-05, 4.5e-05, 1e16, 1.5e300, 5e-324, -1e-07]
)
def test_every_finite_float_keeps_the_page_plain_and_is_written_as_python_writes_it(value: float) -> None:
    data = json.dumps({"id": "e1", "cost": value}).encode()
    doc, plain = decode_json(data)
    assert plain and same(doc, json.loads(data)) and plain_payloads([doc]) == [dumps(doc)]
    assert (type(doc["cost"]) is ReprFloat) == ("e" in repr(value))


@pytest.mark.parametrize("text", ["1e999", "-1e400", "1" * 400 + ".0"])
def test_a_number_beyond_the_float_range_makes_its_page_general(text: str) -> None:
    data = f'{{"id": "e1", "cost": {text}}}'.encode()
    doc, plain = decode_json(data)
    assert not plain and same(doc, json.loads(data))


def test_a_repr_float_is_the_float_it_holds() -> None:
    doc, _ = decode_json(b'{"cost": 4.5e-05}')
    cost = doc["cost"]
    assert cost == 4.5e-05 and hash(cost) == hash(4.5e-05) and repr(cost) == str(cost) == "4.5e-05"
    assert json.dumps(doc) == '{"cost": 4.5e-05}'
    mapped = EventMapper(EventMapping(event_timestamp="$.at", cost_usd="$.cost"), source_name="s", organization_id=None)
    event = map_one(mapped, {"at": "2026-03-01T00:00:00Z", **doc}, "p", plain=True)
    assert isinstance(event, NormalizedEvent) and type(event.cost_usd) is float and event.cost_usd == 4.5e-05


def test_deep_records_take_the_general_path() -> None:
    deep: Any = 1
    for _ in range(600):
        deep = [deep]
    assert plain_payloads([{"x": deep}, {"x": 1}, [1]]) == [None, '{"x":1}', None]


@SETTINGS
@given(
    value=st.one_of(
        iso_texts,
        st.from_regex(
            r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?"
            r"(Z|z|\+00:00|[+-][0-9]{2}:[0-9]{2})?\Z"
        ),
        st.from_regex(r"\A\s?(1[0-9]{3}|9999|0[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T23:59:5[89]Z?\s?\Z"),
    )
)
def test_the_timestamp_fast_path_gives_what_parsing_gives(value: str) -> None:
    def outcome(normalize: Any) -> str:
        try:
            return normalize(value)
        except NormalizationError as exc:
            return f"rejected: {exc}"

    assert outcome(normalize_timestamp) == outcome(lambda v: format_timestamp(parse_timestamp(v)))


def test_an_event_row_is_the_event_in_the_store_column_order() -> None:
    assert EVENT_COLUMNS[: len(EVENT_FIELDS)] == EVENT_FIELDS
    event = NormalizedEvent("s", "e1", "2026-03-01T00:00:00.000000Z", "a", "b", "c", 0.5, 1, 2, "{}", "org")
    rows = EventRows([tuple(getattr(event, f) for f in EVENT_FIELDS)])  # type: ignore[list-item]
    assert len(rows) == 1 and rows[0] == event and list(rows) == [event] and rows[:1] == [event]


@pytest.mark.parametrize("n", [0, 1, 99, 100, 101, 257, 2000])
def test_many_rows_per_statement_write_what_one_row_per_statement_writes(tmp_path: Path, n: int) -> None:
    """Duplicates inside a batch and against earlier batches are skipped alike, in order."""

    def event(i: int, version: int) -> NormalizedEvent:
        at = "2026-03-01T00:00:00.000000Z"
        return NormalizedEvent("s", f"e{i % 150}", at, f"v{version}", None, None, 0.0, i, 0, "{}")

    with SqliteTraceStore(tmp_path / "s.db") as store:
        first = store.write_events([event(i, 1) for i in range(n)], run_id="r1")
        again = store.write_events(EventRows([as_row(event(i, 2)) for i in range(n + 10)]), run_id="r2")
        rows = [(r["source_event_id"], r["actor"], r["tokens_input"]) for r in store.tail(limit=10**6)]
    unique = min(n, 150)
    assert (first.written, first.duplicates) == (unique, n - unique)
    new = min(n + 10, 150) - unique
    assert (again.written, again.duplicates) == (new, n + 10 - new)
    assert rows == [(f"e{i}", "v1", i) for i in range(unique)] + [
        (f"e{i}", "v2", i) for i in range(unique, unique + new)
    ]


def as_row(event: NormalizedEvent) -> tuple[Any, ...]:
    return tuple(getattr(event, f) for f in EVENT_FIELDS)


def test_the_float_bounds_are_where_the_spellings_part() -> None:
    """``repr`` switches to exponent notation below 1e-4 and from 1e16: the bounds of "plain"."""
    assert "e" not in repr(1e-4) and "e" in repr(math.nextafter(1e-4, 0))
    assert "e" not in repr(math.nextafter(1e16, 0)) and "e" in repr(1e16)


PROBLEM = object()


def general_ndjson(data: bytes) -> list[tuple[int, Any]]:
    """NDJSON read the general way only: each line decoded as UTF-8 and by ``json``, NaN refused."""

    def no_constant(name: str) -> Any:
        raise ValueError(name)

    out: list[tuple[int, Any]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8").rstrip("\r")
            out.append((number, json.loads(text, parse_constant=no_constant)))
        except (ValueError, RecursionError):
            out.append((number, PROBLEM))  # its reason is the general path's own
    return out


ODD_LINES = [b'{"id": NaN}', b'\xef\xbb\xbf{"id": "bom"}', b'{"id": "\\ud800"}', b'{"id": "\xff"}', b"{oops", b"[1, 2]"]


@SETTINGS
@given(
    raws=st.lists(st.one_of(records(), json_like, floats_anywhere), max_size=5), odd=st.sets(st.sampled_from(ODD_LINES))
)
def test_ndjson_lines_decoded_fast_are_what_the_general_way_reads(raws: list[Any], odd: set[bytes]) -> None:
    lines = [line for raw in raws for line in encodings(raw)[:1]] + sorted(odd)
    data = b"\r\n".join(lines) + b"\n"
    fast = list(ndjson_records(io.BytesIO(data), chunk=7))
    general = general_ndjson(data)
    assert [number for number, _, _ in fast] == [number for number, _ in general]
    for (_, item, plain), (_, value) in zip(fast, general, strict=True):
        assert isinstance(item, ParseProblem) == (value is PROBLEM)
        if value is not PROBLEM:
            assert same(item, value)
        if plain:  # the fast payloads and mapping give what the general ones give
            for mapper in MAPPERS:
                fast_rows, fast_rejects = mapper.map_rows([item], location="p", plain=True)
                rows, rejects = mapper.map_rows([value], location="p")
                assert [tuple(r) for r in fast_rows.rows] == [tuple(r) for r in rows.rows]
                assert [(r.reason, r.raw_record) for r in fast_rejects] == [(r.reason, r.raw_record) for r in rejects]


def test_usual_ndjson_lines_take_the_fast_path_and_odd_ones_the_general_path() -> None:
    data = b'{"id": "e1", "cost": 0.25, "at": "2026-03-01T10:00:00Z"}\r\n\n{"id": "e2", "cost": 1e-05}\n' + ODD_LINES[0]
    parsed = list(ndjson_records(io.BytesIO(data)))
    assert [(number, plain) for number, _, plain in parsed] == [(1, True), (3, True), (4, False)]
    assert parsed[1][1] == {"id": "e2", "cost": 1e-05} and isinstance(parsed[2][1], ParseProblem)


def evaluated(expression: str, v: Any) -> Any:
    """The value of generated ``expression`` over ``v``, or the reason it raises."""
    try:
        value = eval(expression, dict(ROW_NAMESPACE), {"v": v})
    except NormalizationError as exc:
        return ("reason", str(exc))
    return ("value", type(value), repr(value))  # repr: -0.0 is not 0.0 here


@SETTINGS
@given(v=st.one_of(json_like, st.floats().map(ReprFloat), st.integers(min_value=-(2**64), max_value=2**64)))
def test_each_rules_common_case_gives_what_the_rule_gives(v: Any) -> None:
    """ROW_RULES' one table: a field's inlined common case and its rule give the same value or reason."""
    for rule in ROW_RULES:
        inlined, called = evaluated(rule.expression("v"), v), evaluated(rule.rule.format(v="v"), v)
        assert inlined == called, rule.field


def test_the_table_lists_the_mapped_fields_in_order() -> None:
    assert tuple(rule.field for rule in ROW_RULES) == EventMapping.FIELDS


def test_a_traceback_through_generated_code_shows_its_line() -> None:
    """The generated code has a name and its lines in tracebacks, not an anonymous ``exec``."""
    with pytest.raises(NormalizationError) as raised:
        normalize_row(source_name="s", organization_id=None, raw_payload="{}", source_event_id="e", event_timestamp="x")
    text = "".join(traceback.format_exception(raised.value))
    assert "<pullmode_dagster normalize_row #" in text and "normalize_timestamp(event_timestamp)," in text

    class Stop(BaseException):  # passes the mapping's last resort, which turns an Exception into a reject
        pass

    def stop(value: Any) -> str:
        raise Stop

    mapper = EventMapper(EventMapping(event_timestamp="$.at"), source_name="tb", organization_id=None)
    mapper._fields.__globals__["normalize_timestamp"] = stop
    with pytest.raises(Stop) as stopped:
        mapper.map_rows([{"at": "2026-03-01T00:00:00Z"}], location="p")
    text = "".join(traceback.format_exception(stopped.value))
    assert "<eventMapping of tb #" in text and "normalize_timestamp(v1)," in text
