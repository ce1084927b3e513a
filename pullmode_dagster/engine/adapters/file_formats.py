"""File parsers for ``s3_polling``: NDJSON, CSV (header row) and JSON arrays, all streaming.

Each yields ``(number, record)`` or ``(number, ParseProblem)`` one record at a time; a bad record is a
problem for that record only, and a file that cannot be read on raises :class:`UnreadableFile`.
Design: docs/design/normalization.md#file-parsers
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from ..events.codec import NOT_PLAIN, decode_plain

CHUNK = 1 << 16

Parser = Literal["ndjson", "csv", "json-array"]
UNITS: dict[str, str] = {"ndjson": "line", "csv": "line", "json-array": "record"}

_READ_ERRORS = (EOFError, OSError, ValueError, zlib.error)
"""What reading a (gzip) stream raises when it is truncated or corrupt."""


@dataclass(frozen=True)
class ParseProblem:
    """A record that could not be parsed: why, and the raw text (as much as is kept)."""

    reason: str
    raw: str


class UnreadableFile(Exception):
    """The file cannot be read to its end (truncated, corrupt): the pull must fail."""


class _NotJSON(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, JSON has no such values."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(name)


_decoder = json.JSONDecoder(parse_constant=_no_constant)


def _problem_reason(exc: BaseException, what: str) -> str:
    """A reason for a decoding failure that is not a syntax error."""
    if isinstance(exc, RecursionError):
        return f"{what} is nested too deeply to parse"
    if isinstance(exc, _NotJSON):
        return f"{what} holds {exc}, which is not JSON"
    if "integer string conversion" in str(exc):
        return f"{what} holds a number too long to parse (over 4300 digits)"
    return f"{what} cannot be parsed: {exc}"


def _read(stream: BinaryIO, size: int) -> bytes:
    try:
        return stream.read(size)
    except _READ_ERRORS as exc:  # gzip: truncated stream, bad CRC, corrupt deflate data
        raise UnreadableFile(f"{type(exc).__name__}: {exc}") from None


def _lines(stream: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    """Lines without their terminators, chunk by chunk (no line is split, none is lost)."""
    pending = b""
    while True:
        data = _read(stream, chunk)
        if not data:
            break
        pending += data
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def _decode(line: bytes) -> str:
    return line.decode("utf-8-sig" if line.startswith(codecs.BOM_UTF8) else "utf-8").rstrip("\r")


def parse_ndjson(stream: BinaryIO, *, chunk: int = CHUNK) -> Iterator[tuple[int, Any]]:
    for number, item, _ in ndjson_records(stream, chunk=chunk):
        yield number, item


def ndjson_records(stream: BinaryIO, *, chunk: int = CHUNK) -> Iterator[tuple[int, Any, bool]]:
    """:func:`parse_ndjson`, and whether each record is plain JSON (:func:`~..events.codec.decode_json`), so
    the mapper writes its raw payload the fast way. A line msgspec cannot take as plain JSON is read
    the general way, which alone decides what is a problem and why."""
    for number, raw in enumerate(_lines(stream, chunk), start=1):
        if not raw.strip():
            continue
        try:
            record = decode_plain(raw)
        except NOT_PLAIN:
            pass
        else:
            yield number, record, True
            continue
        try:
            text = _decode(raw)
        except UnicodeDecodeError:
            yield number, ParseProblem("line is not UTF-8", raw.decode("utf-8", "replace").rstrip("\r")), False
            continue
        try:
            yield number, _decoder.decode(text), False
        except json.JSONDecodeError as exc:
            yield number, ParseProblem(f"malformed NDJSON line: {exc.msg} at column {exc.colno}", text), False
        except (ValueError, RecursionError) as exc:
            yield number, ParseProblem(_problem_reason(exc, "NDJSON line"), text), False


def parse_csv(stream: BinaryIO, *, chunk: int = CHUNK) -> Iterator[tuple[int, Any]]:
    """Rows as ``{header: value}``; empty cells are absent values (None), not empty strings.

    A row with a line that is not UTF-8 is a problem for that row only: the line is fed to the
    CSV reader decoded with U+FFFD replacements (so quoting stays in step) and the row is flagged."""
    row_lines: list[str] = []  # the physical lines of the row being read (the reader never reads ahead)
    bad = [False]  # the row being read has a line that is not UTF-8

    def text_lines() -> Iterator[str]:
        for line in _lines(stream, chunk):
            try:
                text = _decode(line)
            except UnicodeDecodeError:
                text = line.decode("utf-8", "replace").rstrip("\r")
                bad[0] = True
            row_lines.append(text)
            yield text + "\n"

    def raw_row() -> str:
        raw = "\n".join(row_lines)
        row_lines.clear()
        return raw

    reader = csv.reader(text_lines())
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise UnreadableFile(f"CSV header cannot be read: {exc}") from None
    if bad[0]:
        raise UnreadableFile("CSV header cannot be read: it is not UTF-8")
    row_lines.clear()
    width = len(header)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            bad[0] = False
            yield reader.line_num, ParseProblem(f"malformed CSV row: {exc}", raw_row())
            continue
        if bad[0]:
            bad[0] = False
            yield reader.line_num, ParseProblem("row is not UTF-8", raw_row())
            continue
        if not row:
            row_lines.clear()
            continue
        if len(row) != width:
            yield reader.line_num, ParseProblem(f"CSV row has {len(row)} columns, the header has {width}", raw_row())
            continue
        row_lines.clear()
        yield reader.line_num, {name: (value if value != "" else None) for name, value in zip(header, row, strict=True)}


_NUMBER_CHARS = frozenset("0123456789.eE+-")
"""Characters that may continue a number: one decoded up to one of them may be cut at a chunk end."""

_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SCALAR_END = re.compile(r"[,\]\s]")


def _value_end(text: str, pos: int, eof: bool) -> int | None:
    """Where the JSON value starting at ``pos`` ends, by its brackets and strings alone (no depth
    limit); None when it continues past the end of ``text``."""
    if text[pos] not in '[{"':
        match = _SCALAR_END.search(text, pos)
        return match.start() if match else (len(text) if eof else None)
    depth, i = 0, pos
    while True:
        match = _STRUCTURE.search(text, i)
        if match is None:
            return None
        char, i = match.group(), match.end()
        if char == '"':
            rest = _STRING_REST.match(text, i)
            if rest is None:
                return None
            i = rest.end()
        else:
            depth += 1 if char in "[{" else -1
        if depth == 0:
            return i


def parse_json_array(stream: BinaryIO, *, chunk: int = CHUNK) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, decoded one at a time from a sliding text buffer."""
    utf8 = codecs.getincrementaldecoder("utf-8-sig")()
    buffer, pos, eof = "", 0, False
    state = "start"  # start -> value -> after-value -> ... -> end
    index = 0

    def fill() -> bool:
        nonlocal buffer, pos, eof
        if eof:
            return False
        data = _read(stream, chunk)
        try:
            text = utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise UnreadableFile(f"file is not UTF-8: {exc.reason}") from None
        buffer, pos = buffer[pos:] + text, 0
        eof = not data
        return True

    def skip_ws() -> bool:
        """Advance past whitespace; False at the end of input."""
        nonlocal pos
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n":
                pos += 1
            if pos < len(buffer):
                return True
            if not fill():
                return False

    while True:
        if not skip_ws():
            if state in ("start", "end"):
                return
            raise UnreadableFile(f"JSON array ends early after element {index}")
        char = buffer[pos]
        if state == "start":
            if char != "[":
                raise UnreadableFile("the file is not a JSON array (it does not start with '[')")
            pos += 1
            state = "first"
        elif state in ("first", "value"):
            if char == "]" and state == "first":
                pos += 1
                state = "end"
                continue
            while True:
                try:
                    value, end = _decoder.raw_decode(buffer, pos)
                except json.JSONDecodeError as exc:
                    # Maybe the element continues in the next chunk; if not, the array is broken.
                    if fill():
                        continue
                    raise UnreadableFile(f"invalid JSON in element {index + 1}: {exc.msg}") from None
                except (ValueError, RecursionError) as exc:
                    # Well formed as far as it goes, but no record: skip it whole if it ends.
                    end = _value_end(buffer, pos, eof)
                    if end is None:
                        if fill():
                            continue
                        raise UnreadableFile(f"JSON array ends early in element {index + 1}") from None
                    value = ParseProblem(_problem_reason(exc, "element"), buffer[pos:end])
                    break
                # A number cut at the chunk end ("12" of "12.5", "1" of "1e5") decodes short: read on.
                if (
                    not eof
                    and buffer[pos] not in '{["'
                    and (end == len(buffer) or buffer[end] in _NUMBER_CHARS)
                    and fill()
                ):
                    continue
                break
            pos = end
            index += 1
            yield index, value
            state = "after"
        elif state == "after":
            pos += 1
            if char == ",":
                state = "value"
            elif char == "]":
                state = "end"
            else:
                raise UnreadableFile(f"expected ',' or ']' after element {index}, found {char!r}")
        else:
            raise UnreadableFile(f"unexpected data after the JSON array: {char!r}")


PARSERS = {"ndjson": parse_ndjson, "csv": parse_csv, "json-array": parse_json_array}


def parse(parser: Parser, stream: BinaryIO, *, chunk: int = CHUNK) -> Iterator[tuple[int, Any]]:
    return PARSERS[parser](stream, chunk=chunk)


def parse_records(parser: Parser, stream: BinaryIO, *, chunk: int = CHUNK) -> Iterator[tuple[int, Any, bool]]:
    """:func:`parse`, and whether each record is plain JSON: only NDJSON says so (CSV rows and array
    elements take the general path)."""
    if parser == "ndjson":
        return ndjson_records(stream, chunk=chunk)
    return ((number, item, False) for number, item in parse(parser, stream, chunk=chunk))
