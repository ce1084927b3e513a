"""`pullmode validate`: every problem reported before anything is sent, one line each, naming the
file, the source and the field, never a secret."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pullmode_dagster import cli
from pullmode_dagster.cli import main
from pullmode_dagster.engine import pull as pull_module
from pullmode_dagster.engine.adapters import ADAPTERS
from pullmode_dagster.engine.declare.loading import MAX_PROBLEMS_PER_FILE, load_sources
from pullmode_dagster.engine.errors import ConfigError, Problem

from .conftest import SourceWriter
from .documents import http_source

URL = "https://audit.acme.example/v1/events"


def problems_for(sources: SourceWriter, **overrides: object) -> list[str]:
    sources.write(http_source(URL, **overrides))
    return load_sources(sources.directory, adapters=ADAPTERS).problems


def test_valid_source_loads_with_seed_names_and_snake_case(sources: SourceWriter) -> None:
    camel = sources.load(http_source(URL, maxPagesPerRun=7))
    assert camel.cursor_json_path == "$.next_cursor"
    assert camel.max_pages_per_run == 7
    assert camel.organization_id == "org_42"
    doc = http_source(URL, name="snake")
    doc["events_json_path"] = doc.pop("eventsJsonPath")
    doc["cursor_json_path"] = doc.pop("cursorJsonPath")
    doc["organization_id"] = doc.pop("organizationId")
    snake = sources.load(doc)
    assert snake.events_json_path == "$.data"
    assert snake.organization_id == "org_42"


def test_each_problem_names_file_source_and_field(sources: SourceWriter) -> None:
    problems = problems_for(sources, schedule="every five minutes", cursorJsonPath="$.next[")
    prefix = f"{sources.directory / 'acme_audit.yaml'}: source 'acme_audit': "
    assert len(problems) == 2
    assert f"{prefix}schedule: not a valid cron expression: 'every five minutes'" in problems
    assert any(p.startswith(f"{prefix}cursorJsonPath: invalid JSONPath '$.next[':") for p in problems)


def test_unknown_field_suggests_the_right_spelling(sources: SourceWriter) -> None:
    doc = http_source(URL)
    doc["cursorJsonPth"] = doc.pop("cursorJsonPath")
    sources.write(doc)
    assert load_sources(sources.directory, adapters=ADAPTERS).problems == [
        f"{sources.directory / 'acme_audit.yaml'}: source 'acme_audit': cursorJsonPth: unknown field; "
        "did you mean 'cursorJsonPath'?"
    ]


def test_unknown_adapter(sources: SourceWriter) -> None:
    assert problems_for(sources, adapter="ftp_polling") == [
        f"{sources.directory / 'acme_audit.yaml'}: source 'acme_audit': adapter: unknown adapter 'ftp_polling' "
        f"(available: {', '.join(ADAPTERS)})"
    ]
    assert {"http_polling", "s3_polling"} <= set(ADAPTERS)


def test_undeclared_credential_and_unknown_variable(sources: SourceWriter) -> None:
    problems = problems_for(
        sources,
        headers={"Authorization": "Bearer ${{credentials.tokn}}", "X-Org": "${{ingestionSource.org}}"},
        params={"since": "${{cursor.watermark}}"},
    )
    text = "\n".join(problems)
    assert "headers.Authorization: ${{credentials.tokn}} refers to an undeclared credential (declared: token)" in text
    assert "headers.X-Org: unknown template variable ${{ingestionSource.org}}" in text
    assert "params.since: ${{cursor.watermark}} is not available here" in text
    assert len(problems) == 3


def test_duplicate_names_are_reported_and_neither_loads(sources: SourceWriter) -> None:
    sources.write(http_source(URL), file="one.yaml")
    sources.write(http_source(URL), file="two.yaml")
    result = load_sources(sources.directory, adapters=ADAPTERS)
    assert result.sources == {}
    assert result.problems == [
        f"{sources.directory / 'two.yaml'}: source 'acme_audit': name: duplicate name, already used by "
        f"{sources.directory / 'one.yaml'}"
    ]


def test_bad_name_missing_field_and_bad_yaml(sources: SourceWriter) -> None:
    doc = http_source(URL, name="Acme-Audit")
    del doc["eventsJsonPath"]
    sources.write(doc, file="bad.yaml")
    (sources.directory / "broken.yaml").write_text("name: x\n  adapter: [\n")
    problems = load_sources(sources.directory, adapters=ADAPTERS).problems
    assert any("source 'Acme-Audit': name: String should match pattern" in p for p in problems)
    assert any("source 'Acme-Audit': eventsJsonPath: required field is missing" in p for p in problems)
    assert any(p.startswith(f"{sources.directory / 'broken.yaml'}: not valid YAML at line 2") for p in problems)


def test_each_problem_carries_the_source_it_belongs_to(sources: SourceWriter) -> None:
    """Which source a problem is about is a field (``pullmode preview`` reads it), never found by
    searching the text; the text itself is the line printed, unchanged."""
    sources.write(http_source(URL, schedule="every five minutes"))
    sources.write(http_source(URL, name="dup"), file="one.yaml")
    sources.write(http_source(URL, name="dup"), file="two.yaml")
    (sources.directory / "list.yaml").write_text("- not a mapping\n")
    (sources.directory / "broken.yaml").write_text("name: x\n  adapter: [\n")
    many = http_source(URL, name="many") | {f"extra{i}": i for i in range(MAX_PROBLEMS_PER_FILE + 3)}
    sources.write(many)
    result = load_sources(sources.directory, adapters=ADAPTERS)
    assert all(isinstance(p, Problem) for p in result.problems)
    owners = {(Path(p.split(": ", 1)[0]).name, p.source) for p in result.problems}
    assert owners == {
        ("acme_audit.yaml", "acme_audit"),
        ("two.yaml", "dup"),
        ("list.yaml", None),
        ("broken.yaml", None),
        ("many.yaml", "many"),
    }
    summed_up = [p for p in result.problems if p.endswith("more problems in this file not shown")]
    assert summed_up == [f"{sources.directory / 'many.yaml'}: 3 more problems in this file not shown"]
    assert summed_up[0].source == "many"  # the lines it sums up are many's
    first = next(i for i in result.invalid if i.file.name == "one.yaml")
    assert [(str(p), p.source) for p in first.problems] == [
        (f"{sources.directory / 'one.yaml'}: source 'dup': name: duplicate name", "dup")
    ]
    with pytest.raises(ConfigError) as unknown:
        result.get("nope")
    assert [(type(p), p.source) for p in unknown.value.problems] == [(Problem, None)]


def test_a_problem_is_its_line() -> None:
    problem = Problem("sources/a.yaml: source 'a': url: must be an absolute URL", "a")
    assert problem == "sources/a.yaml: source 'a': url: must be an absolute URL"
    assert f"- {problem}" == "- " + str(problem) and "\n".join([problem, problem]).count("\n") == 1
    assert str(ConfigError([problem])) == problem and ConfigError([problem]).problems[0].source == "a"
    with pytest.raises(AttributeError):
        problem.source = "b"  # type: ignore[misc]
    copied = pickle.loads(pickle.dumps(ConfigError([problem, "plain"])))
    assert [(str(p), p.source) for p in copied.problems] == [(problem, "a"), ("plain", None)]


def test_literal_secret_in_a_bad_field_is_not_echoed(sources: SourceWriter) -> None:
    secret = "sk-live-9f8e7d6c5b4a"
    problems = problems_for(
        sources,
        headers={"Authorization": f"Bearer {secret} ${{{{credentials.nope}}}}"},
        maxPagesPerRun=f"{secret}",
    )
    assert problems
    assert all(secret not in p for p in problems)


def test_bearer_needs_a_token_credential(sources: SourceWriter) -> None:
    problems = problems_for(sources, authMode="bearer", credentials={"key": {"env": "X"}}, headers={})
    assert [p.split(": ", 2)[2] for p in problems] == ["authMode: bearer needs a credential named 'token'"]


def test_validate_command_exit_codes(sources: SourceWriter, tmp_path: Path) -> None:
    runner = CliRunner()
    sources.write(http_source(URL))
    ok = runner.invoke(main, ["validate", str(sources.directory)])
    assert ok.exit_code == 0, ok.output
    assert "ok: 1 source(s)" in ok.output
    sources.write(http_source(URL, name="other", schedule="61 * * * *", hasMoreJsonPath="$.["))
    bad = runner.invoke(main, ["validate", str(sources.directory)])
    assert bad.exit_code == 1
    lines = bad.output.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(str(sources.directory / "other.yaml") + ": source 'other': ") for line in lines)
    assert "Traceback" not in bad.output


def test_validate_uses_env_directory(sources: SourceWriter) -> None:
    (sources.directory / "x.yaml").write_text(yaml.safe_dump({"name": "x"}))
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 1
    assert "adapter: required field is missing" in result.output


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 0 31 2 *", "never fires: no time matches it within 8 years (expected a 5-field cron expression"),
        ("0 0 30 2 *", "never fires: no time matches it within 8 years (expected a 5-field cron expression"),
        ("0 */5 * * * *", "has 6 fields; expected a 5-field cron expression (minute hour day-of-month month "),
        ("0 0 1 1 * 0 2030", "has 7 fields; expected a 5-field cron expression"),
    ],
)
def test_schedules_that_the_poller_could_not_run(sources: SourceWriter, schedule: str, message: str) -> None:
    problems = problems_for(sources, schedule=schedule)
    prefix = f"{sources.directory / 'acme_audit.yaml'}: source 'acme_audit': schedule: "
    assert len(problems) == 1
    assert problems[0].startswith(prefix + message), problems
    assert problems[0].endswith("in UTC)" if "never" in message else "seconds and year fields are not supported")


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "0 0 29 2 *", "@daily", "0 9 * * mon-fri"])
def test_schedules_that_fire(sources: SourceWriter, schedule: str) -> None:
    assert problems_for(sources, schedule=schedule) == []


def test_an_unexpected_error_is_one_line_without_its_message(
    sources: SourceWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-live-unexpected-4242"
    sources.write(http_source(URL))

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"something with {secret} in it")

    monkeypatch.setattr(cli, "load_sources", boom)
    monkeypatch.delenv("PULLMODE_DEBUG", raising=False)
    for args in (["validate", str(sources.directory)], ["preview", "acme_audit"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1
        assert result.output == "error: unexpected RuntimeError (rerun with PULLMODE_DEBUG=1 for the traceback)\n"
    monkeypatch.setenv("PULLMODE_DEBUG", "1")
    debug = CliRunner().invoke(main, ["validate", str(sources.directory)])
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.output
    assert debug.output.endswith("error: unexpected RuntimeError (rerun with PULLMODE_DEBUG=1 for the traceback)\n")


def test_an_unexpected_error_while_previewing(sources: SourceWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    sources.write(http_source(URL))
    monkeypatch.setattr(pull_module, "preview", lambda source, **_: {}["no such key"])
    monkeypatch.delenv("PULLMODE_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["preview", "acme_audit"])
    assert (result.exit_code, result.output) == (
        1,
        "error: unexpected KeyError (rerun with PULLMODE_DEBUG=1 for the traceback)\n",
    )


def test_usage_errors_keep_exit_code_2() -> None:
    assert CliRunner().invoke(main, ["pull"]).exit_code == 2  # raised inside the command
    assert CliRunner().invoke(main, ["validate", "a", "b"]).exit_code == 2
    assert CliRunner().invoke(main, ["preview"]).exit_code == 2


# --- startDate: a typo in one file is caught here, not when Dagster builds the partitions ---------------------------

_OUT_OF_RANGE = "startDate: out of range: from 1970-01-01 to 9998-12-31 in UTC (is the year four digits?)"
_NOT_ISO = (
    "startDate: must be an ISO 8601 date (2026-01-01) or date-time (2026-01-01T00:00:00Z), with a four-digit year"
)


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        ('"0026-01-01"', _OUT_OF_RANGE),  # %Y is not zero-padded below 1000: the partitions failed to build
        ("0026-01-01", _OUT_OF_RANGE),  # unquoted: a YAML date
        ('"1026-01-01"', _OUT_OF_RANGE),
        ('"1969-12-31"', _OUT_OF_RANGE),
        ('"1970-01-01T00:30:00+01:00"', _OUT_OF_RANGE),  # 1969-12-31T23:30Z
        ('"9999-01-01"', _OUT_OF_RANGE),
        ('"9998-12-31T23:00:00-05:00"', _OUT_OF_RANGE),  # 9999-01-01T04:00Z
        ('"9999-12-31T23:00:00-05:00"', _OUT_OF_RANGE),  # past what a datetime holds, in UTC
        ("20260101", _NOT_ISO),  # pydantic would take it for epoch seconds: 1970-08-23
        ('"20260101"', _NOT_ISO),
        ("1767225600", _NOT_ISO),
    ],
)
def test_validate_rejects_a_start_date_out_of_range_naming_source_and_field(
    sources: SourceWriter, yaml_value: str, expected: str
) -> None:
    sources.write(http_source(URL))
    bad = sources.directory / "typo_feed.yaml"
    text = yaml.safe_dump(http_source(URL, name="typo_feed", startDate="PLACEHOLDER"), sort_keys=False)
    bad.write_text(text.replace("PLACEHOLDER", yaml_value))
    result = CliRunner().invoke(main, ["validate", str(sources.directory)])
    assert result.exit_code == 1
    assert f"{bad}: source 'typo_feed': {expected}" in result.stderr.splitlines(), result.output
    assert "acme_audit" not in result.stderr


@pytest.mark.parametrize("value", ["1970-01-01", "1970-01-01T01:00:00+01:00", "2026-03-01T10:30:00", "9998-12-31"])
def test_start_dates_inside_the_range_load(sources: SourceWriter, value: str) -> None:
    assert sources.load(http_source(URL, startDate=value)).start_datetime.tzinfo is not None


def test_every_adapter_checks_the_start_date_range(sources: SourceWriter) -> None:
    """Every adapter's config has the one date field, ``startDate``, and checks its range (the reference
    connectors' time filters start from it); the other problems of these bare files do not hide it."""
    for adapter in ADAPTERS:
        sources.write({"name": f"bad_{adapter}", "adapter": adapter, "startDate": "0026-01-01", "schedule": "@daily"})
    problems = load_sources(sources.directory, adapters=ADAPTERS).problems
    for adapter in ADAPTERS:
        path = sources.directory / f"bad_{adapter}.yaml"
        assert f"{path}: source 'bad_{adapter}': {_OUT_OF_RANGE}" in problems, adapter
