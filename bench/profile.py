"""``python -m bench.profile``: sample the server under scenario 1's load with py-spy, print the top frames.

The server (``serve --workers 1``) runs as in scenario 1 and 32 WebSocket clients book in a closed loop; py-spy
(``pip install py-spy``) samples the server process from outside, without pausing it (``--nonblocking``), and
writes folded stacks. The summary lists functions by *self* time (where the interpreter was) and by *total*
time (on the stack), as shares of the non-idle samples. ``--speedscope`` also writes a file for
https://www.speedscope.app.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path

from .harness import REPO, ServerProcess, fresh_database, prepare
from .report import RESULTS
from .s1_mutations import HISTORY, MEMBERS, SLOTS, _load


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` → ``func (file.py)``: one entry per function, not per line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(REPO) + "/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def summarize(folded: Path, top: int) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    out = [f"{samples} samples (non-idle)", "", "self time:"]
    out += [f"  {100 * n / samples:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    out += ["", "total time (on the stack):"]
    out += [f"  {100 * n / samples:5.1f}%  {frame}" for frame, n in total.most_common(top)]
    return "\n".join(out)


async def _profile(seconds: float, rate: int, out: Path, speedscope: bool, nonblocking: bool) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    async with fresh_database() as dsn:
        await prepare(dsn, [("slot", SLOTS, 0, 1), ("member", MEMBERS, 0, HISTORY)])
        async with ServerProcess(dsn) as server:
            fmt = ["--format", "speedscope"] if speedscope else ["--format", "raw"]
            target = out.with_suffix(".speedscope.json") if speedscope else out
            record = await asyncio.create_subprocess_exec(
                spy, "record", "--pid", str(server.pid), "--duration", str(int(seconds)), "--rate", str(rate),
                *(["--nonblocking"] if nonblocking else []), *fmt, "-o", str(target),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            await _load("mutator", {"url": server.ws_url}, 32, 1.0, seconds + 1.0, "prof", dsn)
            _, err = await record.communicate()
            if record.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--blocking", action="store_true",
                        help="pause the server for each sample: whole stacks, at some cost to its speed")
    parser.add_argument("--speedscope", action="store_true", help="write a speedscope file instead of a summary")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "profile.folded"
    asyncio.run(_profile(args.seconds, args.rate, out, args.speedscope, not args.blocking))
    if args.speedscope:
        print(f"speedscope file: {out.with_suffix('.speedscope.json')}")
    else:
        print(summarize(out, args.top))
        print(f"\nfolded stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
