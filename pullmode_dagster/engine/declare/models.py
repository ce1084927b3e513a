"""The typed shape of a source file, shared by every adapter.

A file is the LangWatch puller config plus the IngestionSource row. The seed's camelCase names are
accepted as written and snake_case spellings too; unknown fields are errors (a typo such as
``cursorJsonPth`` must not be ignored silently).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from pydantic.alias_generators import to_camel

from ..store.retention import MAX_RETENTION_DAYS
from .content import EventContent
from .credentials import CredentialRef
from .templating import Template, TemplateError, check_variables

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

ConfigProblem = tuple[str, str]
"""(field, message): one problem with one field of a source file."""

CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
"""Shorthands croniter expands to a 5-field expression."""
CRON_HORIZON_YEARS = 8
"""A schedule that does not fire within this many years never fires (Feb 29 fires within 8)."""
_CRON_HELP = "a 5-field cron expression (minute hour day-of-month month day-of-week), in UTC"

START_DATE_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
"""The earliest ``startDate``: the Unix epoch, before any audit log and any API's time filter. A year
of the wrong century (``0026``, ``1026``) is a typo, and it would cost Dagster hundreds of thousands of
partitions (``%Y`` is not even zero-padded below the year 1000)."""
START_DATE_END = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
"""``startDate`` is before this: a partition's window, and a day or hour after it, stay within what a
datetime holds."""
_ISO_DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}")
_DATE_HELP = "an ISO 8601 date (2026-01-01) or date-time (2026-01-01T00:00:00Z)"


def cron_problem(value: str, *, now: dt.datetime | None = None) -> str | None:
    """Why ``value`` cannot drive a poller, or None. Bounded: croniter searches at most
    ``CRON_HORIZON_YEARS`` for the next fire time, so an expression that never fires
    (``0 0 30 2 *``) is found at once instead of failing the poller later."""
    shown = f": {value!r}" if len(value) <= 64 and value.isprintable() else ""
    try:
        valid = croniter.is_valid(value)
    except Exception:  # croniter raises more than its own errors on odd input
        valid = False
    if not valid:
        return f"not a valid cron expression{shown}"
    fields = value.split()
    if len(fields) != 5 and value.strip().lower() not in CRON_ALIASES:
        return f"has {len(fields)} fields; expected {_CRON_HELP}; seconds and year fields are not supported"
    start = now or dt.datetime.now(dt.UTC)
    try:
        croniter(value, start, max_years_between_matches=CRON_HORIZON_YEARS).get_next(dt.datetime)
    except Exception:
        return f"never fires: no time matches it within {CRON_HORIZON_YEARS} years (expected {_CRON_HELP})"
    return None


def _as_utc(value: dt.date | dt.datetime) -> dt.datetime:
    """A date (its midnight) or date-time as an aware UTC datetime; naive means UTC, as everywhere."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


DATE_RANGE_PROBLEM = (
    f"out of range: from {START_DATE_MIN:%Y-%m-%d} to {START_DATE_END - dt.timedelta(days=1):%Y-%m-%d} "
    "in UTC (is the year four digits?)"
)
"""What a date outside the range is told: ``startDate`` and ``pullmode export``'s window say the same."""


def in_date_range(value: dt.date | dt.datetime) -> dt.datetime | None:
    """``value`` as an aware UTC datetime if it is from :data:`START_DATE_MIN` up to (not including)
    :data:`START_DATE_END`, else None: the one range rule for every date a user gives."""
    try:
        instant = _as_utc(value)
    except OverflowError:  # an offset moved it past year 1 or 9999
        return None
    return instant if START_DATE_MIN <= instant < START_DATE_END else None


