"""README.md works as written: every fenced code block in it is run or checked, so the README cannot drift.

A ``<!-- doctest: KIND [reason] -->`` comment right before a block says how it is checked; a block without
one, or with a kind this file does not know, fails the test.

- ``server`` (bash): the dev server command. The walk-through starts it, on a copy of the project, on a free
  port and a throwaway database; later blocks' ``127.0.0.1:3210`` is rewritten to that port.
- ``story`` (bash): run in order in one shell session (exported variables carry over) in that copy.
- ``output`` (text): each line must match a line the previous ``story`` block printed (``…`` matches anything).
- ``serverlog`` (text): lines the dev server printed during the walk-through, in that order (any number
  stands for any number: times and durations differ).
- ``apply`` (python): a change to the project, applied as its first-line comment says: ``# schema.py`` adds
  the class above ``schema = define_schema(`` and to its list; ``# path: replace NAME`` replaces that
  function; any other ``# path`` is a new file. The dev server must then report a good reload.
- ``node`` (js): the same for a Node script, run by ``node`` with the official ``convex`` package (the one
  ``tests/js`` installs) as the project's ``node_modules``; skipped where node is missing.
- ``migration`` (python): a migration file; the walk-through adds the column it drops, removes it from the
  schema (the dev server refuses), writes the migration and sees the reload succeed and the column gone.
- ``tsc`` (ts/tsx): type-checked by ``tsc --strict`` against the types codegen writes for the project after
  every ``apply`` block; the first-line comment names the file.
- ``watch`` (python): a client script, written to the file its first-line comment names and run with the
  venv's python in the story's shell until it prints its first line (checked by the ``output`` block after
  it); also type-checked by ``mypy --strict`` against the typed clients codegen writes.
- ``scripts`` (bash): each ``./scripts/X`` exists, is executable and runs with ``--help`` in the copy.
- ``help`` (bash): long-running commands: ``python -m MODULE [COMMAND] --help`` must list every flag the line
  uses (its comment too), and a ``pip install -e '.[extra]'`` must name extras ``pyproject.toml`` declares.
- ``skip REASON``: not run; the reason is required.

The copy has a stand-in ``.venv`` whose ``python`` is this interpreter and whose ``pip`` fails, with the
scripts' install stamp in place, so the scripts run for real without installing anything anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from backend.testing import create_database, drop_database, free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
JS_DIR = ROOT / "tests" / "js"
TSC = JS_DIR / "node_modules" / "typescript" / "bin" / "tsc"
KINDS = {"server", "story", "output", "serverlog", "apply", "watch", "node", "migration", "tsc", "scripts", "help",
         "skip"}
LANGS = {"server": {"bash"}, "story": {"bash"}, "output": {"text"}, "serverlog": {"text"}, "apply": {"python"},
         "watch": {"python"}, "node": {"js"},
         "migration": {"python"}, "tsc": {"ts", "tsx"}, "scripts": {"bash"}, "help": {"bash"}}
DOCUMENTED_PORT = "127.0.0.1:3210"


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    kind: str | None
    reason: str
    before: str  # the prose between the previous block and this one

    def where(self) -> str:
        return f"README.md line {self.line} ({self.lang or 'no language'})"


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i, prose_start = 0, 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md line {i + 1}: unclosed code block"
        marker = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        found = re.fullmatch(r"<!-- doctest: (\w+)\s*(.*?)\s*-->", marker.strip())
        blocks.append(Block(
            line=i + 1, lang=fence.group(1), text="\n".join(lines[i + 1:end]) + "\n",
            kind=found.group(1) if found else None, reason=found.group(2) if found else "",
            before="\n".join(lines[prose_start:i]),
        ))
        i = prose_start = end + 1
    return blocks


BLOCKS = parse(README.read_text(encoding="utf-8"))


def of_kind(*kinds: str) -> list[Block]:
    return [b for b in BLOCKS if b.kind in kinds]


def test_every_block_says_how_it_is_checked() -> None:
    problems = []
    for block in BLOCKS:
        if block.kind is None:
            problems.append(f"{block.where()}: no <!-- doctest: … --> comment before it")
        elif block.kind not in KINDS:
            problems.append(f"{block.where()}: unknown doctest kind {block.kind!r} (known: {sorted(KINDS)})")
        elif block.kind == "skip" and len(block.reason) < 10:
            problems.append(f"{block.where()}: a skipped block needs a reason")
        elif block.kind != "skip" and block.lang not in LANGS[block.kind]:
            problems.append(f"{block.where()}: doctest {block.kind} expects {sorted(LANGS[block.kind])}")
    assert not problems, "\n".join(problems)
    assert len(of_kind("server")) == 1, "the walk-through starts exactly one dev server"
    assert BLOCKS.index(of_kind("server")[0]) < BLOCKS.index(of_kind("story")[0])
    for block in of_kind("output"):
        previous = BLOCKS[BLOCKS.index(block) - 1]
        assert previous.kind in ("story", "watch", "node"), f"{block.where()}: output must follow a story block"


# -- a copy of the project whose scripts run in this interpreter ------------------------------------------


def make_project(folder: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "_generated", ".data")
    for name in ("backend", "functions", "scripts"):
        shutil.copytree(ROOT / name, folder / name, ignore=ignore)
    for name in ("schema.py", "pyproject.toml"):
        shutil.copy(ROOT / name, folder / name)
    bin_dir = folder / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "pip").write_text('#!/usr/bin/env bash\necho "pip must not run in the README test: $*" >&2\nexit 1\n')
    for name in ("python", "pip"):
        (bin_dir / name).chmod(0o755)
    # The install stamps exactly as scripts/_venv.sh and scripts/test compute them: nothing to install.
    stamp = subprocess.run(["bash", "-c", 'printf "%s" "$(cksum < pyproject.toml) $PWD"'], cwd=folder,
                           capture_output=True, text=True, check=True).stdout
    for suffix in ("", "-test"):
        (folder / ".venv" / f".tidewater-install{suffix}").write_text(stamp)
    js = folder / "tests" / "js"
    (js / "node_modules").mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(JS_DIR / name, js / name)
    npm_stamp = subprocess.run(["bash", "-c", "cat tests/js/package.json tests/js/package-lock.json | cksum"],
                               cwd=folder, capture_output=True, text=True, check=True).stdout.rstrip("\n")
    (js / "node_modules" / ".tidewater-install").write_text(npm_stamp)
    return folder


def child_env(**extra: str) -> dict[str, str]:
    """The user's environment: no test switches, no JWT secret (the dev secret in .data/ is used)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BACKEND_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def body_of(block: Block) -> str:
    """The block without its first-line comment."""
    return block.text.split("\n", 1)[1]


