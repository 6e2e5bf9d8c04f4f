"""The scripts install packages only when pyproject.toml changed, and run commands in the project's venv.

Run in a copy of ``scripts/`` with a stand-in ``.venv`` whose ``python`` and ``pip`` record their calls, so
the test never touches a real environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDER = '#!/usr/bin/env bash\necho "{name} $*" >> "$(dirname "$0")/../calls.log"\n'


def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\ndependencies = ["a"]\n')
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "pip"):
        (bin_dir / name).write_text(RECORDER.format(name=name))
        (bin_dir / name).chmod(0o755)
    return tmp_path


def run(folder: Path, script: str, *args: str) -> list[str]:
    """Run a script (from another folder, as a user might); return the venv calls it made."""
    log = folder / ".venv" / "calls.log"
    log.unlink(missing_ok=True)
    done = subprocess.run([str(folder / "scripts" / script), *args], cwd="/", capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_packages_install_once_per_pyproject_change(tmp_path: Path) -> None:
    folder = project(tmp_path)
    first = run(folder, "token", "--sub", "ann")
    assert first == ["pip install -q --upgrade pip", "pip install -q -e .", "python -m backend token --sub ann"]
    assert run(folder, "token", "--sub", "ann") == ["python -m backend token --sub ann"]
    assert run(folder, "dev", "--port", "3999") == ["python -m backend dev --port 3999"]
    (folder / "pyproject.toml").write_text('[project]\nname = "app"\ndependencies = ["a", "b"]\n')
    assert run(folder, "backend", "run", "counters:get")[1:] == ["pip install -q -e .", "python -m backend run counters:get"]
    assert run(folder, "backend", "migrate") == ["python -m backend migrate"]