class Model(BaseModel):
    """camelCase or snake_case in, frozen, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )


class SourceConfig(Model):
    """Fields every source has, whatever its adapter (the IngestionSource row)."""

    name: str = Field(pattern=NAME_PATTERN, description="unique across the sources directory")
    adapter: str
    enabled: bool = True
    organization_id: str | None = None
    owner: str | None = Field(default=None, description="team or person; shown as a Dagster tag")
    description: str | None = None
    partitioning: Literal["daily", "hourly"] = "daily"
    start_date: dt.date | dt.datetime
    schedule: str
    credentials: dict[str, CredentialRef] = Field(default_factory=dict)
    probe: bool = Field(
        default=True,
        description="ask the source whether anything is new before each scheduled poll run; false: a run on every tick",
    )
    event_content: EventContent | None = Field(
        default=None,
        description="what of its events' field values Dagster's storage may hold: hidden | masked | shown; "
        "default $PULLMODE_EVENT_CONTENT, else hidden",
    )
    pull_deadline_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="a pull stops cleanly at a page boundary after this long, with a resumable cursor",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RETENTION_DAYS,
        description="`pullmode prune` deletes this source's events dated more than this many days ago; "
        "unset: PULLMODE_RETENTION_DAYS, else kept",
    )

    _file: Path | None = PrivateAttr(default=None)

    @field_validator("start_date", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        """Only ISO 8601 text (or a YAML date): pydantic would read a number, or digits such as
        ``20260101``, as epoch seconds (1970-08-23), a date no one meant."""
        if isinstance(value, dt.date) or (isinstance(value, str) and _ISO_DATE.match(value)):
            return value
        raise ValueError(f"must be {_DATE_HELP}, with a four-digit year")

    @field_validator("start_date")
    @classmethod
    def _date_range(cls, value: dt.date | dt.datetime) -> dt.date | dt.datetime:
        if in_date_range(value) is None:
            raise ValueError(DATE_RANGE_PROBLEM)
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("credentials")
    @classmethod
    def _credential_keys(cls, value: dict[str, CredentialRef]) -> dict[str, CredentialRef]:
        for key in value:
            if not key.isidentifier():
                raise ValueError(f"credential key {key!r} must be a plain identifier")
        return value

    @property
    def file(self) -> Path | None:
        """The YAML file this source was loaded from (relative credential files resolve next to it)."""
        return self._file

    def bind_file(self, path: Path) -> None:
        self._file = path

    def watermark_rewind_problem(self) -> str | None:
        """Why a cursor of a watermark alone would not set where this source's next pull starts
        (None: it does). ``pullmode rewind --to`` refuses such a source and points at ``--cursor``."""
        return None

    @property
    def start_datetime(self) -> dt.datetime:
        """``startDate`` as an instant in UTC (a date is its midnight, naive means UTC)."""
        return _as_utc(self.start_date)

    def template_fields(self) -> dict[str, Any]:
        """What ``${{ingestionSource.<field>}}`` can see: the scalar fields that are set, by both
        spellings."""
        fields: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or isinstance(value, dict | list | BaseModel):
                continue
            fields[name] = value
            if info.alias:
                fields[info.alias] = value
        return fields

    def template_problems(self, templates: dict[str, str | None], *, scopes: tuple[str, ...]) -> list[ConfigProblem]:
        """Compile each template and check its variables against this source."""
        problems: list[ConfigProblem] = []
        all_fields = {n for n, _ in type(self).model_fields.items()} | {
            i.alias for i in type(self).model_fields.values() if i.alias
        }
        set_fields = set(self.template_fields())
        for field, text in templates.items():
            if text is None:
                continue
            try:
                template = Template(text)
            except TemplateError as exc:
                problems.append((field, str(exc)))
                continue
            for message in check_variables(
                template, credential_keys=self.credentials, source_fields=all_fields, allowed_scopes=scopes
            ):
                problems.append((field, message))
            for var in template.variables:
                if var.scope == "ingestionSource" and var.key in all_fields and var.key not in set_fields:
                    problems.append((field, f"${{{{{var.name}}}}} refers to a field this file does not set"))
        return problems

    def problems(self) -> list[ConfigProblem]:
        """Cross-field checks that pydantic's per-field validation cannot express."""
        return []

    def warnings(self) -> list[ConfigProblem]:
        """Not errors, but worth a line from ``validate`` (an endpoint override in the environment)."""
        return []

    FIXED_FIELDS: ClassVar[frozenset[str]] = frozenset()
    """Fields a reference connector fixes itself: setting one is an error that says so."""

    @classmethod
    def adapter_name(cls) -> str:
        annotation = cls.model_fields["adapter"].annotation
        return str(getattr(annotation, "__args__", ("",))[0])

    def describe(self) -> str:
        """One line on what this source pulls and from where (no secret: refs, not values)."""
        return f"{self.adapter} source {self.name}"
