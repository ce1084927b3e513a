"""The streaming file parsers, driven directly: every chunk boundary, bad records, unreadable files."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pullmode_dagster.engine.adapters.file_formats import (
    CHUNK,
    ParseProblem,
    UnreadableFile,
    parse,
    parse_csv,
    parse_json_array,
    parse_ndjson,
)

ParserFn = Callable[..., Iterator[tuple[int, Any]]]
BOM = b"\xef\xbb\xbf"


def run(parser: ParserFn, data: bytes, chunk: int = CHUNK) -> list[tuple[int, Any]]:
    return list(parser(io.BytesIO(data), chunk=chunk))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def every_chunk_size(parser: ParserFn, data: bytes, expected: list[tuple[int, Any]]) -> None:
    """The same records whatever the chunk size, so whatever byte every chunk boundary falls on."""
    for chunk in range(1, len(data) + 1):
        assert run(parser, data, chunk) == expected, f"chunk size {chunk}"


# --- JSON arrays ---------------------------------------------------------------------------------

ARRAY = (
    BOM
    + b"\r\n [\r\n  1 , -2.5e+3,12345.678,0,-0,1E-2, 1e5 ,-0.5,true ,false,null,\n"
    + '\t"a\\"b\\\\c\\u00e9\\ud83d\\ude00 é😀\\n/\\/", '.encode()
    + '{"k": [1, {"x": null}], "é": "ü", "e": []}, [], {}, [[ ]], "", 123456789012345678901234567890\r\n]\r\n'.encode()
)


def test_json_array_at_every_chunk_boundary() -> None:
    expected = json.loads(ARRAY.decode("utf-8-sig"))
    assert len(expected) == 18  # the document is what the test thinks it is
    every_chunk_size(parse_json_array, ARRAY, list(enumerate(expected, start=1)))


def test_json_array_numbers_cut_at_the_chunk_end_are_read_whole() -> None:
    # The bug: a chunk ending at '.', 'e', '-' or '+' decoded "12345" and then failed on ".678".
    values = [12345.678 + i for i in range(20000)]
    assert [v for _, v in run(parse_json_array, json.dumps(values).encode())] == values
    for number in ("-1.5e-7", "2E+10", "-0", "12345.678", "1e5"):
        doc = f"[{number},{number}]".encode()
        for chunk in range(1, len(doc) + 1):
            assert run(parse_json_array, doc, chunk) == [(1, json.loads(number)), (2, json.loads(number))]


def test_json_array_empty_and_whitespace() -> None:
    assert run(parse_json_array, b"") == []
    assert run(parse_json_array, b" \r\n") == []
    every_chunk_size(parse_json_array, BOM + b" [ \n ] \n", [])


def test_json_array_elements_that_cannot_be_records_are_problems_and_the_rest_is_read() -> None:
    deep = nested(1500)
    doc = f'[1, NaN, {deep}, {{"a": [Infinity]}}, -Infinity, {"9" * 5000}, {{"s": "]" }}, 2]'.encode()
    expected = [
        (1, 1),
        (2, ParseProblem("element holds NaN, which is not JSON", "NaN")),
        (3, ParseProblem("element is nested too deeply to parse", deep)),
        (4, ParseProblem("element holds Infinity, which is not JSON", '{"a": [Infinity]}')),
        (5, ParseProblem("element holds -Infinity, which is not JSON", "-Infinity")),
        (6, ParseProblem("element holds a number too long to parse (over 4300 digits)", "9" * 5000)),
        (7, {"s": "]"}),
        (8, 2),
    ]
    for chunk in (1, 2, 3, 7, 64, 1000, CHUNK):
        assert run(parse_json_array, doc, chunk) == expected, chunk


def test_a_deep_element_with_brackets_in_strings_is_skipped_exactly() -> None:
    deep = "[" * 1200 + '"]]\\"]"' + "]" * 1200
    doc = f'[{deep}, "after"]'.encode()
    for chunk in (1, 5, 100, CHUNK):
        result = run(parse_json_array, doc, chunk)
        assert result == [(1, ParseProblem("element is nested too deeply to parse", deep)), (2, "after")]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b'{"a": 1}', "not a JSON array"),
        (b"[1] x", "unexpected data after the JSON array"),
        (b"[1, tru]", "invalid JSON in element 2"),
        (b"[1 2]", "expected ',' or ']' after element 1"),
        (b"[1,]", "invalid JSON in element 2"),
        (b"[1, 2", "ends early after element 2"),
        (b'[1, "ab', "invalid JSON in element 2"),
        (b"[\xff]", "not UTF-8"),
        (b"[" + nested(1500).encode()[:-1], "ends early in element 1"),
    ],
)
def test_json_array_that_stops_parsing_is_unreadable(doc: bytes, message: str) -> None:
    for chunk in (1, 3, CHUNK):
        with pytest.raises(UnreadableFile, match=message):
            run(parse_json_array, doc, chunk)


def test_every_truncation_of_a_json_array_is_unreadable() -> None:
    start = ARRAY.index(b"[")
    for cut in range(len(ARRAY.rstrip())):
        if cut <= start:
            assert run(parse_json_array, ARRAY[:cut], 7) == [], cut  # no array begun: an empty file
        else:
            with pytest.raises(UnreadableFile):
                run(parse_json_array, ARRAY[:cut], 7)


# --- NDJSON --------------------------------------------------------------------------------------

NDJSON = (
    BOM
    + '{"a": 1, "s": "é😀\\n", "n": -2.5e+3}\r\n'.encode()
    + b"\r\n"
    + b"[1, 2.5e-3, true, false, null]\n"
    + b"{not json}\n"
    + b'\xff{"a": 2}\n'
    + b'{"n": NaN}\n'
    + nested(1100).encode()
    + b"\n"
    + b'  {"b": "x\\u00e9"}  \n'
    + b"12345.678\n"
    + b"-12.5e+2"
)
NDJSON_EXPECTED = [
    (1, {"a": 1, "s": "é😀\n", "n": -2500.0}),
    (3, [1, 0.0025, True, False, None]),
    (
        4,
        ParseProblem(
            "malformed NDJSON line: Expecting property name enclosed in double quotes at column 2", "{not json}"
        ),
    ),
    (5, ParseProblem("line is not UTF-8", '\ufffd{"a": 2}')),
    (6, ParseProblem("NDJSON line holds NaN, which is not JSON", '{"n": NaN}')),
    (7, ParseProblem("NDJSON line is nested too deeply to parse", nested(1100))),
    (8, {"b": "xé"}),
    (9, 12345.678),
    (10, -1250.0),
]


def test_ndjson_at_every_chunk_boundary() -> None:
    every_chunk_size(parse_ndjson, NDJSON, NDJSON_EXPECTED)


def test_ndjson_bad_lines_are_problems_for_that_line_only() -> None:
    lines = [b'{"i": 0}', b"\xc3\x28", b'{"i": 1}', b'{"i": Infinity}', b'{"i": 2}', b"[" * 3000, b'{"i": 3}']
    result = run(parse_ndjson, b"\n".join(lines))
    assert [(n, v) for n, v in result if not isinstance(v, ParseProblem)] == [
        (1, {"i": 0}),
        (3, {"i": 1}),
        (5, {"i": 2}),
        (7, {"i": 3}),
    ]
    assert [(n, v.reason.split(":")[0]) for n, v in result if isinstance(v, ParseProblem)] == [
        (2, "line is not UTF-8"),
        (4, "NDJSON line holds Infinity, which is not JSON"),
        (6, "NDJSON line is nested too deeply to parse"),  # the depth limit comes before the missing ']'
    ]


# --- CSV -----------------------------------------------------------------------------------------

CSV = (
    BOM
    + b"id,name,note\r\n"
    + "1,Zoë,plain\r\n".encode()
    + b'2,"a, b","multi\r\nline"\r\n'
    + b'3,,"say ""hi"""\r\n'
    + b"\r\n"
    + b"4,\xff\xfe,x\r\n"
    + b"5,only-two\r\n"
    + '6,😀,"end"'.encode()
)
CSV_EXPECTED = [
    (2, {"id": "1", "name": "Zoë", "note": "plain"}),
    (4, {"id": "2", "name": "a, b", "note": "multi\nline"}),
    (5, {"id": "3", "name": None, "note": 'say "hi"'}),
    (7, ParseProblem("row is not UTF-8", "4,\ufffd\ufffd,x")),
    (8, ParseProblem("CSV row has 2 columns, the header has 3", "5,only-two")),
    (9, {"id": "6", "name": "😀", "note": "end"}),
]