def first_comment(block: Block, prefix: str) -> str:
    first = block.text.split("\n", 1)[0]
    assert first.startswith(prefix), f"{block.where()}: the first line must be a `{prefix} path` comment"
    return first[len(prefix):].strip()


def apply(block: Block, project: Path) -> None:
    """Change the project as the block's first-line comment (and the README's prose) says."""
    comment = first_comment(block, "#")
    path = comment.split()[0].rstrip(":")
    target = project / path
    if path == "schema.py":
        prose = " ".join(block.before.split())
        assert "above the line `schema = define_schema(`" in prose, block.where()
        assert "to the list inside `define_schema([...])`" in prose, block.where()
        name = re.search(r"^class (\w+)\(", block.text, re.M)
        assert name, f"{block.where()}: no class in a schema block"
        text = target.read_text()
        assert text.count("schema = define_schema(\n    [") == 1
        text = text.replace("schema = define_schema(\n    [", f"{body_of(block)}\n\nschema = define_schema(\n    "
                            f"[{name.group(1)}, ")
        target.write_text(text)
    elif (replace := re.fullmatch(r"\S+: replace (\w+)", comment)) is not None:
        name = replace.group(1)
        text = target.read_text()
        found = re.search(rf"^@[^\n]*\n(async )?def {name}\(.*?(?=^@|^(async )?def |^class |\Z)", text, re.M | re.S)
        assert found, f"{block.where()}: no function {name} in {path}"
        target.write_text(text[:found.start()] + body_of(block) + ("\n\n" if found.end() < len(text) else ""))
        assert f"def {name}(" in body_of(block)
    else:
        assert not target.exists(), f"{block.where()}: {path} exists; say what to change in it"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)


