"""Test functions, assert statements and ``pytest.raises`` per test module (by AST): how a change to
the tests shows that no assertion was lost (docs/design/connector-contract.md).

Usage: python3 tools/count_asserts.py pullmode_dagster_tests
"""

import ast
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
tot = [0, 0, 0]
for p in sorted(root.glob("*.py")):
    t = ast.parse(p.read_text())
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    tests = sum(1 for n in ast.walk(t) if isinstance(n, functions) and n.name.startswith("test_"))
    asserts = sum(1 for n in ast.walk(t) if isinstance(n, ast.Assert))
    raises = sum(1 for n in ast.walk(t) if isinstance(n, ast.Attribute) and n.attr == "raises")
    tot = [tot[0] + tests, tot[1] + asserts, tot[2] + raises]
    print(f"{p.name:45} tests={tests:4} asserts={asserts:5} raises={raises:4}")
print(f"TOTAL tests={tot[0]} asserts={tot[1]} raises={tot[2]}")
