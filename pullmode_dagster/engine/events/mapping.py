"""``eventMapping``: its declared shape (:class:`EventMapping`), compiled once per source into one straight-line
function applied to every record.

A reference connector maps in code instead (``extract``); either way the values go through the same
field rules of :mod:`.rules`, so a record gets the same event or reject whichever way it was mapped.
The generated function builds its row from the rules' one table (:data:`.rules.ROW_RULES`), which
holds each rule's common case; no rule is written here.
Design (why straight-line code): docs/design/normalization.md#eventmapping
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from .codec import ReprFloat, dumps, plain_payloads
from .codegen import compile_function
from .jsonpath import MISSING, JsonPath, check_path, compile_path
from .model import EVENT_FIELDS, MAPPED_FIELDS, EventRow, EventRows, NormalizedEvent
from .rejects import Reject, raw_text
from .rules import (
    ROW_NAMESPACE,
    UNMAPPED,
    NormalizationError,
    invalid_unicode_reason,
    is_utf8,
    normalize_row,
    row_expression,
    stable_event_id,
    unserializable_reason,
)


class EventMapping(BaseModel):
    """A JSONPath per field of the normalized event (seed table). Only the timestamp is required;
    an unmapped ``source_event_id`` falls back to a stable hash of the raw event."""

    FIELDS: ClassVar[tuple[str, ...]] = MAPPED_FIELDS

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True
    )

    source_event_id: str | None = None
    event_timestamp: str
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    cost_usd: str | None = None
    tokens_input: str | None = None
    tokens_output: str | None = None

    @field_validator(*FIELDS)
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return check_path(value)


Result = EventRow | tuple[str, str]
"""The event as a row (11 fields), or (reason, raw text) for a reject (its location is named only then)."""

_ROW_WIDTH = len(EVENT_FIELDS)
"""A result this long is an event; a reject is (reason, raw text)."""


def _kind(raw: Any) -> str:
    """A record's JSON type as a reject names it: a decoded float is a float, however it is written."""
    return "float" if type(raw) is ReprFloat else type(raw).__name__


_TEMPLATE = """\
def fields(raw, raw_payload):
    if not isinstance(raw, dict):
        return f"record is not an object: {{kind(raw)}}", raw_payload
    try:
{body}
        return {row}
    except NormalizationError as exc:
        return str(exc), raw_payload
    except RecursionError:
        return "record is nested too deeply to normalize", raw_payload
    except Exception as exc:  # the last resort: one odd record must not fail its page
        return f"record cannot be normalized: {{type(exc).__name__}}: {{exc}}", raw_payload
"""


def _compile_fields(
    paths: dict[str, JsonPath], *, source_name: str, organization_id: str | None
) -> Callable[[Any, str], Result]:
    """``fields(raw, raw_payload) -> Result`` for an ``eventMapping``, generated as Python source.

    The checks keep the general order: not an object, the timestamp matched, the id matched (or
    the record's hash), then each field's rule in ``MAPPED_FIELDS`` order; the first that fails is
    the reason. None stands for "matched nothing" (a path treats a JSON null the same)."""
    namespace: dict[str, Any] = {
        **ROW_NAMESPACE,
        "MISSING": MISSING,
        "kind": _kind,
        "NormalizationError": NormalizationError,
        "stable_event_id": stable_event_id,
        "source_name": source_name,
        "organization_id": organization_id,
    }
    body: list[str] = []
    known: dict[tuple[str | int, ...], str] = {(): "raw"}

    def emit(line: str) -> None:
        body.append("        " + line)

    def lookup(steps: tuple[str | int, ...]) -> str:
        """The variable holding the value at ``steps``, emitting the lookups not done yet (a prefix
        several fields share is looked up once)."""
        if steps in known:
            return known[steps]
        parent = lookup(steps[:-1])
        name = known[steps] = f"v{len(known)}"
        step = steps[-1]
        if parent == "raw":  # the record is known to be an object
            emit(f"{name} = raw.get({step!r})" if isinstance(step, str) else f"{name} = None")
        elif isinstance(step, str):
            emit(f"{name} = {parent}.get({step!r}) if isinstance({parent}, dict) else None")
        else:
            inside = f"isinstance({parent}, list) and -len({parent}) <= {step} < len({parent})"
            emit(f"{name} = {parent}[{step}] if {inside} else None")
        return name

    def value(field: str) -> str:
        path = paths[field]
        if path.steps is not None:
            return lookup(path.steps)
        namespace[f"first_{field}"] = path.first  # wildcards, filters: the general evaluator
        emit(f"{field} = first_{field}(raw)")
        emit(f"{field} = None if {field} is MISSING else {field}")
        return field

    def required(field: str) -> str:
        name = value(field)
        emit(f"if {name} is None:")
        emit(f"    return {f'{field}: {paths[field].text} matched nothing'!r}, raw_payload")
        return name

    timestamp = required("event_timestamp")
    if "source_event_id" in paths:
        event_id = required("source_event_id")
    else:
        emit("source_event_id = stable_event_id(raw)")
        event_id = "source_event_id"
    found = {field: value(field) for field in MAPPED_FIELDS[2:] if field in paths}
    row = row_expression({"source_event_id": event_id, "event_timestamp": timestamp, **found}, UNMAPPED)
    source = _TEMPLATE.format(body="\n".join(body), row=row)
    return compile_function(source, "fields", title=f"eventMapping of {source_name}", namespace=namespace)


