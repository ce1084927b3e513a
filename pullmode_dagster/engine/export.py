"""``pullmode export``: the stored events of one source, in a time window, to a Parquet, CSV or NDJSON file.

Written a batch at a time (memory stays flat) under a temporary name, renamed at the end.
Design: docs/design/exports-and-arrow.md#export
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pyarrow as pa
import pyarrow.compute as pc

from .declare.loading import one_line
from .declare.models import DATE_RANGE_PROBLEM, in_date_range
from .errors import PullmodeError
from .events.model import TIMESTAMP_FORMAT
from .store.arrow import SCHEMA, batch_reader
from .store.base import TraceStore
from .store.schema import EVENT_SCHEMA

Format = Literal["parquet", "csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("parquet", "csv", "ndjson")
EXTENSIONS: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
"""The format a file's extension implies when ``--format`` is not given; any other extension is Parquet."""

EXPORT_BATCH_ROWS = 5_000
"""Rows read, converted and written at a time (a Parquet row group each). While a batch is Python
objects it costs ~3 KB a row, on top of ~140 MB of loaded code (Python, the CLI, pyarrow): 5,000
keeps a 1M-event export near 165 MB resident on SQLite, 175 MB on Postgres (10,000: 175 and 190)."""

DICTIONARY_COLUMNS = ("source_name", "actor", "action", "target", "organization_id", "run_id")
"""Parquet dictionary-encodes the columns with few distinct values only: ids, timestamps and payloads
would fill a dictionary per row group and then fall back to plain anyway (zstd does the rest)."""

_TIMESTAMP_COLUMNS = [i for i, c in enumerate(EVENT_SCHEMA) if c.kind == "timestamp"]
TEXT_SCHEMA = pa.schema([f.with_type(pa.string()) if pa.types.is_timestamp(f.type) else f for f in SCHEMA])
"""The events as CSV and NDJSON hold them: timestamps as text."""


@dataclass(frozen=True)
class ExportResult:
    """Events written, and the file's size in bytes."""

    rows: int
    bytes: int


def format_for(path: Path, fmt: str | None) -> Format:
    """``fmt`` if given, else what the extension says, else Parquet (the typed, compact default)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise PullmodeError(f"unknown export format {fmt!r} (use one of: {', '.join(FORMATS)})")
        return fmt
    return EXTENSIONS.get(path.suffix.lower(), "parquet")


def parse_time(value: str, *, option: str) -> datetime:
    """An ISO 8601 date (``2026-03-01``: midnight) or date-time (``2026-03-01T10:00:00Z``, any offset) as
    an aware UTC datetime; naive means UTC, as everywhere in the engine. The range is ``startDate``'s
    (a year of the wrong century is a typo), and is said as such rather than as a bad format."""
    shown = one_line(repr(value), limit=80)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PullmodeError(
            f"{option}: not an ISO 8601 date or date-time: {shown} (e.g. 2026-03-01 or 2026-03-01T10:00:00Z)"
        ) from None
    instant = in_date_range(parsed)
    if instant is None:
        raise PullmodeError(f"{option}: {DATE_RANGE_PROBLEM}: {shown}")
    return instant


def check_window(start: datetime | None, end: datetime | None) -> None:
    """An empty or reversed window is a typo, not a request for nothing."""
    if start is not None and end is not None and end <= start:
        raise PullmodeError(
            f"--end ({end.isoformat()}) must be after --start ({start.isoformat()}); the window is [start, end)"
        )


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def output_path(text: str) -> Path:
    """``-o``'s text as a path. One whose last component is empty, ``.`` or ``..`` (``x.csv/``) names a
    directory: refused, where ``Path`` would drop the slash and write a file named ``x.csv``."""
    if os.path.basename(text) in ("", ".", ".."):
        raise PullmodeError(f"cannot write {one_line(text)}: it names a directory (it ends in /, . or ..)")
    return Path(text)


def _existing(name: str | Path, shown: str, *, dir_fd: int | None = None) -> os.stat_result | None:
    """What is at ``name`` itself (a link is not followed), if anything; refused unless a regular file.
    The rename would replace a device node, a FIFO or a symbolic link with a regular file. A link is
    refused even to a regular file: the rename replaces the link, not what it points to, and writing
    through it would put the file wherever the link leads (how a planted link redirects a root process)."""
    try:
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:  # nothing there (or an unusable parent, said by check_target)
        return None
    mode = found.st_mode
    if stat.S_ISLNK(mode):
        link = one_line(os.readlink(name, dir_fd=dir_fd), limit=200)
        raise PullmodeError(
            f"cannot write {shown}: it is a symbolic link (to {link}): name the file itself, or use -o - for stdout"
        )
    if stat.S_ISDIR(mode):
        raise PullmodeError(f"cannot write {shown}: it is a directory")
    if not stat.S_ISREG(mode):
        kind = next((k for is_kind, k in _NOT_REGULAR if is_kind(mode)), "not a regular file")
        raise PullmodeError(f"cannot write {shown}: it is {kind}, not a regular file (use -o - to write to stdout)")
    return found


def check_target(path: Path) -> None:
    """Refuse a target that cannot be written before any event is read (the rename would fail last),
    and one that exists and is not a regular file (:func:`_existing`). Only the last component is
    checked: the directories above it are the user's path, resolved as any command resolves them."""
    shown = one_line(str(path))
    _existing(path, shown)
    parent = path.parent
    if not parent.exists():
        raise PullmodeError(f"cannot write {shown}: directory {one_line(str(parent))} does not exist")
    if not parent.is_dir():
        raise PullmodeError(f"cannot write {shown}: {one_line(str(parent))} is not a directory")


