"""The engine's tree is its pipeline: each stage imports only the stages below it, and nothing in
the engine reaches up into Dagster, the CLI or the package root; no module of the package imports
one that imports it back; the Dagster layer never imports the CLI, and Dagster's private modules
stay in two seams. Read from the source (``ast``), so an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top of a module."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Container, Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pullmode_dagster"
ENGINE = "pullmode_dagster.engine"

STAGES: dict[str, frozenset[str]] = {
    # stage (a module or package under engine/): the stages it may import besides itself
    "errors": frozenset(),
    "version": frozenset(),
    "events": frozenset({"errors"}),
    "fetch": frozenset({"errors", "version", "events"}),
    "store": frozenset({"errors", "events"}),
    "cursor": frozenset({"errors", "events"}),
    "declare": frozenset({"errors", "events", "fetch", "store"}),
    "adapters": frozenset({"errors", "events", "fetch", "store", "cursor", "declare"}),
    "pull": frozenset({"errors", "events", "fetch", "store", "cursor", "declare", "adapters"}),
    "probe": frozenset({"errors", "events", "fetch", "store", "cursor", "declare", "adapters", "pull"}),
    "export": frozenset({"errors", "events", "store", "declare"}),
}
"""Read bottom up: the normalized event; HTTP and the trace store, which know nothing of source
files; the declared source; the adapters that pull it; the drivers (one pull, the probe, export)."""

OUTSIDE = ("dagster", "pullmode_dagster.defs", "pullmode_dagster.cli", "pullmode_dagster.definitions")
"""What the engine never imports (nor the package root, ``pullmode_dagster`` itself): ``dagster``
covers dagster_aws, dagster_postgres and the rest of the family."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_in(source: str, package: str, known: Container[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in ``source``, at any depth, relative ones resolved
    against ``package``; ``from pkg import x`` names the module ``pkg.x`` when ``known`` holds it,
    else ``pkg``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield (full if full in known else target), node.lineno


def imports(module: str) -> Iterator[tuple[str, int]]:
    """:func:`imports_in` of one of the package's modules."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(path.read_text(), package, MODULES)


def stage(module: str) -> str | None:
    """The stage of an engine module: the first part of its name under ``engine`` (None for
    ``engine`` itself, which imports nothing)."""
    rest = module.removeprefix(ENGINE).lstrip(".")
    return rest.split(".")[0] or None


ENGINE_MODULES = sorted(m for m in MODULES if m == ENGINE or m.startswith(ENGINE + "."))


def graph(modules: list[str], within: str) -> dict[str, set[str]]:
    """Each module's imports of modules whose name starts with ``within``."""
    return {m: {t for t, _ in imports(m) if t.startswith(within) and t in MODULES and t != m} for m in modules}


def engine_graph() -> dict[str, set[str]]:
    return graph(ENGINE_MODULES, ENGINE + ".")


def test_every_engine_module_has_a_stage() -> None:
    """A new module is placed in the table (a new stage says where it sits)."""
    assert [m for m in ENGINE_MODULES if m != ENGINE and stage(m) not in STAGES] == []


def test_nothing_in_the_engine_reaches_up() -> None:
    upward = sorted(
        {
            f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}: {target}"
            for m in ENGINE_MODULES
            for target, line in imports(m)
            if target == "pullmode_dagster" or target.startswith(OUTSIDE)
        }
    )
    assert upward == []


def test_the_engine_and_the_cli_load_no_dagster_when_imported() -> None:
    """What reading the source cannot see: a dependency that loads Dagster, and the CLI's entry
    point, which imports the Dagster layer only in the commands that need it."""
    code = (
        "import sys, pullmode_dagster.engine.pull, pullmode_dagster.engine.declare.loading, pullmode_dagster.cli;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'dagster_aws', 'dagster_postgres'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dagster_layer_never_imports_the_cli_and_two_seams_reach_into_dagster() -> None:
    """The CLI orchestrates over the Dagster layer, never the other way round, and defs/ knows
    nothing of the demo either; Dagster's private modules (no stability promise) stay in two seams:
    the Dagster layer's (instance_api.py) and the CLI's (sensor_state.py, the sensor state and
    workspace loading only the CLI needs)."""
    assert "pullmode_dagster.defs.sensors" in {t for t, _ in imports("pullmode_dagster.cli.pull")}  # the check works
    layer = [m for m in MODULES if m.startswith("pullmode_dagster.defs") or m == "pullmode_dagster.definitions"]
    assert [m for m in layer if any(t.startswith("pullmode_dagster.cli") for t, _ in imports(m))] == []
    defs = [m for m in layer if m.startswith("pullmode_dagster.defs")]
    assert [m for m in defs if any(t.startswith("pullmode_dagster.demo") for t, _ in imports(m))] == []
    private = [
        MODULES[m].relative_to(PACKAGE).as_posix()
        for m in MODULES
        if any(t.startswith("dagster._") for t, _ in imports(m))
    ]
    assert sorted(private) == ["cli/sensor_state.py", "defs/instance_api.py"]


def test_each_stage_imports_only_the_stages_below_it() -> None:
    wrong = sorted(
        {
            f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}: {stage(m)} imports {target} ({stage(target)})"
            for m in ENGINE_MODULES
            if stage(m) in STAGES
            for target, line in imports(m)
            if target.startswith(ENGINE + ".") and stage(target) not in {stage(m), *STAGES[stage(m) or ""]}
        }
    )
    assert wrong == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    """Anywhere in the package: the engine, the Dagster layer, the CLI, the demo."""
    assert cycles(graph(sorted(MODULES), "pullmode_dagster")) == []


