"""pullmode export: a source's stored events in [start, end) to Parquet (typed), CSV or NDJSON, on SQLite
and Postgres; one-line errors; a failed export leaves nothing under the target's name; a 1M-event
export stays under 200 MB resident."""

from __future__ import annotations

import csv
import json
import os
import pty
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from pullmode_dagster.cli import _size, main
from pullmode_dagster.engine import export as export_module
from pullmode_dagster.engine.errors import PullmodeError
from pullmode_dagster.engine.events.model import TIMESTAMP_WIDTH, NormalizedEvent
from pullmode_dagster.engine.events.rules import format_timestamp
from pullmode_dagster.engine.export import format_for, parse_time
from pullmode_dagster.engine.store import SqliteTraceStore, open_store
from pullmode_dagster.engine.store.schema import EVENT_COLUMNS, arrow_schema

from .conftest import SourceWriter
from .documents import http_source
from .pg import fresh_database

SOURCE = "acme"


def ev(i: int, source: str = SOURCE) -> NormalizedEvent:
    """Event i at 2026-03-01T00:00:i (seconds), with a null actor now and then and some non-ASCII text."""
    return NormalizedEvent(
        source,
        f"e{i:04d}",
        f"2026-03-01T00:{i // 60:02d}:{i % 60:02d}.{i:06d}Z",
        None if i % 4 == 0 else f"user{i}@x",
        "completion",
        "modèle-✓" if i % 3 == 0 else "m",
        0.25 * i,
        100 + i,
        2**40 + i,
        json.dumps({"i": i, "note": 'a "quoted", comma\nline'}),
        "org_42",
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The trace store the CLI uses ($PULLMODE_TRACE_STORE_URL), each backend in turn; no source files."""
    monkeypatch.setenv("PULLMODE_SOURCES_DIR", str(tmp_path / "sources"))
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/trace.db"
        monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", url)
        yield url
    else:
        with fresh_database() as url:
            monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", url)
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/trace.db"
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", url)
    monkeypatch.setenv("PULLMODE_SOURCES_DIR", str(tmp_path / "sources"))
    return url


def fill(url: str, n: int, source: str = SOURCE) -> list[NormalizedEvent]:
    events = [ev(i, source) for i in range(n)]
    with open_store(url) as store:
        store.write_events(events, run_id="run-1")
    return events


def export(*args: str) -> Result:
    return CliRunner().invoke(main, ["export", *args])


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- each format round-trips, on both stores ---------------------------------------------------------------------


def test_parquet_keeps_every_column_typed(store_url: str, tmp_path: Path) -> None:
    events = fill(store_url, 30)
    fill(store_url, 5, source="other")  # another source's events stay out
    out = tmp_path / "acme.parquet"
    result = export(SOURCE, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"exported 30 events of acme to {out} (parquet, ")
    assert result.stdout == ""

    table = pq.read_table(out)
    assert table.schema.equals(arrow_schema())
    assert [str(table.schema.field(c).type) for c in ("event_timestamp", "tokens_input", "cost_usd", "actor")] == [
        "timestamp[us, tz=UTC]",
        "int64",
        "double",
        "string",
    ]
    assert table.num_rows == 30
    rows = table.to_pylist()
    assert [r["source_event_id"] for r in rows] == [e.source_event_id for e in events]  # oldest first
    first, fourth = rows[0], rows[3]
    assert first["event_timestamp"] == datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC)
    assert fourth["event_timestamp"] == datetime(2026, 3, 1, 0, 0, 3, 3, tzinfo=UTC)
    assert (first["actor"], fourth["actor"], fourth["target"]) == (None, "user3@x", "modèle-✓")
    assert (fourth["cost_usd"], fourth["tokens_input"], fourth["tokens_output"]) == (0.75, 103, 2**40 + 3)
    assert fourth["raw_payload"] == events[3].raw_payload
    assert fourth["pulled_at"].tzinfo is not None and fourth["run_id"] == "run-1"


def test_csv_has_a_header_and_utc_text_timestamps(store_url: str, tmp_path: Path) -> None:
    events = fill(store_url, 30)
    out = tmp_path / "acme.csv"
    result = export(SOURCE, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 30 events of acme" in result.stderr and "(csv, " in result.stderr

    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(EVENT_COLUMNS)
    assert len(rows) == 30
    assert [r["event_timestamp"] for r in rows] == [e.event_timestamp for e in events]
    assert rows[3]["raw_payload"] == events[3].raw_payload  # quotes, commas and the escaped newline survive
    assert (rows[0]["actor"], rows[3]["target"], rows[3]["cost_usd"], rows[3]["tokens_output"]) == (
        "",
        "modèle-✓",
        "0.75",
        str(2**40 + 3),
    )
    assert rows[3]["pulled_at"].endswith("Z") and len(rows[3]["pulled_at"]) == TIMESTAMP_WIDTH
    # Arrow reads the text back as UTC timestamps.
    table = pa.csv.read_csv(out)
    assert table.schema.field("event_timestamp").type.tz == "UTC"


def test_ndjson_lines_are_what_tail_json_prints(store_url: str, tmp_path: Path) -> None:
    fill(store_url, 30)
    out = tmp_path / "acme.jsonl"
    result = export(SOURCE, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "(ndjson, " in result.stderr

    lines = out.read_text(encoding="utf-8").splitlines()
    tailed = CliRunner().invoke(main, ["tail", "--json", "--source", SOURCE, "-n", "100"])
    assert tailed.exit_code == 0, tailed.output
    assert lines == tailed.stdout.splitlines()  # same fields, same spelling, same order (oldest first)
    row = json.loads(lines[3])
    assert list(row) == list(EVENT_COLUMNS)
    assert row["event_timestamp"] == "2026-03-01T00:00:03.000003Z"
    assert (row["cost_usd"], row["tokens_input"], row["actor"]) == (0.75, 103, "user3@x")
    assert json.loads(lines[0])["actor"] is None


def test_format_option_wins_over_the_extension(sqlite_url: str, tmp_path: Path) -> None:
    fill(sqlite_url, 3)
    out = tmp_path / "events.txt"
    assert export(SOURCE, "--format", "ndjson", "-o", str(out)).exit_code == 0
    assert len(out.read_text().splitlines()) == 3
    plain = tmp_path / "events.data"
    assert export(SOURCE, "-o", str(plain)).exit_code == 0
    assert pq.read_metadata(plain).num_rows == 3  # no known extension: Parquet


# --- the window ----------------------------------------------------------------------------------------------------


def test_window_is_start_inclusive_end_exclusive(store_url: str, tmp_path: Path) -> None:
    fill(store_url, 120)  # one event per second from 00:00:00 to 00:01:59

    def ids(*args: str) -> list[str]:
        out = tmp_path / "w.parquet"
        result = export(SOURCE, *args, "-o", str(out))
        assert result.exit_code == 0, result.output
        return pq.read_table(out, columns=["source_event_id"]).column(0).to_pylist()

    # e0005 is at 00:00:05.000005, so a start at 00:00:05 includes it and an end there excludes it.
    window = ids("--start", "2026-03-01T00:00:05Z", "--end", "2026-03-01T00:00:10.000010Z")
    assert window == [f"e{i:04d}" for i in range(5, 10)]
    assert ids("--end", "2026-03-01T00:00:00.000001Z") == ["e0000"]
    assert len(ids("--start", "2026-03-01T00:01:00Z")) == 60
    # Offsets are converted, naive means UTC, a date is its midnight.
    assert ids("--start", "2026-03-01T01:00:05+01:00", "--end", "2026-03-01T00:00:07") == ["e0005", "e0006"]
    assert len(ids("--start", "2026-03-01", "--end", "2026-03-02")) == 120
    assert ids("--start", "2026-03-02") == []


def test_no_events_in_the_window_is_an_empty_file_with_the_columns(store_url: str, tmp_path: Path) -> None:
    fill(store_url, 3)
    for name in ("empty.parquet", "empty.csv", "empty.ndjson"):
        out = tmp_path / name
        result = export(SOURCE, "--start", "2027-01-01", "-o", str(out))
        assert result.exit_code == 0, result.output
        assert result.stderr.startswith(f"exported 0 events of acme to {out}")
    assert pq.read_table(tmp_path / "empty.parquet").schema.equals(arrow_schema())
    assert pq.read_metadata(tmp_path / "empty.parquet").num_rows == 0
    assert (tmp_path / "empty.csv").read_text().splitlines() == [",".join(f'"{c}"' for c in EVENT_COLUMNS)]
    assert (tmp_path / "empty.ndjson").read_bytes() == b""


# --- which sources can be exported -------------------------------------------------------------------------------


def test_a_defined_source_without_events_exports_zero_events(
    sqlite_url: str, sources: SourceWriter, tmp_path: Path
) -> None:
    sources.write(http_source("http://127.0.0.1:9/v1/events"))
    out = tmp_path / "a.parquet"
    result = export("acme_audit", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 0 events of acme_audit" in result.stderr
    assert pq.read_metadata(out).num_rows == 0


def test_a_source_whose_file_was_removed_is_still_exported(sqlite_url: str, tmp_path: Path) -> None:
    fill(sqlite_url, 4, source="retired")  # and the sources directory does not even exist
    out = tmp_path / "r.csv"
    result = export("retired", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 5


def test_unknown_source_names_the_defined_and_the_stored_ones(
    store_url: str, sources: SourceWriter, tmp_path: Path
) -> None:
    sources.write(http_source("http://127.0.0.1:9/v1/events"))
    fill(store_url, 2, source="retired")
    result = export("acme_audt", "-o", str(tmp_path / "x.parquet"))
    assert_one_line_error(
        result,
        "unknown source 'acme_audt' (sources: acme_audit; the store holds: retired)",
        "did you mean 'acme_audit'?",
    )
    assert list(tmp_path.glob("*.parquet")) == []


# --- clear errors --------------------------------------------------------------------------------------------------


RANGE = "out of range: from 1970-01-01 to 9998-12-31 in UTC (is the year four digits?)"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--start", "yesterday"], "--start: not an ISO 8601 date or date-time: 'yesterday'"),
        (["--end", "2026-13-01"], "--end: not an ISO 8601 date or date-time: '2026-13-01'"),
        (["--start", "2026-03-01T00:00:00+25:00"], "--start: not an ISO 8601"),
        (["--start", "2026-03-02", "--end", "2026-03-01"], "--end (2026-03-01T00:00:00+00:00) must be after --start"),
        (["--start", "2026-03-01T10:00:00Z", "--end", "2026-03-01T11:00:00+01:00"], "must be after --start"),
        # startDate's range and words: a date the engine cannot hold, or a year of the wrong century.
        (["--end", "9999-12-31T23:00:00-05:00"], f"--end: {RANGE}: '9999-12-31T23:00:00-05:00'"),
        (["--end", "9999-01-01"], f"--end: {RANGE}: '9999-01-01'"),
        (["--start", "0001-01-01"], f"--start: {RANGE}: '0001-01-01'"),
        (["--start", "1969-12-31T23:59:59Z"], f"--start: {RANGE}: '1969-12-31T23:59:59Z'"),
        (["--start", "1970-01-01T00:30:00+01:00"], f"--start: {RANGE}: '1970-01-01T00:30:00+01:00'"),
    ],
)
def test_bad_times_are_one_line(sqlite_url: str, tmp_path: Path, args: list[str], expected: str) -> None:
    fill(sqlite_url, 2)
    assert_one_line_error(export(SOURCE, *args, "-o", str(tmp_path / "x.parquet")), expected)


def test_unwritable_paths_are_one_line(sqlite_url: str, tmp_path: Path) -> None:
    fill(sqlite_url, 2)
    (tmp_path / "a_file").write_text("")
    missing = tmp_path / "no" / "such" / "dir" / "x.parquet"
    assert_one_line_error(export(SOURCE, "-o", str(missing)), f"cannot write {missing}: directory", "does not exist")
    assert_one_line_error(export(SOURCE, "-o", str(tmp_path)), f"cannot write {tmp_path}: it is a directory")
    under_file = tmp_path / "a_file" / "x.csv"
    assert_one_line_error(export(SOURCE, "-o", str(under_file)), "is not a directory")


@pytest.mark.parametrize("ending", ["/", "/.", "//"])
def test_a_name_ending_in_a_slash_names_a_directory_and_is_refused(
    sqlite_url: str, tmp_path: Path, ending: str
) -> None:
    fill(sqlite_url, 2)
    named = f"{tmp_path / 'x.csv'}{ending}"
    assert_one_line_error(export(SOURCE, "-o", named), f"cannot write {named}: it names a directory")
    assert not (tmp_path / "x.csv").exists()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_is_the_owners_only_and_a_replaced_one_keeps_its_permissions(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Audit data: a new export is 0600 whatever the umask; one replacing a file keeps that file's
    permission bits (no set-id bit) and, where this process may give it, its owner and group."""
    fill(sqlite_url, 2)
    new = tmp_path / "new.csv"
    umask = os.umask(0)
    try:
        assert export(SOURCE, "-o", str(new)).exit_code == 0
    finally:
        os.umask(umask)
    assert _mode(new) == 0o600
    for before, after in [(0o600, 0o600), (0o640, 0o640), (0o444, 0o444), (0o4755, 0o755)]:
        old = tmp_path / f"old-{before:o}.csv"
        old.write_text("old\n")
        os.chmod(old, before)
        result = export(SOURCE, "-o", str(old))
        assert result.exit_code == 0, result.output
        assert old.read_text().startswith('"source_name",') and _mode(old) == after, f"{before:o}: {_mode(old):o}"
    if os.geteuid() == 0:  # only root may give a file away: the owner and group are kept
        owned = tmp_path / "owned.csv"
        owned.write_text("old\n")
        os.chown(owned, 1234, 5678)
        os.chmod(owned, 0o640)
        assert export(SOURCE, "-o", str(owned)).exit_code == 0
        assert (owned.stat().st_uid, owned.stat().st_gid, _mode(owned)) == (1234, 5678, 0o640)


def test_a_link_to_a_directory_above_the_file_is_resolved_once(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-o dirlink/acme.csv`` writes where the link leads when the export starts (the directories above
    the file are the user's path); pointing the link elsewhere meanwhile moves nothing there: the
    temporary, the last check and the rename all happen in the directory first opened."""
    fill(sqlite_url, 2)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    link = tmp_path / "dirlink"
    link.symlink_to(first)
    write_csv = export_module._WRITERS["csv"]

    def write_then_repoint(batches: object, sink: object) -> int:
        rows = write_csv(batches, sink)  # type: ignore[arg-type]
        link.unlink()
        link.symlink_to(second)
        return rows

    monkeypatch.setitem(export_module._WRITERS, "csv", write_then_repoint)
    result = export(SOURCE, "-o", str(link / "acme.csv"))
    assert result.exit_code == 0, result.output
    assert os.listdir(first) == ["acme.csv"] and os.listdir(second) == []
    assert (first / "acme.csv").read_text().count("\n") == 3


def _kind(path: Path) -> str:
    """What is at ``path`` itself (a link is not followed)."""
    mode = os.lstat(path).st_mode
    kinds = {stat.S_ISLNK: "link", stat.S_ISFIFO: "fifo", stat.S_ISCHR: "chr", stat.S_ISDIR: "dir", stat.S_ISREG: "reg"}
    return next(kind for is_kind, kind in kinds.items() if is_kind(mode))


def _own_device_node(path: Path) -> bool:
    """A character device node (/dev/null's numbers) at ``path``, which is under the test's temporary
    directory, so even a regression that replaced it would destroy nothing real. False without the
    privilege to make one."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        return False
    return True


@pytest.mark.parametrize("kind", ["fifo", "link to a file", "dangling link", "link to a directory", "device"])
def test_a_target_that_is_not_a_regular_file_is_refused_and_kept(sqlite_url: str, tmp_path: Path, kind: str) -> None:
    """The rename would replace the node itself with a regular file; it is refused, one line, before
    any event is read, and the node and whatever it points to stay as they were."""
    fill(sqlite_url, 2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "acme.parquet"
    real = tmp_path / "real.parquet"
    real.write_bytes(b"the file the link points to")
    expected = {
        "fifo": "it is a FIFO, not a regular file (use -o - to write to stdout)",
        "link to a file": f"it is a symbolic link (to {real}): name the file itself",
        "dangling link": f"it is a symbolic link (to {tmp_path / 'gone'}): name the file itself",
        "link to a directory": f"it is a symbolic link (to {tmp_path}): name the file itself",
        "device": "it is a character device, not a regular file",
    }[kind]
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        if not _own_device_node(target):
            pytest.skip("making a device node needs CAP_MKNOD")
    else:
        target.symlink_to(
            {"link to a file": real, "dangling link": tmp_path / "gone", "link to a directory": tmp_path}[kind]
        )
    before = _kind(target)
    assert_one_line_error(export(SOURCE, "-o", str(target)), f"cannot write {target}: {expected}")
    assert _kind(target) == before
    assert os.listdir(out_dir) == ["acme.parquet"]  # no temporary left
    assert real.read_bytes() == b"the file the link points to"


def test_a_real_device_is_refused_by_the_check_alone() -> None:
    """/dev/null as the target, through the check only: this test writes nothing, whatever the code does."""
    with pytest.raises(PullmodeError, match=r"^cannot write /dev/null: it is a character device, not a regular file"):
        export_module.check_target(Path("/dev/null"))


def test_something_other_than_a_file_appearing_during_the_export_is_not_replaced(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target is checked again just before the rename: a FIFO made while the events were written
    stays, and the temporary file goes."""
    fill(sqlite_url, 2)
    target = tmp_path / "out" / "acme.ndjson"
    target.parent.mkdir()
    write_ndjson = export_module._WRITERS["ndjson"]

    def write_then_a_fifo_appears(batches: object, sink: str) -> int:
        rows = write_ndjson(batches, sink)
        os.mkfifo(target)
        return rows

    monkeypatch.setitem(export_module._WRITERS, "ndjson", write_then_a_fifo_appears)
    assert_one_line_error(export(SOURCE, "-o", str(target)), f"cannot write {target}: it is a FIFO")
    assert _kind(target) == "fifo"
    assert os.listdir(target.parent) == ["acme.ndjson"]


def test_dash_writes_to_stdout_in_every_format(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-o -`` streams to stdout what ``-o FILE`` writes to the file, byte for byte, and writes no file;
    ``./-`` is a file named ``-``."""
    fill(sqlite_url, 30)
    for fmt in ("ndjson", "csv", "parquet"):
        out = tmp_path / f"acme.{fmt}"
        assert export(SOURCE, "--format", fmt, "-o", str(out)).exit_code == 0
        result = export(SOURCE, "--format", fmt, "-o", "-")
        assert result.exit_code == 0, result.output
        assert result.stdout_bytes == out.read_bytes(), fmt
        assert result.stderr == f"exported 30 events of acme to stdout ({fmt}, {_size(out.stat().st_size)})\n"
    assert pq.read_table(pa.BufferReader(result.stdout_bytes)).num_rows == 30
    assert "-" not in os.listdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert export(SOURCE, "--format", "csv", "-o", "./-").exit_code == 0
    assert (tmp_path / "-").read_bytes() == (tmp_path / "acme.csv").read_bytes()


def test_parquet_is_not_written_to_a_terminal(sqlite_url: str) -> None:
    """Binary on a terminal is garbage (and may drive it): refused; text formats are written."""
    fill(sqlite_url, 2)
    controller, terminal = pty.openpty()
    with os.fdopen(controller, "rb", buffering=0) as screen, os.fdopen(terminal, "wb") as tty:
        with open_store(sqlite_url) as store:
            with pytest.raises(PullmodeError, match=r"^not writing Parquet \(binary\) to a terminal: redirect or pipe"):
                export_module.export_events(store, source=SOURCE, path=tty, fmt="parquet")
            result = export_module.export_events(store, source=SOURCE, path=tty, fmt="ndjson")
        assert result.rows == 2
        shown = b""
        while shown.count(b"\n") < 2:
            shown += screen.read(4096)
        assert shown.startswith(b'{"source_name": "acme", "source_event_id": "e0000"')


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_directory_is_one_line(sqlite_url: str, tmp_path: Path) -> None:
    fill(sqlite_url, 2)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_one_line_error(export(SOURCE, "-o", str(locked / "x.parquet")), "Permission denied")


def test_a_failed_export_leaves_the_previous_file_and_no_temporary(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch fails (a corrupt row written behind the store's back): the first was already
    written, to the temporary file, which is removed; the old file under the target's name stays."""
    fill(sqlite_url, 30)
    with sqlite3.connect(f"{tmp_path}/trace.db") as conn:
        conn.execute(
            "UPDATE pulled_events SET event_timestamp = '2026-03-01T00:59:59Z?' WHERE source_event_id = 'e0029'"
        )
    monkeypatch.setattr(export_module, "EXPORT_BATCH_ROWS", 10)
    out = tmp_path / "acme.parquet"
    out.write_bytes(b"the previous export")
    assert_one_line_error(export(SOURCE, "-o", str(out)), "a stored event_timestamp is not a UTC timestamp")
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["acme.parquet", "trace.db", "trace.db-shm", "trace.db-wal"]
    )


def test_parse_time_and_format_for() -> None:
    assert parse_time("2026-03-01", option="--start") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_time(" 2026-03-01T10:00:00.5-02:00 ", option="--start") == datetime(2026, 3, 1, 12, 0, 0, 500000, UTC)
    with pytest.raises(PullmodeError, match=r"^--end: not an ISO 8601 date or date-time: ''"):
        parse_time("", option="--end")
    assert [format_for(Path(p), None) for p in ("a.PARQUET", "a.pq", "a.csv", "a.ndjson", "a.jsonl", "a")] == [
        "parquet",
        "parquet",
        "csv",
        "ndjson",
        "ndjson",
        "parquet",
    ]
    assert format_for(Path("a.csv"), "parquet") == "parquet"


def test_text_timestamps_are_the_engines_text() -> None:
    """The T and the Z go in where TIMESTAMP_FORMAT has them, for every year the engine stores."""
    instants = [
        datetime(1000, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    text = export_module._utc_text(pa.array(instants, pa.timestamp("us", tz="UTC")))
    assert text.to_pylist() == [format_timestamp(t) for t in instants]


# --- memory ------------------------------------------------------------------------------------------------------

_FILL = f"""
WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?),
e(i, ts) AS (SELECT i, printf('2026-03-%02dT%02d:%02d:%02d.%06dZ', 1 + i / 86400, i % 86400 / 3600, i % 3600 / 60,
                              i % 60, i % 1000000) FROM n)
INSERT INTO pulled_events ({", ".join(EVENT_COLUMNS)})
SELECT ?, printf('evt_%08d', i), ts, printf('user%d@acme.example', i % 500), 'completion', 'gpt-4o-mini',
       0.000123 * (i % 7), 120 + i % 50, 30,
       printf('{{"id":"evt_%08d","created_at":"%s","user":"user%d@acme.example","type":"completion",'
              || '"model":"gpt-4o-mini","cost":0.000123,"usage":{{"input_tokens":%d,"output_tokens":30}}}}',
              i, ts, i % 500, 120 + i % 50),
       'org_42', '2026-03-20T00:00:00.000000Z', 'run-0001'
FROM e
"""
"""Events generated by SQLite itself (a ~200-byte raw_payload each): no Python object per row."""


def fill_fast(path: Path, n: int, source: str = SOURCE, chunk: int = 100_000) -> None:
    """``n`` events in the store's own table and indexes (built once, after the rows: faster)."""
    SqliteTraceStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        for lo in range(0, n, chunk):
            conn.execute("BEGIN")
            conn.execute(_FILL, [lo, min(n, lo + chunk), source])
            conn.execute("COMMIT")
        for _, sql in indexes:
            conn.execute(sql)
    finally:
        conn.close()


_LAUNCHER = """
import json, os, subprocess, sys, time
started = time.monotonic()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, time.monotonic() - started]))
"""
"""Runs a command and prints its exit code, peak RSS (MB) and wall time. On Linux a process's peak RSS
starts at its parent's when it is forked (the kernel carries the old memory's high-water mark across
exec), so pytest's own few hundred MB would count: this small launcher is the measured child's parent."""


def run_measured(args: list[str], env: dict[str, str]) -> tuple[int, float, float, str]:
    """``pullmode ARGS`` in its own process: exit code, peak RSS (MB), wall seconds, stderr."""
    command = [sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "pullmode_dagster.cli", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    code, peak_mb, seconds = json.loads(done.stdout)
    return code, peak_mb, seconds, done.stderr


def test_export_never_imports_pandas(tmp_path: Path) -> None:
    """pandas costs ~55 MB resident, a quarter of the export's budget (see store/arrow.py)."""
    url = f"sqlite:///{tmp_path}/trace.db"
    fill(url, 5)
    code = (
        "import sys\n"
        "from pullmode_dagster.cli import main\n"
        f"try:\n    main(['export', 'acme', '-o', {str(tmp_path / 'x.parquet')!r}])\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    env = dict(os.environ, PULLMODE_TRACE_STORE_URL=url, PULLMODE_SOURCES_DIR=str(tmp_path / "sources"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert pq.read_metadata(tmp_path / "x.parquet").num_rows == 5


@pytest.mark.slow
def test_a_million_events_export_under_200_mb(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    started = time.monotonic()
    fill_fast(db, 1_000_000)
    filled = time.monotonic() - started
    env = dict(os.environ, PULLMODE_TRACE_STORE_URL=f"sqlite:///{db}", PULLMODE_SOURCES_DIR=str(tmp_path / "none"))
    env.pop("ARROW_DEFAULT_MEMORY_POOL", None)  # what a user gets
    out = tmp_path / "out.parquet"
    code, peak_mb, seconds, stderr = run_measured(["export", SOURCE, "-o", str(out)], env)
    print(f"\nfill {filled:.1f} s; export of 1M events to Parquet: peak RSS {peak_mb:.1f} MB, {seconds:.1f} s")
    assert code == 0, stderr
    assert stderr.startswith(f"exported 1000000 events of acme to {out} (parquet, ")
    assert pq.read_metadata(out).num_rows == 1_000_000
    assert peak_mb < 200, f"peak RSS {peak_mb:.1f} MB"