# -- the walk-through ------------------------------------------------------------------------------------


class Story:
    """The dev server and a shell session on the project copy, as a user at two terminals has them."""

    def __init__(self, project: Path, database: str) -> None:
        self.project = project
        self.port = free_port()
        self.env = child_env(DATABASE_URL=database)
        self.log = project / "dev-server.log"
        self.server: subprocess.Popen[bytes] | None = None
        self.last_output = ""
        self.refused = 0  # reloads the story expects the dev server to refuse

    def start(self, block: Block) -> None:
        command = block.text.strip()
        assert "\n" not in command and command.startswith("./scripts/"), block.where()
        with self.log.open("wb") as sink:
            self.server = subprocess.Popen([*shlex.split(command), "--port", str(self.port)], cwd=self.project,
                                           env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        self.wait_for(f"backend listening on http://{DOCUMENTED_PORT.split(':')[0]}:{self.port}")
        self.wait_for("watching functions/, schema.py and migrations/ for changes")
        for claim in ("backend listening on http://127.0.0.1:3210", "watching functions/, schema.py and migrations/"):
            assert claim in " ".join(block.before.split() + BLOCKS[BLOCKS.index(block) + 1].before.split()), claim

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if out.count(text) >= count:
                return out
            assert self.server is not None and self.server.poll() is None, f"dev server exited:\n{out[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"{text!r} x{count} not in the dev server's output:\n{self.output()[-3000:]}")

    def saved(self, change: object, *, good: bool = True) -> str:
        """Make a change (a callable) and wait for the dev server's next reload; return its output."""
        before_good, before_bad = self.output().count("reloaded ("), self.output().count("reload failed")
        change()  # type: ignore[operator]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.output()
            if out.count("reload failed") > before_bad:
                assert not good, f"the dev server refused the change:\n{out[-3000:]}"
                self.refused += 1
                return out
            if out.count("reloaded (") > before_good:
                assert good, f"the dev server accepted a change it should refuse:\n{out[-3000:]}"
                return out
            time.sleep(0.05)
        raise AssertionError(f"no reload after the change:\n{self.output()[-3000:]}")

    def shell(self, block: Block) -> str:
        script = block.text.replace(DOCUMENTED_PORT, f"127.0.0.1:{self.port}")
        env_file = self.project / ".story-env"
        done = subprocess.run(["bash", "-c", f"set -euo pipefail\n{script}\nenv -0 > {shlex.quote(str(env_file))}"],
                              cwd=self.project, env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block.where()} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        self.env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        self.last_output = done.stdout
        return done.stdout

    def watch(self, block: Block, command: list[str], comment: str) -> None:
        """Run a client script until it prints its first line."""
        name = first_comment(block, comment).split()[0].rstrip(":")
        (self.project / name).write_text(block.text.replace(DOCUMENTED_PORT, f"127.0.0.1:{self.port}"))
        process = subprocess.Popen([*command, name], cwd=self.project, env=self.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        timer = threading.Timer(60, process.kill)  # a client that never prints fails instead of hanging
        timer.start()
        try:
            assert process.stdout is not None
            first = process.stdout.readline()  # the client prints once it has a result
        finally:
            timer.cancel()
            process.kill()
            _, errors = process.communicate(timeout=30)
        assert first, f"{block.where()} printed nothing:\n{errors}"
        self.last_output = first

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, 15)
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, 9)
                self.server.wait()


def matches(expected: str, printed: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("…"))
    return any(re.fullmatch(pattern, line) for line in printed.splitlines())


@pytest.fixture
def database() -> Iterator[str]:
    url = asyncio.run(create_database("readme"))
    yield url
    asyncio.run(drop_database(url))


