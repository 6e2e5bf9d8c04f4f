"""Results: one row per figure (ours beside its baseline), a markdown table, the JSON file and the chart."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One figure. ``ratio`` is ours / baseline; ``target`` says which way is good and where the bar is."""

    scenario: str
    metric: str
    ours: float | None
    baseline: float | None
    unit: str
    conditions: str
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline


@dataclass
class Report:
    machine: str = ""
    started: str = ""
    quick: bool = False
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # series for the chart, per scenario
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000 or float(value).is_integer():
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def markdown(report: Report) -> str:
    lines = [
        "| scenario | figure | ours | baseline | ratio | target | conditions |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}x"
        mark = "" if row.met is None else (" ✅" if row.met else " ❌")
        lines.append(
            f"| {row.scenario} | {row.metric} | {_fmt(row.ours, row.unit)} | {_fmt(row.baseline, row.unit)} "
            f"| {ratio} | {row.target}{mark} | {row.conditions} |"
        )
    return "\n".join(lines)


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} vCPU ({cpu}){memory}, Linux {platform.release()}, Python {platform.python_version()}"


def write(report: Report, command: str, name: str = "latest") -> tuple[Path, Path]:
    """``<name>.json`` (ignored by git) and ``<name>.md``; only a run of every scenario writes ``latest``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": report.machine, "started": report.started, "quick": report.quick, "seconds": report.seconds,
        "rows": [{**asdict(r), "ratio": r.ratio} for r in report.rows], "data": report.data, "notes": report.notes,
    }
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=1, default=float))
    md_path = RESULTS / f"{name}.md"
    text = [
        "# Benchmark results",
        "",
        f"`{command}` on {report.machine}, started {report.started}, took {report.seconds:.0f} s"
        + (" (quick mode: shorter runs, fewer sockets)" if report.quick else "") + ".",
        "Every figure is measured beside its baseline in the same run; ratio = ours / baseline.",
        "",
        markdown(report),
        "",
    ]
    if report.notes:
        text += ["Notes:", ""] + [f"- {note}" for note in report.notes] + [""]
    text += ["![chart](chart.png)", ""]
    md_path.write_text("\n".join(text))
    return json_path, md_path
