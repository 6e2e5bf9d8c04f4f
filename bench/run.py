"""``python -m bench [--quick] [--only 1,2,...]``: run the scenarios, print the table, write results and chart.

Each scenario makes its own fresh database (on ``DATABASE_URL``'s server, or the embedded PostgreSQL the
tests use), measures the engine and its baseline in the same run, and adds rows to the report. The whole
run stays under 12 minutes on a 2-core machine; ``--quick`` takes about two minutes (CI does not run it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # ``python bench/run.py``: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import REPO, raise_nofile
from bench.report import RESULTS, Report, machine_description, markdown, write

SCENARIOS = {
    "1": "bench.s1_mutations",
    "2": "bench.s2_latency",
    "3": "bench.s3_fanout",
    "4": "bench.s4_invalidation",
    "5": "bench.s5_sessions",
    "6": "bench.s6_schedule",
    "7": "bench.s7_workers",
}


async def _main(args: argparse.Namespace) -> Report:
    import importlib
    import os

    os.chdir(REPO)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # the in-process servers of scenarios 3 and 4
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench.harness import fresh_database, pg_conditions

    report = Report(machine=machine_description(), started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    quick=args.quick)
    async with fresh_database() as url:
        report.machine += f", {await pg_conditions(url)}"
    chosen = [s.strip() for s in args.only.split(",")] if args.only else list(SCENARIOS)
    for key in chosen:
        began = time.monotonic()
        module = importlib.import_module(SCENARIOS[key])
        print(f"scenario {key}: {module.__doc__.splitlines()[0] if module.__doc__ else ''}", flush=True)
        try:
            await module.run(report, args.quick)
        except Exception as error:  # one broken scenario must not lose the others' figures
            report.notes.append(f"scenario {key} failed: {type(error).__name__}: {error}")
            print(f"  failed: {type(error).__name__}: {error}", flush=True)
        print(f"  done in {time.monotonic() - began:.0f} s", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a minute: shorter runs, fewer sockets")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers, e.g. 1,3 (results go to "
                        "bench/results/partial.*, not latest.*)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    args = parser.parse_args(argv)
    raise_nofile()
    began = time.monotonic()
    report = asyncio.run(_main(args))
    report.seconds = time.monotonic() - began
    command = "python -m bench" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    # A partial run (--only) must not replace the committed results of a full one.
    name = "partial" if args.only else "latest"
    json_path, md_path = write(report, command, name)
    print()
    print(markdown(report))
    for note in report.notes:
        print(f"- {note}")
    if not args.no_chart:
        _draw_chart(report, RESULTS / ("partial.png" if args.only else "chart.png"))
    print(f"results: {md_path} and {json_path} ({report.seconds:.0f} s)")
    return 0


def _draw_chart(report: Report, path: Path) -> None:
    """The chart needs the optional ``bench`` extra; without it the table and results still stand."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        print("\nchart: skipped (matplotlib is not installed; `pip install -e '.[bench]'` adds it)")
        return
    from bench.chart import draw

    print(f"\nchart: {draw(report, path)}")


if __name__ == "__main__":
    raise SystemExit(main())
