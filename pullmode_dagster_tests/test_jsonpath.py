from __future__ import annotations

import pytest

from pullmode_dagster.engine.events.jsonpath import MISSING, JsonPathSyntaxError, compile_path

DOC = {
    "data": [{"id": 1, "kind": "a"}, {"id": 2, "kind": "b"}],
    "@odata.nextLink": "https://graph.example/next",
    "meta": {"has-more": True, "page": {"n": 3}},
    "nothing": None,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.meta.page.n", 3),
        ("$.data[0].id", 1),
        ("$.data[-1].kind", "b"),
        ("$['@odata.nextLink']", "https://graph.example/next"),
        ('$["@odata.nextLink"]', "https://graph.example/next"),
        ("$.meta.has-more", True),
        ("$.nothing", None),
    ],
)
def test_simple_paths_take_the_fast_walk(path: str, expected: object) -> None:
    compiled = compile_path(path)
    assert compiled.is_simple
    assert compiled.first(DOC) == expected


@pytest.mark.parametrize("path", ["$.missing", "$.data[5].id", "$.data.id", "$.meta.page.n.deeper", "$.data[0].x"])
def test_missing_is_distinct_from_null(path: str) -> None:
    assert compile_path(path).first(DOC) is MISSING
    assert compile_path(path).all(DOC) == []


def test_general_paths_fall_back_to_jsonpath_ng() -> None:
    compiled = compile_path("$.data[?(@.kind == 'b')].id")
    assert not compiled.is_simple
    assert compiled.first(DOC) == 2
    assert compile_path("$.data[*].id").all(DOC) == [1, 2]


@pytest.mark.parametrize("path", ["$.data[", "data.id", "$..[?(@.x"])
def test_bad_paths_are_reported(path: str) -> None:
    with pytest.raises(JsonPathSyntaxError, match="JSONPath"):
        compile_path(path)
