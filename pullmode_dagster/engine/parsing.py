"""File parsers for ``s3_polling``: NDJSON, CSV (header row) and JSON arrays, all streaming.

Each parser reads a binary stream in chunks and yields ``(number, record)`` or
``(number, ParseProblem)`` one record at a time (``number`` counts :data:`UNITS` of the parser: lines,
or array elements), so a 1 GB file costs one chunk and one record of memory. A bad NDJSON line or
CSV row is a problem for that record only; a JSON array that stops parsing cannot be resynchronized
and raises :class:`UnreadableFile`, like a truncated gzip stream.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

CHUNK = 1 << 16

Parser = Literal["ndjson", "csv", "json-array"]
UNITS: dict[str, str] = {"ndjson": "line", "csv": "line", "json-array": "record"}


@dataclass(frozen=True)
class ParseProblem:
    """A record that could not be parsed: why, and the raw text (as much as is kept)."""

    reason: str
    raw: str


class UnreadableFile(Exception):
    """The file cannot be read to its end (truncated, corrupt): the pull must fail."""


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines without their terminators, chunk by chunk (no line is split, none is lost)."""
    pending = b""
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (EOFError, OSError, ValueError) as exc:  # gzip: truncated stream, bad CRC
            raise UnreadableFile(f"{type(exc).__name__}: {exc}") from None
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def _decode(line: bytes) -> str:
    return line.decode("utf-8-sig" if line.startswith(codecs.BOM_UTF8) else "utf-8").rstrip("\r")


def parse_ndjson(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    for number, raw in enumerate(_lines(stream), start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(_decode(raw))
        except UnicodeDecodeError:
            yield number, ParseProblem("line is not UTF-8", raw.decode("utf-8", "replace"))
        except json.JSONDecodeError as exc:
            yield number, ParseProblem(f"malformed NDJSON line: {exc.msg} at column {exc.colno}", _decode(raw))


def parse_csv(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    """Rows as ``{header: value}``; empty cells are absent values (None), not empty strings."""
    text_lines = (_decode(line) + "\n" for line in _lines(stream))
    reader = csv.reader(text_lines)
    try:
        header = next(reader)
    except StopIteration:
        return
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UnreadableFile(f"CSV header cannot be read: {exc}") from None
    width = len(header)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            yield reader.line_num + 1, ParseProblem("row is not UTF-8", "")
            continue
        except csv.Error as exc:
            yield reader.line_num, ParseProblem(f"malformed CSV row: {exc}", "")
            continue
        if not row:
            continue
        if len(row) != width:
            raw = ",".join(row)
            yield reader.line_num, ParseProblem(f"CSV row has {len(row)} columns, the header has {width}", raw)
            continue
        yield reader.line_num, {name: (value if value != "" else None) for name, value in zip(header, row, strict=True)}


def parse_json_array(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, decoded one at a time from a sliding text buffer."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")()
    buffer, pos, eof = "", 0, False
    state = "start"  # start -> value -> after-value -> ... -> end
    index = 0

    def fill() -> bool:
        nonlocal buffer, pos, eof
        if eof:
            return False
        try:
            chunk = stream.read(CHUNK)
        except (EOFError, OSError, ValueError) as exc:
            raise UnreadableFile(f"{type(exc).__name__}: {exc}") from None
        try:
            text = utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise UnreadableFile(f"file is not UTF-8: {exc.reason}") from None
        buffer, pos = buffer[pos:] + text, 0
        eof = not chunk
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
                    value, end = decoder.raw_decode(buffer, pos)
                except json.JSONDecodeError as exc:
                    # Maybe the element continues in the next chunk; if not, the array is broken.
                    if fill():
                        continue
                    raise UnreadableFile(f"invalid JSON in element {index + 1}: {exc.msg}") from None
                # A number or literal cut at the chunk boundary would decode short: read on.
                if end == len(buffer) and not eof and buffer[pos] not in '{["' and fill():
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


def parse(parser: Parser, stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    return PARSERS[parser](stream)
