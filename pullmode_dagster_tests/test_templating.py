from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pullmode_dagster.engine.declare.templating import Template, TemplateError, check_variables


def test_renders_credentials_source_fields_and_dates() -> None:
    template = Template("Bearer ${{credentials.token}} for ${{ ingestionSource.organizationId }}")
    assert template.render({"credentials": {"token": "t0k"}, "ingestionSource": {"organizationId": "org_1"}}) == (
        "Bearer t0k for org_1"
    )
    when = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    assert Template("${{window.start}}").render({"window": {"start": when}}) == "2026-05-04T03:02:01.000000Z"
    assert Template("audit/${{window.start:%Y/%m/%d}}/").render({"window": {"start": when}}) == "audit/2026/05/04/"


def test_text_without_templates_has_no_variables_and_renders_as_itself() -> None:
    template = Template("plain $text {{not}} a template")
    assert template.variables == ()
    assert template.render({}) == "plain $text {{not}} a template"


def test_malformed_template_is_refused() -> None:
    with pytest.raises(TemplateError, match="malformed template"):
        Template("Bearer ${{credentials}}")


@pytest.mark.parametrize(
    ("text", "scopes", "problem"),
    [
        ("${{secrets.token}}", ("credentials",), "unknown template variable ${{secrets.token}}"),
        ("${{credentials.tokn}}", ("credentials",), "undeclared credential (declared: token)"),
        (
            "${{ingestionSource.colour}}",
            ("ingestionSource",),
            "unknown template variable ${{ingestionSource.colour}}",
        ),
        ("${{cursor.watermark}}", ("credentials",), "not available here"),
        ("${{cursor.page}}", ("cursor",), "cursor fields: watermark"),
        ("${{window.middle}}", ("window",), "window fields: start, end"),
        ("${{credentials.token:%Y}}", ("credentials",), "a format only applies to cursor and window dates"),
    ],
)
def test_unknown_or_misplaced_variables_are_refused(text: str, scopes: tuple[str, ...], problem: str) -> None:
    problems = check_variables(
        Template(text),
        credential_keys=["token"],
        source_fields=["name", "organizationId"],
        allowed_scopes=scopes,
    )
    assert any(problem in p for p in problems), problems
