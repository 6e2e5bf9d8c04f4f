"""Application code depends on the engine's public face only; the public face is tidy."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pytest

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


def _fixture_modules() -> dict[str, str]:
    """Every fixture module on disk (``testing_*`` anywhere, everything under ``_fixtures/``) → the path prefix
    its functions answer at when fixtures are loaded."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "functions").rglob("*.py")):
        relative = path.relative_to(ROOT / "functions").with_suffix("")
        parts = relative.parts
        if parts[0] == "_fixtures" and parts[-1] != "__init__":
            found[str(relative)] = "/".join(parts[1:]) + ":"
        elif any(part.startswith("testing_") for part in parts):
            found[str(relative)] = "/".join(parts) + ":"
    return found


def test_fixture_functions_are_absent_from_production_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test and benchmark fixtures (``counters:*``, ``bench:*``, ``testing_*``, and any future module in
    those places) load only in test and benchmark servers; ``python -m backend serve`` has none of them."""
    from backend.cli import _config
    from backend.registry import load_functions
    from backend.server import Backend

    monkeypatch.delenv("BACKEND_TEST_FUNCTIONS", raising=False)
    fixtures = _fixture_modules()
    assert {"_fixtures/counters", "_fixtures/bench", "testing_jobs"} <= set(fixtures)
    served = Backend(_config(argparse.Namespace(data_dir=".data", no_scheduler=True))).registry
    production = {spec.path for spec in load_functions(include_testing=False)}
    assert {spec.path for spec in served} == production
    with_fixtures = {spec.path for spec in load_functions(include_testing=True)}
    for module, prefix in fixtures.items():
        mounted = {path for path in with_fixtures if path.startswith(prefix)}
        assert mounted, f"{module} registers no function at {prefix}*"
        assert not {path for path in production if path.startswith(prefix)}, f"{module} leaks into production"
    assert not any(path.startswith(("counters:", "bench:", "testing_")) for path in production)
    assert {"counters:increment_slowly", "counters:padded", "bench:add"} <= with_fixtures
    # Nothing else differs between the two: every fixture lives in one of the fixture places.
    assert {p for p in with_fixtures - production if not p.startswith(tuple(fixtures.values()))} == set()

    monkeypatch.setenv("BACKEND_TEST_FUNCTIONS", "1")  # the explicit opt-in of test and benchmark servers
    assert {spec.path for spec in load_functions()} == with_fixtures