# Arrow casts a timestamp to the same text with a space for the T and no Z (2026-03-01 10:00:00.000000);
# they go where TIMESTAMP_FORMAT has them, every field being fixed width.
_SAMPLE = datetime.max.strftime(TIMESTAMP_FORMAT)
_T_AT, _Z_AT = _SAMPLE.index("T"), _SAMPLE.index("Z")


def _utc_text(timestamps: pa.Array) -> pa.Array:
    """The engine's UTC text (:data:`.events.model.TIMESTAMP_FORMAT`). Formatting the naive view is ~40x
    faster than ``strftime`` (or a cast) of the UTC-zoned values, which looks the zone up value by
    value; the text is fixed width (the engine's years are 1000-9999), so the ``T`` and the ``Z`` go
    in by position. (``binary_join_element_wise`` would add the ``Z`` too, but costs ~35 MB resident.)"""
    text = timestamps.view(pa.timestamp("us")).cast(pa.string())
    return pc.binary_replace_slice(pc.binary_replace_slice(text, _T_AT, _T_AT + 1, "T"), _Z_AT, _Z_AT, "Z")


def _with_text_timestamps(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Timestamps as the engine's UTC text (what tail prints), the other columns as they are."""
    arrays = list(batch.columns)
    for i in _TIMESTAMP_COLUMNS:
        arrays[i] = _utc_text(arrays[i])
    return pa.RecordBatch.from_arrays(arrays, schema=TEXT_SCHEMA)


Sink = str | BinaryIO
"""Where a writer writes: a file's path (Arrow writes it natively) or a binary stream (stdout)."""


def _write_parquet(batches: Iterable[pa.RecordBatch], sink: Sink) -> int:
    import pyarrow.parquet as pq  # 13 MB resident: only for Parquet

    rows = 0
    # Parquet needs no seek to write (row groups, then the footer): it streams to a pipe as well.
    with pq.ParquetWriter(sink, SCHEMA, compression="zstd", use_dictionary=list(DICTIONARY_COLUMNS)) as writer:
        for batch in batches:
            writer.write_batch(batch)  # a row group per batch (gathering them would cost their memory)
            rows += batch.num_rows
    return rows


def _write_csv(batches: Iterable[pa.RecordBatch], sink: Sink) -> int:
    import pyarrow.csv as pcsv

    rows = 0
    with pcsv.CSVWriter(sink, TEXT_SCHEMA) as writer:
        for batch in batches:
            writer.write_batch(_with_text_timestamps(batch))
            rows += batch.num_rows
    return rows


NDJSON_ROWS = 2_000
"""Rows turned into JSON lines at a time (each row costs ~3 KB of Python objects while it is)."""

_NDJSON_LINE = "{" + ", ".join(f"{json.dumps(c.name)}: %s" for c in EVENT_SCHEMA) + "}\n"
"""One event as ``json.dumps(row, ensure_ascii=False)`` spells it (what ``tail --json`` prints)."""


def _json_values(array: pa.Array) -> list[str]:
    """A column as JSON text, value by value, with json's own encoders (C) instead of a dict per row."""
    encode = json.encoder.encode_basestring if pa.types.is_string(array.type) else repr
    values = array.to_pylist()
    if array.null_count:
        return ["null" if v is None else encode(v) for v in values]
    return list(map(encode, values))


def _write_ndjson(batches: Iterable[pa.RecordBatch], sink: Sink) -> int:
    rows = 0
    if isinstance(sink, str):
        out = open(sink, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed below)
    else:
        out = io.TextIOWrapper(sink, encoding="utf-8", newline="\n")
    try:
        for batch in batches:
            text = _with_text_timestamps(batch)
            # A value is three Python objects here (the value, its JSON, the line): a few rows at a time.
            for offset in range(0, text.num_rows, NDJSON_ROWS):
                columns = [_json_values(column) for column in text.slice(offset, NDJSON_ROWS).columns]
                out.write("".join(map(_NDJSON_LINE.__mod__, zip(*columns, strict=True))))
            rows += batch.num_rows
        out.flush()
    finally:
        if isinstance(sink, str):
            out.close()
        else:
            out.detach()  # the stream is the caller's: left open
    return rows


_WRITERS = {"parquet": _write_parquet, "csv": _write_csv, "ndjson": _write_ndjson}


class _Counted(io.BufferedIOBase):
    """A caller's stream, counting the bytes written to it (a pipe has no size to ask afterwards)."""

    def __init__(self, out: BinaryIO):
        super().__init__()
        self._out = out
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._out.write(data)
        size = memoryview(data).nbytes
        self.written += size
        return size

    def flush(self) -> None:
        self._out.flush()


def export_events(
    store: TraceStore,
    *,
    source: str,
    path: Path | BinaryIO,
    fmt: Format,
    start: datetime | None = None,
    end: datetime | None = None,
) -> ExportResult:
    """Write the events of ``source`` dated in ``[start, end)`` to ``path``; no events is an empty file
    (with the columns, for Parquet and CSV). A file appears only once complete (it replaces a regular
    file already there, nothing else); a stream (``-o -``: stdout) is written as the events are read."""
    check_window(start, end)
    reader = batch_reader(store, source=source, start=start, end=end, batch_rows=EXPORT_BATCH_ROWS)
    if not isinstance(path, Path):
        return _export_to_stream(reader, path, fmt)
    check_target(path)
    return _export_to_file(reader, path, fmt)


NEW_FILE_MODE = 0o600
"""A new export file is its owner's only: it is audit data (who asked an AI what). One that replaces a
file keeps that file's permissions, as editing it in place would have."""


def _export_to_file(reader: Iterable[pa.RecordBatch], path: Path, fmt: Format) -> ExportResult:
    """Written under a temporary name beside the target (same file system: the rename is atomic),
    flushed to disk, then renamed over it. The directory is opened once and everything after is
    relative to it, so the temporary, the last check and the rename are in the same directory even
    if a link on the way is changed meanwhile."""
    shown = one_line(str(path))
    name, tmp = path.name, f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"

    def failed(exc: OSError) -> PullmodeError:
        return PullmodeError(f"cannot write {shown}: {exc.strerror or one_line(str(exc), limit=200)}")

    try:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, NEW_FILE_MODE, dir_fd=directory
        )
    except OSError as exc:
        raise failed(exc) from None
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                counted = _Counted(out)  # the writers close what they are given: the file is closed here
                rows = _WRITERS[fmt](reader, counted)
                out.flush()
                # Again: something other than a file may have appeared there meanwhile.
                replaced = _existing(name, shown, dir_fd=directory)
                if replaced is not None:
                    _keep_access(out.fileno(), replaced)
                os.fsync(out.fileno())  # the data is on disk before the name points at it
            os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
            os.fsync(directory)  # and so is the name
        except OSError as exc:
            raise failed(exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=directory)
        raise
    finally:
        os.close(directory)
    return ExportResult(rows=rows, bytes=counted.written)