class MappedSource(Protocol):
    """What a mapper needs of a source (a :class:`~..declare.models.SourceConfig`): its name and
    organization; its ``event_mapping`` or, for a reference connector, its ``extract``."""

    @property
    def name(self) -> str: ...
    @property
    def organization_id(self) -> str | None: ...


class EventMapper:
    """Turns raw records into normalized events or rejects, never both, never neither."""

    @classmethod
    def for_source(cls, source: MappedSource) -> EventMapper:
        extract = getattr(source, "extract", None)
        mapping = getattr(source, "event_mapping", None)
        return cls(mapping, source_name=source.name, organization_id=source.organization_id, extract=extract)

    def __init__(
        self,
        mapping: EventMapping | None,
        *,
        source_name: str,
        organization_id: str | None,
        extract: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.source_name = source_name
        self.organization_id = organization_id
        self._extract = extract if mapping is None else None
        if self._extract is not None:
            self._fields: Callable[[Any, str], Result] = self._fields_extracted
            return
        paths = {
            field: compile_path(path)
            for field in EventMapping.FIELDS
            if mapping is not None and (path := getattr(mapping, field)) is not None
        }
        if "event_timestamp" not in paths:
            raise ValueError(f"source {source_name!r}: no eventMapping and no extract function")
        self._fields = _compile_fields(paths, source_name=source_name, organization_id=organization_id)

    def _normalize(self, raw: Any) -> Result:
        """The general way, for any Python value: a record either normalizes or is rejected with a
        reason and storable raw text (see :mod:`.rules` for the rules); never raises. The checks
        cost nothing on valid records: NaN, depth and type problems surface as exceptions of the one
        ``dumps``, and the Unicode check is O(1) for ASCII payloads."""
        try:
            raw_payload = dumps(raw)
        except (TypeError, ValueError, RecursionError) as exc:
            return unserializable_reason(exc), raw_text(raw)
        if not is_utf8(raw_payload):
            return invalid_unicode_reason(raw_payload), raw_text(raw)
        return self._fields(raw, raw_payload)

    def _fields_extracted(self, raw: Any, raw_payload: str) -> Result:
        assert self._extract is not None
        try:
            if not isinstance(raw, dict):
                raise NormalizationError(f"record is not an object: {_kind(raw)}")
            try:
                values = self._extract(raw)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                raise NormalizationError(
                    f"record does not have the expected shape: {type(exc).__name__}: {exc}"
                ) from None
            if values.get("event_timestamp") is None:
                raise NormalizationError("event_timestamp: the record has none")
            if values.get("source_event_id") is None:
                raise NormalizationError("source_event_id: the record has none")
            fields = {name: values.get(name) for name in EventMapping.FIELDS}
            return normalize_row(
                source_name=self.source_name, organization_id=self.organization_id, raw_payload=raw_payload, **fields
            )
        except NormalizationError as exc:
            return str(exc), raw_payload
        except RecursionError:
            return "record is nested too deeply to normalize", raw_payload
        except Exception as exc:  # the last resort: one odd record must not fail its page
            return f"record cannot be normalized: {type(exc).__name__}: {exc}", raw_payload

    def map_page(
        self,
        records: Sequence[Any],
        *,
        location: str,
        where: Callable[[int], str] | None = None,
        plain: bool = False,
    ) -> tuple[list[NormalizedEvent], list[Reject]]:
        """:meth:`map_rows`, the events as objects."""
        rows, rejects = self.map_rows(records, location=location, where=where, plain=plain)
        return list(rows), rejects

    def map_rows(
        self,
        records: Sequence[Any],
        *,
        location: str,
        where: Callable[[int], str] | None = None,
        plain: bool = False,
    ) -> tuple[EventRows, list[Reject]]:
        """A page's events and rejects. ``where(i)`` names record ``i`` (default: "<location>, record
        <i+1>"); asked for rejects only. ``plain``: the records are plain JSON as
        :func:`~.codec.decode_json` decodes it, so their ``raw_payload`` is written the fast way
        (:func:`~.codec.plain_payloads`)."""
        rows: list[EventRow] = []
        rejects: list[Reject] = []
        fields, general = self._fields, self._normalize
        payloads = plain_payloads(records) if plain else [None] * len(records)
        for i, (raw, payload) in enumerate(zip(records, payloads, strict=True)):
            result = general(raw) if payload is None else fields(raw, payload)
            if len(result) == _ROW_WIDTH:
                rows.append(result)  # type: ignore[arg-type]  # its width makes it a row; a cast is a call per record
            else:
                name = where(i) if where is not None else f"{location}, record {i + 1}"
                rejects.append(Reject(self.source_name, *result, name))
        return EventRows(rows), rejects
