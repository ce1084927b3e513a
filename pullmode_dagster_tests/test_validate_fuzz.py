"""`load_sources` and `pullmode validate` on whatever a file may hold: never a traceback, never a
hang, one line per problem naming the file, never a value from the file.

Hypothesis generates documents (random YAML values, mutated copies of a valid source, random text
and bytes); a fixed list covers the nasty cases (alias bombs, deep nesting, binary, huge, FIFOs ...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pullmode_dagster.cli import main
from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import SourceSet, load_sources

from .documents import http_source

TIME_LIMIT = 30.0
"""Seconds one ``load_sources`` may take before the test calls it a hang (a typical call takes ms; the
50,000-value file takes about 3 s of pure-Python YAML, three times that on a loaded 2-core machine)."""
CANARY = "sk-canary-7f3e9d1c"
"""Planted in values; no problem line may contain it."""
FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_bounded(directory: Path) -> SourceSet:
    """``load_sources`` in a daemon thread: an exception or a hang fails the test (and a hang does
    not keep the test process alive)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = load_sources(directory, adapters=ADAPTERS)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIME_LIMIT)
    assert not thread.is_alive(), f"load_sources did not finish within {TIME_LIMIT}s"
    if "error" in box:
        raise AssertionError(f"load_sources raised {type(box['error']).__name__}") from box["error"]
    return box["result"]


def check_problems(result: SourceSet, path: Path) -> list[str]:
    """The invariants every load must keep. Returns the file's problems."""
    for problem in result.problems:
        assert problem.startswith(f"{path}: "), problem
        assert len(problem.splitlines()) == 1 and "\n" not in problem and "\r" not in problem, repr(problem)
        assert problem.isprintable(), repr(problem)
        assert "please report it" not in problem, problem  # the last-resort catch in parse_source is for bugs
        assert CANARY not in problem, problem
    if result.problems:
        assert result.sources == {}
        assert [i.file for i in result.invalid] == [path]
    else:
        assert len(result.sources) == 1
    return result.problems


def load_one(text: str | bytes, name: str = "source.yaml") -> tuple[Path, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        return path, check_problems(load_bounded(Path(tmp)), path)


# --- hypothesis: documents --------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.dates().map(str),
    st.sampled_from(
        ["", "~", "null", "yes", "0x1f", "1e999", "2026-02-30", "*/5 * * * *", "0 0 31 2 *", "$.[", CANARY]
    ),
)
yaml_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), children, max_size=5),
    ),
    max_leaves=30,
)
VALID = http_source("https://audit.acme.example/v1/events")
FIELDS = [*sorted(VALID), "schedule", "partitioning", "enabled", "params", "body", "method", "maxPagesPerRun"]


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@FUZZ
@given(yaml_values)
def test_random_documents(doc: Any) -> None:
    path, problems = load_one(dump(doc))
    assert problems  # no random value is a valid source
    if doc is None:
        assert problems == [f"{path}: the file is empty; it must hold one mapping (name: ..., adapter: ...)"]
    elif not isinstance(doc, dict):
        assert problems == [f"{path}: the file must hold one mapping (name: ..., adapter: ...)"]


@st.composite
def mutated_sources(draw: st.DrawFn) -> dict[str, Any]:
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in VALID.items()}
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "retype", "rename", "nested", "canary"]))
        key = draw(st.sampled_from(FIELDS))
        if op == "delete":
            doc.pop(key, None)
        elif op == "retype":
            doc[key] = draw(yaml_values)
        elif op == "rename" and key in doc:
            doc[key + draw(st.sampled_from(["x", "_", "Pth"]))] = doc.pop(key)
        elif op == "nested":
            target = draw(st.sampled_from(["eventMapping", "headers", "credentials", "params"]))
            inner = doc.get(target) if isinstance(doc.get(target), dict) else {}
            doc[target] = {**inner, draw(st.text(max_size=10)): draw(yaml_values)}
        elif op == "canary":
            # A literal secret where values live: a bad value nearby must not bring it into a message.
            where = draw(st.sampled_from(["headers", "params", "body", "url", "owner", "maxPagesPerRun"]))
            doc[where] = {"X": CANARY, 3: [CANARY]} if where in ("headers", "params") else f"{CANARY}"
    return doc


@FUZZ
@given(mutated_sources())
def test_mutated_sources(doc: dict[str, Any]) -> None:
    path, problems = load_one(dump(doc))
    for problem in problems:
        assert problem.startswith(f"{path}: source "), problem  # a mapping: the source is named