def test_csv_at_every_chunk_boundary() -> None:
    every_chunk_size(parse_csv, CSV, CSV_EXPECTED)


def test_a_csv_row_that_is_not_utf8_does_not_end_the_file() -> None:
    # Before: the decode error escaped the line generator feeding csv.reader, which ended it, and
    # every row after the bad one was silently lost.
    rows = [b"id,v", b"1,a", b"2,\xff", b"3,c", b'4,"x\n\xfe\ny"', b"5,e"]
    result = run(parse_csv, b"\n".join(rows) + b"\n")
    assert [n for n, v in result if not isinstance(v, ParseProblem)] == [2, 4, 8]
    assert [v["id"] for n, v in result if not isinstance(v, ParseProblem)] == ["1", "3", "5"]
    assert [(n, v) for n, v in result if isinstance(v, ParseProblem)] == [
        (3, ParseProblem("row is not UTF-8", "2,\ufffd")),
        (7, ParseProblem("row is not UTF-8", '4,"x\n\ufffd\ny"')),  # a row of lines 5-7
    ]


def test_a_malformed_csv_row_is_a_problem_and_the_next_rows_are_read() -> None:
    huge = "x" * 140_000  # over csv's field size limit
    data = f"id,v\n1,a\n2,{huge}\n3,c\n".encode()
    result = run(parse_csv, data)
    assert result[0] == (2, {"id": "1", "v": "a"})
    assert result[1][0] == 3 and isinstance(result[1][1], ParseProblem)
    assert result[1][1].reason.startswith("malformed CSV row: field larger than field limit")
    assert result[1][1].raw == f"2,{huge}"
    assert result[2] == (4, {"id": "3", "v": "c"})


