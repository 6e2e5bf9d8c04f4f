"""Application code depends on the engine's public face only; the public face is tidy."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import backend

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_THIRD_PARTY = {"dateutil", "msgspec"}
STDLIB = set(sys.stdlib_module_names)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_functions_import_only_backend_schema_and_their_own_modules() -> None:
    offences = []
    for path in sorted((ROOT / "functions").rglob("*.py")):
        if "_generated" in path.parts:  # typed clients written by codegen for callers, not functions
            continue
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if module in ("backend", "schema") or top == "functions" or top in STDLIB or top in ALLOWED_THIRD_PARTY:
                continue
            offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offences == []


def test_public_face_is_sorted_and_complete() -> None:
    names = list(backend.__all__)
    assert names == sorted(names)
    for name in names:
        assert hasattr(backend, name), name
    for needed in ("query", "mutation", "action", "internal_query", "internal_mutation", "internal_action",
                   "QueryCtx", "MutationCtx", "ActionCtx", "AppError", "Id"):
        assert needed in names


def test_test_fixture_functions_never_load_in_production() -> None:
    from backend.registry import load_functions

    production = {spec.path for spec in load_functions(include_testing=False)}
    with_fixtures = {spec.path for spec in load_functions(include_testing=True)}
    assert not any(path.startswith("testing_") for path in production)
    assert any(path.startswith("testing_") for path in with_fixtures)
