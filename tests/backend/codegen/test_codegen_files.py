"""``python -m backend codegen``: what it writes, where, and that it never disturbs what did not change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.codegen import default_out_dir, refresh_generated, write_generated
from backend.registry import load_functions
from backend.server import load_schema
from tests.support.codegen_package import load_sample

ROOT = Path(__file__).resolve().parents[3]
FILES = {"api.d.ts", "api.js", "dataModel.d.ts", "api.py", "__init__.py", "README.md"}


def test_loader_skips_the_generated_folder_and_private_modules(tmp_path: Path) -> None:
    # The sample's _generated/api.py raises on import: loading the functions must not import it.
    _, registry = load_sample(tmp_path)
    assert sorted(registry.functions) == [
        "classes/templates:create", "classes:list_all", "things:make", "things:nothing", "things:ping",
        "things:secret", "things:sparse", "things:tree",
    ]


def test_default_folder_is_inside_the_functions_package() -> None:
    assert default_out_dir() == ROOT / "functions" / "_generated"


def test_files_are_rewritten_only_when_their_text_changes(tmp_path: Path) -> None:
    schema = load_schema()
    out = tmp_path / "_generated"
    first = write_generated(load_functions(), schema, out)
    assert {p.name for p in first} == FILES
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert write_generated(load_functions(), schema, out) == []
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    (out / "api.js").write_text("stale")
    assert [p.name for p in write_generated(load_functions(), schema, out)] == ["api.js"]
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


def test_public_and_internal_functions_are_kept_apart(tmp_path: Path) -> None:
    registry = load_functions()
    write_generated(registry, load_schema(), tmp_path)
    public, internal = (tmp_path / "api.d.ts").read_text().split("export declare const internal")
    specs = list(registry)
    assert public.count('\n      "public",\n') == sum(not s.internal for s in specs) > 40
    assert internal.count('\n      "internal",\n') == sum(s.internal for s in specs) > 0
    assert '"internal"' not in public and '"public"' not in internal
    assert "mark_no_shows_due" not in public  # bookings:mark_no_shows_due is internal
    assert "mark_no_shows_due: FunctionReference" in internal
    assert "mark_no_shows_due" not in (tmp_path / "api.py").read_text()


def test_dev_hook_reports_a_failure_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert refresh_generated(load_functions(), load_schema(), blocked / "_generated") is False
    err = capsys.readouterr().err
    assert err.startswith("codegen failed: ") and err.count("\n") == 1
    assert refresh_generated(load_functions(), load_schema(), tmp_path / "ok") is True
    assert "updated" in capsys.readouterr().out


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "backend", "codegen", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_checks_and_fails_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    done = _cli("--out", str(out), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == FILES
    assert _cli("--out", str(out), "--check", cwd=ROOT).returncode == 0
    (out / "api.d.ts").write_text("// edited")
    check = _cli("--out", str(out), "--check", cwd=ROOT)
    assert check.returncode == 1 and "api.d.ts" in check.stderr
    # A project whose functions do not import: one line naming the problem, no traceback.
    project = tmp_path / "broken"
    (project / "functions").mkdir(parents=True)
    (project / "functions" / "__init__.py").write_text("")
    (project / "functions" / "oops.py").write_text("def broken(:\n")
    (project / "schema.py").write_text("from backend.schema import define_schema\nschema = define_schema([])\n")
    failed = _cli(cwd=project)
    assert failed.returncode == 1
    assert failed.stderr.startswith("codegen failed: SyntaxError") and failed.stderr.count("\n") == 1
    assert "Traceback" not in failed.stderr


async def test_dev_server_writes_the_generated_folder_at_start(tmp_path: Path) -> None:
    """``python -m backend dev`` in a project folder leaves ``functions/_generated/`` up to date."""
    import asyncio

    from backend.testing import create_database, drop_database, free_port

    project = tmp_path / "app"
    (project / "functions").mkdir(parents=True)
    (project / "functions" / "__init__.py").write_text("")
    (project / "functions" / "notes.py").write_text(
        "from backend import QueryCtx, query\n\n\n@query\nasync def count(ctx: QueryCtx, tag: str) -> int:\n"
        "    return 0\n"
    )
    # Its own (empty) crons module: the scheduler looks one up beside the functions.
    (project / "functions" / "crons.py").write_text("from backend import Crons\n\ncrons = Crons()\n")
    (project / "schema.py").write_text("from backend.schema import define_schema\nschema = define_schema([])\n")
    url = await create_database("codegen_dev")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backend", "dev", "--port", str(free_port()), cwd=project, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    target = project / "functions" / "_generated" / "api.d.ts"
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not target.is_file() and process.returncode is None:
            assert asyncio.get_running_loop().time() < deadline, "no generated files within 60 s"
            await asyncio.sleep(0.1)
        if process.returncode is not None:
            assert process.stderr is not None
            raise AssertionError((await process.stderr.read()).decode())
        assert "count: FunctionReference<" in target.read_text()
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        await drop_database(url)