def test_the_checks_see_what_they_check() -> None:
    """Each check would catch its violation: a cycle, an upward import, a function-level import."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    engine = engine_graph()
    assert f"{ENGINE}.fetch.session" in engine[f"{ENGINE}.adapters.base"]  # absolute names, resolved
    assert f"{ENGINE}.store.postgres" in engine[f"{ENGINE}.store"]  # an import inside a function counts
    assert stage(f"{ENGINE}.declare.models") == "declare" and stage(f"{ENGINE}.pull") == "pull"


BENCH = PACKAGE.parent / "bench"
TESTS = "pullmode_dagster_tests"
BENCH_SUPPORT = frozenset({"fakes", "faults", "pg", "helpers", "documents"})
"""The test-support modules the benchmarks may import (documented in ``pullmode_dagster_tests``)."""


SUITE_MODULES = {TESTS} | {f"{TESTS}.{p.stem}" for p in (PACKAGE.parent / TESTS).glob("*.py")}


def suite_modules_imported(source: str, *, in_suite: bool = False) -> list[str]:
    """Every module of the test suite ``source`` imports, at any depth, named ``pullmode_dagster_tests.x``
    (``pullmode_dagster_tests`` alone for the package itself); ``in_suite``: ``source`` is one of
    the suite's modules, whose relative imports are the suite's."""
    found = imports_in(source, TESTS if in_suite else "", SUITE_MODULES)
    return [name for name, _ in found if name.split(".")[0] == TESTS]


def outside_bench_support(source: str) -> list[str]:
    """The modules of the test suite ``source`` imports that are not in ``BENCH_SUPPORT``."""
    imported = suite_modules_imported(source)
    return sorted(name for name in imported if name.removeprefix(TESTS + ".").split(".")[0] not in BENCH_SUPPORT)


def test_the_bench_imports_only_the_shared_test_support() -> None:
    """The bench shares the tests' fakes and servers through a small, named set, not their internals:
    what it imports is in the set, and so is whatever those modules import of the suite."""
    outside = [f"{p.name}: {name}" for p in BENCH.glob("*.py") for name in outside_bench_support(p.read_text())]
    for support in sorted(BENCH_SUPPORT):
        source = (PACKAGE.parent / TESTS / f"{support}.py").read_text()
        imported = suite_modules_imported(source, in_suite=True)
        outside += [f"{support}.py: {name}" for name in imported if name.split(".")[1] not in BENCH_SUPPORT]
    assert sorted(outside) == []


def test_the_bench_check_sees_what_it_checks() -> None:
    """It reads what the bench imports, and would flag a module outside the set, however imported."""
    assert f"{TESTS}.fakes" in suite_modules_imported((BENCH / "run.py").read_text())
    source = (
        "import pullmode_dagster_tests, pullmode_dagster_tests.conftest\n"
        "def f():\n    from pullmode_dagster_tests import dagster_helpers, pg\n"
        "from pullmode_dagster_tests.helpers import free_port\n"
    )
    assert outside_bench_support(source) == [TESTS, f"{TESTS}.conftest", f"{TESTS}.dagster_helpers"]
    faults = (PACKAGE.parent / TESTS / "faults.py").read_text()
    assert f"{TESTS}.documents" in suite_modules_imported(faults, in_suite=True)  # relative imports, in the suite


@pytest.mark.parametrize("name", ["Puller", "SourceConfig", "bearer", "HeaderAuth", "ClientCredentials", "__version__"])
def test_user_facing_names_come_from_the_package(name: str) -> None:
    import pullmode_dagster

    assert name in pullmode_dagster.__all__ and getattr(pullmode_dagster, name) is not None
