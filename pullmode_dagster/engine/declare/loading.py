"""Loading the sources directory: every ``*.yaml`` file into a typed source, or into problems.

Problems are one line each and name the file, the source and the field; none of them echoes a
value from the file (a header may hold a literal token), only field names and our own words. Each
is a :class:`~..errors.Problem`, which also carries the name of the source it belongs to.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import ConfigError, Problem, PullmodeError
from .files import read_capped
from .models import SourceConfig

if TYPE_CHECKING:
    from ..store import TraceStore

DEFAULT_SOURCES_DIR = "sources"


class AdapterSpec(Protocol):
    """What the loader needs of an adapter: the model its files are validated with."""

    @property
    def config_model(self) -> type[SourceConfig]: ...


Adapters = Mapping[str, AdapterSpec]
"""The adapters a file may name, by name: ``engine.adapters.ADAPTERS``, handed in by whoever loads
(the CLI, the code location), so that the declared source stays below the adapters that pull it."""

MAX_SOURCE_FILE_BYTES = 1 << 20
"""A source file is a few KiB; a larger one is refused before it is parsed."""
MAX_YAML_DEPTH = 50
"""Nesting deeper than this is refused (PyYAML's composer is recursive)."""
MAX_YAML_VALUES = 50_000
"""Values in a file, counted with every alias expanded (a long string counts once per 64 characters)."""
MAX_PROBLEMS_PER_FILE = 50
"""More are summed up in one line: a file of junk does not bury the other files' problems."""


def sources_dirs(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """``explicit``, else ``$PULLMODE_SOURCES_DIR``, else ``sources/`` under the current directory.
    Several directories are separated by ``os.pathsep`` (``:``), as in ``PATH`` (``make dev`` serves
    the demo's sources and the project's so); a source name is unique across all of them."""
    raw = os.fspath(explicit) if explicit else os.environ.get("PULLMODE_SOURCES_DIR") or ""
    return [Path(part) for part in raw.split(os.pathsep) if part] or [Path(DEFAULT_SOURCES_DIR)]


@dataclass(frozen=True)
class InvalidSource:
    """A file that did not load: where it is, the name it claims (or its file stem), its problems."""

    file: Path
    name: str
    problems: tuple[Problem, ...]


@dataclass
class SourceSet:
    """Every valid source by name, and one line per problem found in the directory."""

    directories: list[Path]
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    invalid: list[InvalidSource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Valid sources that deserve a second look (an endpoint override set in the environment)."""

    @property
    def where(self) -> str:
        """The directories, as messages name them (``a:b`` for several)."""
        return os.pathsep.join(str(d) for d in self.directories)

    def get(self, name: str) -> SourceConfig:
        try:
            return self.sources[name]
        except KeyError:
            left_out = [p for invalid in self.invalid if invalid.name == name for p in invalid.problems]
            if left_out:  # its own problems, rather than "no source named"
                raise ConfigError(left_out) from None
            hint = difflib.get_close_matches(name, self.sources, n=1)
            suffix = f"; did you mean {hint[0]!r}?" if hint else ""
            known = ", ".join(sorted(self.sources)) or "none"
            raise ConfigError([f"no source named {name!r} in {self.where} (sources: {known}){suffix}"]) from None


def one_line(text: str, *, limit: int = 1000) -> str:
    """``text`` as one printable line: line breaks and other unprintable characters escaped the way
    Python writes them in a string literal, cut at ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line_problem(problem: Problem) -> Problem:
    """:func:`one_line` that keeps the source the problem belongs to."""
    return Problem(one_line(problem), problem.source)


def _shown(value: object, limit: int = 64) -> str:
    """A field name or key from the file, safe to put in a one-line message."""
    return one_line(str(value), limit=limit)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{_shown(part)}" if out else _shown(part))
    return out or "(file)"


def _pydantic_problems(exc: ValidationError, model: type[SourceConfig]) -> list[tuple[str, str]]:
    known = [f.alias or n for n, f in model.model_fields.items()]
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        where = _loc(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and str(err["loc"][-1]) in model.FIXED_FIELDS:
            message = (
                f"fixed by the {model.adapter_name()} connector (URL, auth, paging and mapping are built in; "
                "only its own fields and credentials are entered)"
            )
        elif err["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(err["loc"][-1])[:100], known, n=1)
            message = "unknown field" + (f"; did you mean {hint[0]!r}?" if hint else "")
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.append((where, message))
    return problems


def _display_name(doc: dict[Any, Any], file: Path) -> str:
    name = doc.get("name")
    return name if isinstance(name, str) and name and len(name) <= 64 else file.stem


def parse_source(doc: Any, *, file: Path, adapters: Adapters) -> tuple[SourceConfig | None, list[Problem]]:
    """One file's document into a source, or into problems (``file: source 'x': field: message``).
    Never raises: whatever the document holds, the answer is a source or one line per problem."""
    label = str(file)
    if doc is None:
        return None, [Problem(f"{label}: the file is empty; it must hold one mapping (name: ..., adapter: ...)")]
    if not isinstance(doc, dict):
        return None, [Problem(f"{label}: the file must hold one mapping (name: ..., adapter: ...)")]
    name = _display_name(doc, file)

    def problem(text: str) -> Problem:
        return Problem(f"{label}: source {name!r}: {text}", name)

    try:
        return _parse_mapping(doc, file=file, problem=problem, adapters=adapters)
    except Exception as exc:  # a bug, not the user's: still one line, and the other files load
        return None, [problem(f"unexpected {type(exc).__name__} while checking this file (please report it)")]


def _parse_mapping(
    doc: dict[Any, Any], *, file: Path, problem: Callable[[str], Problem], adapters: Adapters
) -> tuple[SourceConfig | None, list[Problem]]:
    available = ", ".join(adapters)
    adapter = doc.get("adapter")
    if adapter is None:
        return None, [problem(f"adapter: required field is missing (adapters: {available})")]
    if not isinstance(adapter, str):
        return None, [problem(f"adapter: must be the name of an adapter (available: {available})")]
    spec = adapters.get(adapter)
    if spec is None:
        shown = f" {adapter!r}" if len(adapter) <= 64 and adapter.isprintable() else ""
        return None, [problem(f"adapter: unknown adapter{shown} (available: {available})")]
    model = spec.config_model
    try:
        source = model.model_validate(doc)
    except ValidationError as exc:
        return None, [problem(f"{where}: {message}") for where, message in _pydantic_problems(exc, model)]
    source.bind_file(file.resolve())  # before the checks: a custom module's redactor reads relative secret files
    problems = [problem(f"{where}: {message}") for where, message in source.problems()]
    if problems:
        return None, problems
    return source, []


def _claimed_name(doc: Any, path: Path) -> str:
    return _display_name(doc, path) if isinstance(doc, dict) else path.stem


class SourceFileError(Exception):
    """A source file that cannot be read or parsed; the message is one line in our own words."""


class _Refused(yaml.MarkedYAMLError):
    """A limit of :class:`BoundedLoader`, or a YAML problem PyYAML would word with the file's text."""

    def __init__(self, problem: str, mark: Any, *, refused: bool = True):
        super().__init__(problem=problem, problem_mark=mark)
        self.refused = refused


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that cannot be made to hang or blow the stack.

    Refuses nesting deeper than ``MAX_YAML_DEPTH`` (the composer is recursive), more than
    ``MAX_YAML_VALUES`` values with every alias expanded (a "billion laughs" file is a few hundred
    bytes that expand to 10⁹ values: each node's expanded size is computed once, so the check is
    linear in the file), recursive aliases and duplicate keys (PyYAML would keep the last one silently).
    Errors raised while constructing a value (an impossible date, an integer too long) become YAML
    errors with a position and without the value."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._aliases = 0
        self._weights: dict[int, int] = {}

    def _count(self, weight: int, mark: Any) -> None:
        self._values += weight
        if self._values > MAX_YAML_VALUES:
            if self._aliases:
                raise _Refused(f"its aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?)", mark)
            raise _Refused(f"holds more than {MAX_YAML_VALUES} values; a source file is much smaller", mark)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.get_event()
            target = self.anchors.get(event.anchor)
            if target is None:
                raise _Refused(
                    "an alias (*name) refers to no anchor (&name) defined before it", event.start_mark, refused=False
                )
            weight = self._weights.get(id(target))
            if weight is None:
                raise _Refused("an alias refers to a node that contains it (a recursive structure)", event.start_mark)
            self._aliases += 1
            self._count(weight, event.start_mark)
            return target
        event = self.peek_event()
        if event.anchor is not None and event.anchor in self.anchors:
            raise _Refused("an anchor (&name) is defined twice", event.start_mark, refused=False)
        if self._depth >= MAX_YAML_DEPTH:
            raise _Refused(f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        self._count(1, event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, ScalarNode):
            extra = len(node.value) // 64
            self._count(extra, node.start_mark)
            weight = 1 + extra
        else:
            children = node.value if isinstance(node, SequenceNode) else [n for pair in node.value for n in pair]
            weight = 1 + sum(self._weights[id(child)] for child in children)
        self._weights[id(node)] = weight
        return node

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    raise _Refused(f"duplicate key {_shown(key.value)!r}", key.start_mark, refused=False)
                seen.add((key.tag, key.value))
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception:
            raise _Refused(
                "a value cannot be read as its YAML type (an impossible date or time, a number with too many "
                "digits, a wrong explicit tag)",
                node.start_mark,
                refused=False,
            ) from None


_QUOTED = re.compile(r"'[^'\n]{4,}'|\"[^\"\n]{4,}\"")
"""What PyYAML quotes from the file in its messages: longer than a character, it is not shown."""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return (
            f"not valid YAML: a control character (#x{exc.character:04x}) at offset {exc.position}; "
            "is it a binary file?"
        )
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, ComposerError) and exc.problem == "but found another document" and mark:
        return f"holds more than one YAML document (another starts at line {mark.line + 1}); one source per file"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or "syntax error"
    if not isinstance(exc, _Refused):  # our own words need no scrubbing
        problem = _QUOTED.sub("'...'", problem)
    if getattr(exc, "refused", False):
        return f"refused{where}: {problem}"
    return f"not valid YAML{where}: {problem}"


def _check_source_stat(st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise SourceFileError("is a directory, not a source file")
    if not stat.S_ISREG(st.st_mode):
        raise SourceFileError("is not a regular file (a FIFO, socket or device); not read")
    if st.st_size > MAX_SOURCE_FILE_BYTES:
        raise SourceFileError(
            f"is too large ({st.st_size} bytes); a source file is at most {MAX_SOURCE_FILE_BYTES} bytes (1 MiB)"
        )


def read_source_text(path: Path) -> str:
    """The file's text: a regular file of at most ``MAX_SOURCE_FILE_BYTES``, in UTF-8. Its type is
    checked before it is opened (a FIFO would block), and it is opened non-blocking and read up to
    the cap, so nothing here waits or reads without end."""
    try:
        data = read_capped(path, MAX_SOURCE_FILE_BYTES, _check_source_stat)
    except FileNotFoundError:
        raise SourceFileError("cannot read: no such file (a broken symbolic link?)") from None
    except OSError as exc:
        raise SourceFileError(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    if data is None:
        raise SourceFileError(f"is too large; a source file is at most {MAX_SOURCE_FILE_BYTES} bytes (1 MiB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceFileError(
            f"is not UTF-8 text (an invalid byte at offset {exc.start}); is it a binary file?"
        ) from None


def load_source_document(path: Path) -> Any:
    """Read and parse one source file, within every limit above. Raises :class:`SourceFileError`
    (one line, our own words, without the file path) for anything that is not one YAML document."""
    text = read_source_text(path)
    loader: BoundedLoader | None = None
    try:
        loader = BoundedLoader(text)  # checks every character at once
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise SourceFileError(_yaml_problem(exc)) from None
    except RecursionError:  # defence in depth: MAX_YAML_DEPTH keeps the composer well inside the limit
        raise SourceFileError(f"refused: nested deeper than {MAX_YAML_DEPTH} levels") from None
    except MemoryError:
        raise SourceFileError("refused: parsing it needs more memory than there is") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_sources(directory: str | os.PathLike[str] | None = None, *, adapters: Adapters) -> SourceSet:
    """Load every ``*.yaml`` / ``*.yml`` file of the sources directory (or directories: see
    ``sources_dirs``). Never raises for a bad file: see ``problems`` and ``invalid`` (one entry per
    file that did not load). Every problem is one line that starts with the file's path (or the
    directory's); none echoes a value from the file."""
    roots = sources_dirs(directory)
    result = SourceSet(directories=roots)
    files: dict[str, Path] = {}
    for root in roots:
        _load_directory(root, result, files, adapters)
    return result


def _load_directory(root: Path, result: SourceSet, files: dict[str, Path], adapters: Adapters) -> None:
    """One directory's files into ``result``; ``files``: the file of each name loaded so far, in
    this directory or an earlier one (a name is unique across them)."""
    if not root.is_dir():
        result.problems.append(
            Problem(one_line(f"{root}: sources directory does not exist (set PULLMODE_SOURCES_DIR)"))
        )
        return
    try:
        with os.scandir(root):
            pass
    except OSError as exc:
        result.problems.append(Problem(one_line(f"{root}: cannot read the sources directory: {exc.strerror or exc}")))
        return

    def invalid(path: Path, name: str, problems: list[Problem]) -> None:
        lines = [_one_line_problem(p) for p in problems[:MAX_PROBLEMS_PER_FILE]]
        if len(problems) > MAX_PROBLEMS_PER_FILE:
            more = len(problems) - MAX_PROBLEMS_PER_FILE
            # The lines it sums up all belong to the same source (or to none).
            lines.append(Problem(one_line(f"{path}: {more} more problems in this file not shown"), problems[0].source))
        result.problems.extend(lines)
        result.invalid.append(InvalidSource(path, name, tuple(lines)))

    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            doc = load_source_document(path)
        except SourceFileError as exc:
            invalid(path, path.stem, [Problem(f"{path}: {exc}")])
            continue
        source, problems = parse_source(doc, file=path, adapters=adapters)
        if source is None:
            invalid(path, _claimed_name(doc, path), problems)
            continue
        if source.name in files:
            first = files[source.name]
            duplicate = f"{path}: source {source.name!r}: name: duplicate name, already used by {first}"
            invalid(path, source.name, [Problem(duplicate, source.name)])
            if result.sources.pop(source.name, None) is not None:
                first_problem = Problem(f"{first}: source {source.name!r}: name: duplicate name", source.name)
                result.invalid.append(InvalidSource(first, source.name, (first_problem,)))
            continue
        files[source.name] = path
        result.sources[source.name] = source
        result.warnings.extend(one_line(f"{path}: source {source.name!r}: {w}: {m}") for w, m in source.warnings())


def check_source(store: TraceStore, source: str, *, defined: Collection[str]) -> None:
    """A source is known if a source file defines it or the store holds its events (its file may
    have been removed since: its history can still be exported). Unknown names list both."""
    if source in defined or store.holds(source):
        return
    stored = store.source_names()
    hint = difflib.get_close_matches(source, [*defined, *stored], n=1)
    suffix = f"; did you mean {hint[0]!r}?" if hint else ""
    raise PullmodeError(
        f"unknown source {one_line(repr(source), limit=80)} "
        f"(sources: {', '.join(sorted(defined)) or 'none'}; the store holds: {', '.join(stored) or 'none'}){suffix}"
    )