@FUZZ
@given(st.data())
def test_random_text_spliced_into_a_valid_file(data: st.DataObject) -> None:
    text = dump(VALID)
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 20))
    junk = data.draw(
        st.one_of(
            st.text(max_size=20),
            st.sampled_from(
                [
                    "\t",
                    "&a",
                    "*a",
                    "*nope",
                    "---\n",
                    "{",
                    "[",
                    ": :",
                    "? ",
                    "!!binary",
                    "!!python/name:os.system",
                    "\x00",
                    "\ufeff",
                    "\\",
                ]
            ),
        )
    )
    load_one(text[:at] + junk + text[at + cut :])


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_random_bytes_and_text(blob: bytes | str) -> None:
    load_one(blob)


def test_the_valid_file_the_fuzzers_start_from_loads() -> None:
    """Without this, every fuzz case could fail for one boring reason."""
    _, problems = load_one(dump(VALID))
    assert problems == []


# --- the nasty cases --------------------------------------------------------------------------

SOURCE = dump({**VALID, "name": "nasty"})
AFTER = SOURCE.count("\n") + 1
"""The first line after SOURCE."""


def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return SOURCE + "\n".join(lines) + "\n"


def merge_bomb() -> str:
    lines = ["m0: &m0 {x: 1, y: 2}"]
    lines += [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 9) + "], z: 1}" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


Maker = Callable[[Path], None]


def writes(content: str | bytes) -> Maker:
    def make(path: Path) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return make


def fifo(path: Path) -> None:
    os.mkfifo(path)


def directory(path: Path) -> None:
    path.mkdir()


def to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def broken_link(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere")


def sparse_huge(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(3 << 30)  # 3 GiB, sparse: costs no disk


NASTY: dict[str, tuple[Maker, str]] = {
    "alias_bomb": (
        writes(alias_bomb()),
        f": refused at line {AFTER + 4}, column 35: its aliases expand to more than 50000 values (an alias bomb?)",
    ),
    "merge_key_bomb": (writes(merge_bomb()), "its aliases expand to more than 50000 values (an alias bomb?)"),
    "recursive_alias": (
        writes("a: &a [1, *a]\n"),
        "an alias refers to a node that contains it (a recursive structure)",
    ),
    "deep_flow_10000": (
        writes("[" * 10_000 + "]" * 10_000),
        ": refused at line 1, column 51: nested deeper than 50 levels",
    ),
    "deep_block": (writes("".join(" " * i + "k:\n" for i in range(200))), "nested deeper than 50 levels"),
    "many_values": (writes("[" + ",".join(["1"] * 60_000) + "]"), "holds more than 50000 values"),
    "binary": (
        writes(bytes(range(256)) * 8),
        ": is not UTF-8 text (an invalid byte at offset 128); is it a binary file?",
    ),
    "nul_byte": (
        writes(b"name: x\x00\n"),
        ": not valid YAML: a control character (#x0000) at offset 7; is it a binary file?",
    ),
    "latin1": (writes("name: caf\xe9\n".encode("latin-1")), ": is not UTF-8 text (an invalid byte at offset 9)"),
    "utf16": (writes(SOURCE.encode("utf-16")), ": is not UTF-8 text"),
    "huge": (
        writes("a: " + "x" * (2 << 20)),
        ": is too large (2097155 bytes); a source file is at most 1048576 bytes (1 MiB)",
    ),
    "sparse_3gib": (sparse_huge, ": is too large (3221225472 bytes)"),
    "empty": (writes(""), ": the file is empty; it must hold one mapping (name: ..., adapter: ...)"),
    "only_comments": (writes("# a comment\n\n   # another\n"), ": the file is empty"),
    "only_a_scalar": (writes("just text\n"), ": the file must hold one mapping (name: ..., adapter: ...)"),
    "multiple_documents": (
        writes(SOURCE + "---\n" + SOURCE),
        f": holds more than one YAML document (another starts at line {AFTER})",
    ),
    "tab_indentation": (
        writes("name: x\n\tadapter: http_polling\n"),
        ": not valid YAML at line 2, column 1: found character '\\t'",
    ),
    "duplicate_key": (
        writes(SOURCE + "name: other\n"),
        f": not valid YAML at line {AFTER}, column 1: duplicate key 'name'",
    ),
    "impossible_date": (
        writes(SOURCE.replace("'2026-01-01'", "2026-02-30")),
        "a value cannot be read as its YAML type",
    ),
    "integer_too_long": (
        writes(SOURCE + "maxPagesPerRun: " + "9" * 5000 + "\n"),
        "a value cannot be read as its YAML type",
    ),
    "python_tag": (
        writes(f"a: !!python/object/apply:os.system [{CANARY}]\n"),
        "could not determine a constructor for the tag '...'",
    ),
    "bad_bool_tag": (writes(f"a: !!bool {CANARY}\n"), "a value cannot be read as its YAML type"),
    "undefined_alias": (writes(f"a: *{CANARY}\n"), "an alias (*name) refers to no anchor (&name) defined before it"),
    "unhashable_key": (writes("? [1, 2]\n: x\n"), "found unhashable key"),
    "unclosed_quote": (writes(f"name: '{CANARY}\n"), ": not valid YAML"),
    "a_directory": (directory, ": is a directory, not a source file"),
    "a_fifo": (fifo, ": is not a regular file (a FIFO, socket or device); not read"),
    "dev_zero": (to_dev_zero, ": is not a regular file (a FIFO, socket or device); not read"),
    "broken_symlink": (broken_link, ": cannot read: no such file (a broken symbolic link?)"),
    "wrong_types_everywhere": (
        writes(
            dump(
                {
                    "name": 7,
                    "adapter": "http_polling",
                    "schedule": [1],
                    "startDate": None,
                    "url": {"a": [None]},
                    "headers": ["x"],
                    "credentials": {"token": {"env": [CANARY]}},
                    "eventMapping": 3,
                    "eventsJsonPath": False,
                }
            )
        ),
        ": source 'source': name: Input should be a valid string",
    ),
    "newline_in_a_key": (
        writes(dump({**VALID, "headers": {"X-A\nB\u2028C": 5}})),
        "headers.X-A\\nB\\u2028C: Input should be a valid string",
    ),
    "never_fires": (
        writes(SOURCE.replace("'*/5 * * * *'", "'0 0 30 2 *'")),
        "schedule: never fires: no time matches it within 8 years",
    ),
    "six_field_cron": (
        writes(SOURCE.replace("'*/5 * * * *'", "'0 */5 * * * *'")),
        "schedule: has 6 fields; expected a 5-field cron",
    ),
}


@pytest.mark.parametrize("case", sorted(NASTY))
def test_nasty_file(case: str, tmp_path: Path) -> None:
    make, expected = NASTY[case]
    path = tmp_path / "source.yaml"
    make(path)
    problems = check_problems(load_bounded(tmp_path), path)
    assert problems, case
    assert any(expected in p for p in problems), problems


def test_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "source.yaml"
    path.write_text(SOURCE)
    real_open = os.open

    def deny(file: Any, *args: Any, **kwargs: Any) -> int:
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)  # root reads a chmod 000 file, so deny it here
    assert check_problems(load_bounded(tmp_path), path) == [f"{path}: cannot read: Permission denied"]


def test_valid_files_in_other_spellings_still_load(tmp_path: Path) -> None:
    """CRLF line endings and a UTF-8 byte order mark are text, not problems."""
    (tmp_path / "crlf.yaml").write_bytes(dump({**VALID, "name": "crlf"}).replace("\n", "\r\n").encode())
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + dump({**VALID, "name": "bom"}).encode())
    result = load_bounded(tmp_path)
    assert result.problems == []
    assert sorted(result.sources) == ["bom", "crlf"]