def test_csv_header_only_or_empty() -> None:
    assert run(parse_csv, b"") == []
    assert run(parse_csv, b"id,v\r\n") == []


def test_csv_header_that_is_not_utf8_is_unreadable() -> None:
    with pytest.raises(UnreadableFile, match="CSV header cannot be read: it is not UTF-8"):
        run(parse_csv, b"id,\xff\n1,2\n")


# --- gzip and the dispatcher ---------------------------------------------------------------------

GZIP_CASES = [("json-array", ARRAY), ("ndjson", NDJSON), ("csv", CSV)]


@pytest.mark.parametrize(("parser", "data"), GZIP_CASES, ids=[p for p, _ in GZIP_CASES])
def test_gzip_streams_parse_like_plain_ones(parser: str, data: bytes) -> None:
    expected = list(parse(parser, io.BytesIO(data)))  # type: ignore[arg-type]
    packed = gzip.compress(data)
    for chunk in (1, 2, 5, 17, 256, CHUNK):
        stream = gzip.GzipFile(fileobj=io.BytesIO(packed), mode="rb")
        assert list(parse(parser, stream, chunk=chunk)) == expected, chunk  # type: ignore[arg-type]


@pytest.mark.parametrize(("parser", "data"), GZIP_CASES, ids=[p for p, _ in GZIP_CASES])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_gzip_stream_is_unreadable(parser: str, data: bytes, damage: str) -> None:
    packed = gzip.compress(data * 50)
    if damage == "truncated":
        packed = packed[: len(packed) // 2]
    else:
        middle = len(packed) // 2
        packed = packed[:middle] + bytes(b ^ 0xFF for b in packed[middle : middle + 16]) + packed[middle + 16 :]
    stream = gzip.GzipFile(fileobj=io.BytesIO(packed), mode="rb")
    with pytest.raises(UnreadableFile):
        list(parse(parser, stream, chunk=64))  # type: ignore[arg-type]
