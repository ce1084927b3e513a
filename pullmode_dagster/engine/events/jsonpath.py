"""The one JSONPath compiler.

Simple paths (``$.a.b``, ``$.a[0].b``, ``$['@odata.nextLink']``) compile to a tuple of steps walked
with plain dict/list lookups: a general evaluator costs about 7 µs a lookup, which dominates mapping
at tens of thousands of events a second. Everything else (wildcards, filters, slices) goes to
jsonpath-ng's extended parser, compiled once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext import parse as _parse_general

MISSING: Any = object()
"""Returned by :meth:`JsonPath.first` when nothing matches (``None`` is a legitimate JSON value)."""

_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_@$][\w@$-]*)      # .name
      | \[\s*'(?P<sq>(?:[^'\\]|\\.)*)'\s*\]  # ['name']
      | \[\s*"(?P<dq>(?:[^"\\]|\\.)*)"\s*\]  # ["name"]
      | \[\s*(?P<idx>-?\d+)\s*\]             # [0]
    """,
    re.VERBOSE,
)


class JsonPathSyntaxError(ValueError):
    """The path does not parse; the message says why."""


def check_path(value: str | None) -> str | None:
    """``value`` if it compiles (None passes), else a ValueError saying why: the validator of every
    field of a source file that holds a path."""
    if value is not None:
        try:
            compile_path(value)
        except JsonPathSyntaxError as exc:
            raise ValueError(str(exc)) from None
    return value


def _simple_steps(path: str) -> tuple[str | int, ...] | None:
    """Split a simple path into steps, or return None when it needs the general evaluator."""
    if not path.startswith("$"):
        return None
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            return None
        if m.group("name") is not None:
            steps.append(m.group("name"))
        elif m.group("idx") is not None:
            steps.append(int(m.group("idx")))
        else:
            quoted = m.group("sq") if m.group("sq") is not None else m.group("dq")
            steps.append(re.sub(r"\\(.)", r"\1", quoted))
        pos = m.end()
    return tuple(steps)


def _walker(steps: tuple[str | int, ...]) -> Callable[[Any], Any]:
    def walk(doc: Any) -> Any:
        cur = doc
        for step in steps:
            if type(step) is str:
                if not isinstance(cur, dict):
                    return MISSING
                cur = cur.get(step, MISSING)
                if cur is MISSING:
                    return MISSING
            else:
                # type(step) is str (faster than isinstance here) leaves step unnarrowed for mypy: an int.
                if not isinstance(cur, list) or not -len(cur) <= step < len(cur):  # type: ignore[operator]
                    return MISSING
                cur = cur[step]
        return cur

    if len(steps) == 1 and isinstance(steps[0], str):
        key = steps[0]

        def walk_one(doc: Any) -> Any:
            return doc.get(key, MISSING) if isinstance(doc, dict) else MISSING

        return walk_one
    return walk


class JsonPath:
    """A compiled path. ``first`` returns the first match or MISSING; ``all`` every match."""

    __slots__ = ("_general", "_walk", "first", "is_simple", "steps", "text")

    def __init__(self, text: str):
        self.text = text
        steps = _simple_steps(text)
        self.steps = steps  # a simple path's keys and indexes (the event mapping inlines them); else None
        self.is_simple = steps is not None
        self._walk = _walker(steps) if steps is not None else None
        # The hot path: a simple path's ``first`` is the walker itself, no method call in between.
        self.first: Callable[[Any], Any] = self._walk or self._first_general
        self._general = None
        if steps is None:
            if not text.startswith("$"):
                raise JsonPathSyntaxError(f"JSONPath {text!r} must start with '$'")
            try:
                self._general = _parse_general(text)
            except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
                raise JsonPathSyntaxError(f"invalid JSONPath {text!r}: {exc}") from None

    def _first_general(self, doc: Any) -> Any:
        matches = self._general.find(doc)  # type: ignore[union-attr]  # set when _walk is not: no check per record
        return matches[0].value if matches else MISSING

    def all(self, doc: Any) -> list[Any]:
        if self._walk is not None:
            value = self._walk(doc)
            return [] if value is MISSING else [value]
        return [m.value for m in self._general.find(doc)]  # type: ignore[union-attr]  # set when _walk is not

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"


_cache: dict[str, JsonPath] = {}


def compile_path(text: str) -> JsonPath:
    """Compile (and memoize) a JSONPath. Raises :class:`JsonPathSyntaxError`."""
    compiled = _cache.get(text)
    if compiled is None:
        compiled = _cache[text] = JsonPath(text)
    return compiled