def test_one_bad_file_does_not_hide_the_others(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    (tmp_path / "good.yaml").write_text(dump({**VALID, "name": "good"}))
    result = load_bounded(tmp_path)
    assert list(result.sources) == ["good"]
    assert [p.split(": ", 1)[0] for p in result.problems] == [str(tmp_path / "bomb.yaml")]


# --- through the real command line ------------------------------------------------------------

CLI_CASES = [
    "alias_bomb",
    "deep_flow_10000",
    "binary",
    "latin1",
    "multiple_documents",
    "a_directory",
    "a_fifo",
    "empty",
]


def nasty_directory(root: Path, cases: list[str]) -> Path:
    root.mkdir()
    for case in cases:
        NASTY[case][0](root / f"{case}.yaml")
    return root


def test_validate_command_on_nasty_files(tmp_path: Path) -> None:
    directory = nasty_directory(tmp_path / "sources", CLI_CASES)
    result = CliRunner().invoke(main, ["validate", str(directory)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == len(CLI_CASES)  # one problem each, one line each
    for line, case in zip(lines, sorted(CLI_CASES), strict=True):
        assert line.startswith(f"{directory / case}.yaml: "), line
        assert NASTY[case][1] in line, line


def pullmode_executable() -> str:
    beside = Path(sys.executable).parent / "pullmode"
    found = str(beside) if beside.exists() else shutil.which("pullmode")
    assert found, "the pullmode console script is not installed"
    return found


def test_validate_subprocess_on_an_alias_bomb_and_deep_nesting(tmp_path: Path) -> None:
    directory = nasty_directory(tmp_path / "sources", ["alias_bomb", "deep_flow_10000", "binary"])
    proc = subprocess.run(
        [pullmode_executable(), "validate", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{directory / name}.yaml" for name in ("alias_bomb", "binary", "deep_flow_10000")
    ]
    assert "alias bomb" in lines[0] and "not UTF-8" in lines[1] and "nested deeper than 50 levels" in lines[2]
