"""Loading the sources directory: every ``*.yaml`` file into a typed source, or into problems.

Problems are one line each and name the file, the source and the field; none of them echoes a
value from the file (a header may hold a literal token), only field names and our own words.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .adapters import ADAPTERS, PLANNED_ADAPTERS
from .config import SourceConfig
from .errors import ConfigError

DEFAULT_SOURCES_DIR = "sources"


def sources_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$PULLMODE_SOURCES_DIR``, else ``sources/`` under the current directory."""
    return Path(explicit or os.environ.get("PULLMODE_SOURCES_DIR") or DEFAULT_SOURCES_DIR)


@dataclass(frozen=True)
class InvalidSource:
    """A file that did not load: where it is, the name it claims (or its file stem), its problems."""

    file: Path
    name: str
    problems: tuple[str, ...]


@dataclass
class SourceSet:
    """Every valid source by name, and one line per problem found in the directory."""

    directory: Path
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    invalid: list[InvalidSource] = field(default_factory=list)

    def get(self, name: str) -> SourceConfig:
        try:
            return self.sources[name]
        except KeyError:
            hint = difflib.get_close_matches(name, self.sources, n=1)
            suffix = f"; did you mean {hint[0]!r}?" if hint else ""
            known = ", ".join(sorted(self.sources)) or "none"
            raise ConfigError([f"no source named {name!r} in {self.directory} (sources: {known}){suffix}"]) from None

    def raise_for_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _pydantic_problems(exc: ValidationError, model: type[SourceConfig]) -> list[tuple[str, str]]:
    known = [f.alias or n for n, f in model.model_fields.items()]
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        where = _loc(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            message = "unknown field" + (f"; did you mean {hint[0]!r}?" if hint else "")
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.append((where, message))
    return problems


def parse_source(doc: Any, *, file: Path) -> tuple[SourceConfig | None, list[str]]:
    """One file's document into a source, or into problems (``file: source 'x': field: message``)."""
    label = str(file)
    if not isinstance(doc, dict):
        return None, [f"{label}: the file must hold one mapping (name: ..., adapter: ...)"]
    name = doc.get("name") if isinstance(doc.get("name"), str) else file.stem
    prefix = f"{label}: source {name!r}"
    adapter = doc.get("adapter")
    if adapter is None:
        return None, [f"{prefix}: adapter: required field is missing (adapters: {', '.join(ADAPTERS)})"]
    puller = ADAPTERS.get(adapter) if isinstance(adapter, str) else None
    if puller is None:
        if adapter in PLANNED_ADAPTERS:
            message = f"adapter {adapter!r} is not available in this version (available: {', '.join(ADAPTERS)})"
        else:
            message = f"unknown adapter {adapter!r} (available: {', '.join(ADAPTERS)})"
        return None, [f"{prefix}: adapter: {message}"]
    model = puller.config_model
    try:
        source = model.model_validate(doc)
    except ValidationError as exc:
        return None, [f"{prefix}: {where}: {message}" for where, message in _pydantic_problems(exc, model)]
    problems = [f"{prefix}: {where}: {message}" for where, message in source.problems()]
    if problems:
        return None, problems
    source.bind_file(file.resolve())
    return source, []


def _claimed_name(doc: Any, path: Path) -> str:
    name = doc.get("name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) and name else path.stem


def load_sources(directory: str | os.PathLike[str] | None = None) -> SourceSet:
    """Load every ``*.yaml`` / ``*.yml`` file. Never raises for a bad file: see ``problems`` and
    ``invalid`` (one entry per file that did not load)."""
    root = sources_dir(directory)
    result = SourceSet(directory=root)
    if not root.is_dir():
        result.problems.append(f"{root}: sources directory does not exist (set PULLMODE_SOURCES_DIR)")
        return result
    files: dict[str, Path] = {}

    def invalid(path: Path, name: str, problems: list[str]) -> None:
        result.problems.extend(problems)
        result.invalid.append(InvalidSource(path, name, tuple(problems)))

    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            invalid(path, path.stem, [f"{path}: not valid YAML{where}: {problem}"])
            continue
        except (OSError, UnicodeDecodeError) as exc:
            invalid(path, path.stem, [f"{path}: cannot read: {exc}"])
            continue
        source, problems = parse_source(doc, file=path)
        if source is None:
            invalid(path, _claimed_name(doc, path), problems)
            continue
        if source.name in files:
            first = files[source.name]
            invalid(
                path, source.name, [f"{path}: source {source.name!r}: name: duplicate name, already used by {first}"]
            )
            if result.sources.pop(source.name, None) is not None:
                result.invalid.append(
                    InvalidSource(first, source.name, (f"{first}: source {source.name!r}: name: duplicate name",))
                )
            continue
        files[source.name] = path
        result.sources[source.name] = source
    return result