def test_the_walk_through_runs_as_one_story(tmp_path: Path, database: str) -> None:
    project = make_project(tmp_path / "project")
    story = Story(project, database)
    skipped: list[str] = []  # node blocks, where node is missing
    try:
        for block in BLOCKS:
            if block.kind == "server":
                story.start(block)
            elif block.kind == "story":
                story.shell(block)
            elif block.kind == "output":
                if BLOCKS[BLOCKS.index(block) - 1].where() in skipped:
                    continue
                for line in block.text.splitlines():
                    assert matches(line, story.last_output), (
                        f"{block.where()}: {line!r} not printed; the story printed:\n{story.last_output}")
            elif block.kind == "apply":
                story.saved(lambda block=block: apply(block, project))
            elif block.kind == "watch":
                story.watch(block, [".venv/bin/python"], "#")
            elif block.kind == "node":
                node = shutil.which("node")
                if node is None or not (JS_DIR / "node_modules" / "convex").is_dir():
                    story.last_output = ""
                    skipped.append(block.where())
                    continue
                (project / "node_modules").symlink_to(JS_DIR / "node_modules", target_is_directory=True)
                story.watch(block, [node], "//")
            elif block.kind == "migration":
                exercise_migration(story, block)
        out = story.output()
        for block in of_kind("serverlog"):
            pattern = r"\d+(?:\.\d+)?".join(re.escape(part) for part in re.split(r"\d+(?:\.\d+)?", block.text.strip()))
            assert re.search(pattern, out), f"{block.where()} not in the dev server's output:\n{out[-3000:]}"
        assert out.count("reload failed") == story.refused and "Traceback" not in out, out[-3000:]
        assert (project / "functions" / "_generated" / "api.d.ts").is_file(), "the dev server wrote typed clients"
        if skipped:
            pytest.skip(f"the story ran; node is missing for {skipped}")
    finally:
        story.stop()


def exercise_migration(story: Story, block: Block) -> None:
    """The README's migration drops a column: add it, remove it from the schema (refused), then migrate."""
    name = first_comment(block, "#")
    assert re.fullmatch(r"migrations/[0-9]\w*\.py", name), f"{block.where()}: {name} is not migrations/<number>_…"
    compile(block.text, name, "exec")
    drop = re.search(r"ALTER TABLE (\w+) DROP COLUMN (\w+)", block.text)
    assert drop and "async def up(conn)" in block.text, block.where()
    table, column = drop.groups()
    schema = story.project / "schema.py"
    anchor = f'tablename="{table}"'
    original = schema.read_text()
    start = original.index(anchor)
    line_end = original.index("\n", original.index("    title = Varchar()", start))
    with_column = original[:line_end] + f"\n    {column} = Varchar(null=True)" + original[line_end:]
    story.saved(lambda: schema.write_text(with_column))
    out = story.saved(lambda: schema.write_text(original), good=False)
    assert "write a migration" in out
    target = story.project / name
    story.saved(lambda: (target.parent.mkdir(exist_ok=True), target.write_text(block.text)))

    async def columns() -> set[str]:
        conn = await asyncpg.connect(story.env["DATABASE_URL"])
        try:
            rows = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = $1", table)
            applied = await conn.fetchval("SELECT count(*) FROM _migrations WHERE name = $1", Path(name).stem)
        finally:
            await conn.close()
        assert applied == 1
        return {r["column_name"] for r in rows}

    found = asyncio.run(columns())
    assert column not in found and "title" in found


# -- blocks checked without a server ---------------------------------------------------------------------