def _keep_access(fd: int, replaced: os.stat_result) -> None:
    """The new file gets the replaced one's owner where this process may give it (root, or the owner
    itself), else its group where it may, and its permission bits. Bits for a group that could not
    be kept are dropped: they would open the file to this process's group instead."""
    mode = stat.S_IMODE(replaced.st_mode) & 0o777  # permissions only: no set-id or sticky bit on data
    try:
        os.fchown(fd, replaced.st_uid, replaced.st_gid)
    except PermissionError:
        try:
            os.fchown(fd, -1, replaced.st_gid)
        except PermissionError:
            mode &= ~0o070
    os.fchmod(fd, mode)  # after chown, which may clear bits


def _export_to_stream(reader: Iterable[pa.RecordBatch], out: BinaryIO, fmt: Format) -> ExportResult:
    """Every format streams, Parquet too (its footer comes last); but Parquet is binary, and bytes
    on a terminal are garbage and may drive it, so a terminal gets text only."""
    if fmt == "parquet" and out.isatty():
        raise PullmodeError(
            "not writing Parquet (binary) to a terminal: redirect or pipe stdout, or use --format ndjson or csv"
        )
    counted = _Counted(out)
    try:
        rows = _WRITERS[fmt](reader, counted)
        out.flush()
    except BrokenPipeError:
        raise  # the reader left (``| head``): click exits 1 quietly, as for tail
    except OSError as exc:
        raise PullmodeError(f"cannot write to stdout: {exc.strerror or one_line(str(exc), limit=200)}") from None
    return ExportResult(rows=rows, bytes=counted.written)
