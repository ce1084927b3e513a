"""``${{scope.key}}`` templates in URLs, headers, params and bodies.

Templates are compiled when a source is loaded, so an unknown variable or an undeclared credential
key is a configuration error reported before anything is sent, never a literal ``${{...}}`` on the
wire. Datetime values (``cursor.watermark``, ``window.start``) take an optional strftime format:
``${{window.start:%Y/%m/%d}}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..events.model import TIMESTAMP_FORMAT

_OPEN = "${{"
_VARIABLE = re.compile(r"\$\{\{\s*(?P<scope>[A-Za-z_]\w*)\.(?P<key>[A-Za-z_][\w-]*)\s*(?::(?P<fmt>[^}]*))?\}\}")

SCOPES = ("credentials", "ingestionSource", "cursor", "window")
CURSOR_KEYS = ("watermark",)
WINDOW_KEYS = ("start", "end")


class TemplateError(ValueError):
    """A template is malformed or refers to something that does not exist here."""


def format_value(value: Any, fmt: str | None = None) -> str:
    """Render one value: datetimes as the engine's UTC text (or ``fmt``), everything else as ``str``."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(fmt or TIMESTAMP_FORMAT)
    if value is None:
        return ""
    return str(value)


@dataclass(frozen=True)
class Variable:
    scope: str
    key: str
    fmt: str | None

    @property
    def name(self) -> str:
        return f"{self.scope}.{self.key}"


class Template:
    """A compiled template: literal text and variables, rendered against a context mapping."""

    __slots__ = ("_parts", "text", "variables")

    def __init__(self, text: str):
        self.text = text
        parts: list[str | Variable] = []
        pos = 0
        while True:
            start = text.find(_OPEN, pos)
            if start < 0:
                parts.append(text[pos:])
                break
            m = _VARIABLE.match(text, start)
            if m is None:
                end = text.find("}}", start)
                snippet = text[start : end + 2] if end >= 0 else text[start:]
                raise TemplateError(f"malformed template {snippet!r}: expected ${{{{scope.key}}}}")
            parts.append(text[pos:start])
            parts.append(Variable(m.group("scope"), m.group("key"), m.group("fmt")))
            pos = m.end()
        self._parts = tuple(p for p in parts if p != "")
        self.variables = tuple(p for p in self._parts if isinstance(p, Variable))

    def uses_scope(self, scope: str) -> bool:
        return any(v.scope == scope for v in self.variables)

    def render(self, context: Mapping[str, Mapping[str, Any]]) -> str:
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                try:
                    value = context[part.scope][part.key]
                except KeyError:
                    raise TemplateError(f"template variable {part.name} has no value here") from None
                out.append(format_value(value, part.fmt))
        return "".join(out)


def check_variables(
    template: Template,
    *,
    credential_keys: Iterable[str],
    source_fields: Iterable[str],
    allowed_scopes: Iterable[str],
) -> list[str]:
    """Problems with a template's variables, as short sentences (empty when it is fine)."""
    problems: list[str] = []
    allowed = set(allowed_scopes)
    credential_keys = set(credential_keys)
    source_fields = set(source_fields)
    for var in template.variables:
        if var.scope not in SCOPES:
            problems.append(f"unknown template variable ${{{{{var.name}}}}} (scopes: {', '.join(SCOPES)})")
        elif var.scope not in allowed:
            problems.append(f"${{{{{var.name}}}}} is not available here (available: {', '.join(sorted(allowed))})")
        elif var.scope == "credentials" and var.key not in credential_keys:
            declared = ", ".join(sorted(credential_keys)) or "none"
            problems.append(f"${{{{{var.name}}}}} refers to an undeclared credential (declared: {declared})")
        elif var.scope == "ingestionSource" and var.key not in source_fields:
            problems.append(
                f"unknown template variable ${{{{{var.name}}}}} (fields: {', '.join(sorted(source_fields))})"
            )
        elif var.scope == "cursor" and var.key not in CURSOR_KEYS:
            problems.append(f"unknown template variable ${{{{{var.name}}}}} (cursor fields: watermark)")
        elif var.scope == "window" and var.key not in WINDOW_KEYS:
            problems.append(f"unknown template variable ${{{{{var.name}}}}} (window fields: start, end)")
        if var.fmt is not None and var.scope not in ("cursor", "window"):
            problems.append(f"${{{{{var.name}:{var.fmt}}}}}: a format only applies to cursor and window dates")
    return problems