def generated_project(tmp_path: Path) -> Path:
    """The project copy after every ``apply`` block, with its typed clients written by codegen."""
    project = make_project(tmp_path / "project")
    for block in of_kind("apply"):
        apply(block, project)
    done = subprocess.run(["./scripts/backend", "codegen"], cwd=project, env=child_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return project


@pytest.mark.node
def test_typescript_blocks_type_check_against_the_generated_types(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not TSC.is_file():
        pytest.skip("node or tests/js/node_modules is missing")
    project = generated_project(tmp_path)
    (project / "node_modules").symlink_to(JS_DIR / "node_modules", target_is_directory=True)
    files = []
    for block in of_kind("tsc"):
        name = first_comment(block, "//")
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(block.text)
        files.append(name)
    assert files
    config = {"compilerOptions": {
        "strict": True, "noEmit": True, "target": "ES2022", "module": "ESNext", "moduleResolution": "Bundler",
        "jsx": "react-jsx", "lib": ["ES2022", "DOM"], "types": [], "skipLibCheck": True,
    }, "files": files}
    (project / "tsconfig.json").write_text(json.dumps(config))
    done = subprocess.run([node, str(TSC), "-p", "tsconfig.json", "--pretty", "false"], cwd=project,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_python_blocks_compile_and_clients_type_check(tmp_path: Path) -> None:
    project = generated_project(tmp_path)
    for block in of_kind("apply", "migration", "watch"):
        compile(block.text, block.where(), "exec")
    for block in of_kind("watch"):
        name = first_comment(block, "#").split()[0]
        (project / name).write_text(block.text)
        done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
                               name], cwd=project, env=child_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block.where()}:\n{done.stdout}{done.stderr}"


def help_text(project: Path, *command: str) -> str:
    done = subprocess.run([*command, "--help"], cwd=project, env=child_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{' '.join(command)} --help: {done.stderr}"
    return done.stdout


def test_script_and_help_blocks_name_real_commands_and_flags(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    for block in of_kind("scripts"):
        for line in block.text.splitlines():
            command = line.split("#")[0].strip()
            if not command:
                continue
            script = project / shlex.split(command)[0]
            assert script.is_file() and os.access(script, os.X_OK), f"{block.where()}: {script.name} is not executable"
            assert "usage" in help_text(project, *shlex.split(command)).lower()
    for block in of_kind("help"):
        for line in block.text.splitlines():
            check_long_running(block, line, project)


def check_long_running(block: Block, line: str, project: Path) -> None:
    """``[.venv/bin/]pip install -e '.[extra]'``: the extra exists; ``[.venv/bin/]python -m MODULE [COMMAND]``: its
    ``--help`` lists every flag on the line, comments included (``python -m backend`` takes a command)."""
    words = [w for w in shlex.split(line, comments=False) if not re.match(r"^[A-Z_]+=", w)]
    if not words:
        return
    program = Path(words[0]).name
    if program == "pip":
        extras = re.findall(r"\.\[(\w+)\]", line)
        declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert extras and all(e in declared for e in extras), f"{block.where()}: {line}"
        return
    assert program == "python" and words[1] == "-m", f"{block.where()}: not a command this test can check: {line}"
    command = words[2:4] if words[2] == "backend" else words[2:3]
    shown = help_text(project if words[2] == "backend" else ROOT, sys.executable, "-m", *command)
    for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line)):
        assert re.search(rf"{re.escape(flag)}\b", shown), f"{block.where()}: {flag} not in `{' '.join(command)} --help`"


def test_readme_and_cli_agree_on_the_commands() -> None:
    shown = subprocess.run([sys.executable, "-m", "backend", "--help"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    found = re.search(r"\{([a-z,]+)\}", shown)
    assert found
    commands = set(found.group(1).split(","))
    text = README.read_text(encoding="utf-8")
    table = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)", table, re.M))
    assert listed == commands, f"README's command table {sorted(listed)} != --help {sorted(commands)}"
    used = set(re.findall(r"(?:python -m backend|\./scripts/backend) (\w+)", text))
    assert used <= commands, f"README uses unknown commands: {sorted(used - commands)}"
    for command in commands:
        summary = re.search(rf"^    {command} +(.+)$", shown, re.M)
        assert summary, f"`{command}` has no summary in --help"
    summaries = [re.search(rf"^    {c} +(.+)$", shown, re.M).group(1) for c in commands]  # type: ignore[union-attr]
    assert len(set(summaries)) == len(summaries), "two commands share a --help summary"

