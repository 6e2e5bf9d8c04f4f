"""The PNG chart of a run: latency distributions, throughput vs concurrency, fan-out, matching, memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import RESULTS, Report

OURS, BASE, GREY = "#1f77b4", "#ff7f0e", "#7f7f7f"


def _cdf(ax: Any, samples: list[float], label: str, color: str) -> None:
    if not samples:
        return
    ordered = sorted(samples)
    ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
    ax.plot(ordered, ys, label=label, color=color)


def _empty(ax: Any, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color=GREY)
    ax.set_xticks([])
    ax.set_yticks([])


def draw(report: Report, path: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = path or RESULTS / "chart.png"
    data = report.data
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (a, b, c), (d, e, f) = axes

    title = "1. mutation latency (32 clients)"
    if "mutations" in data:
        m = data["mutations"]
        _cdf(a, m["engine"]["sample"], f"engine p50 {m['engine']['p50']:.0f} ms", OURS)
        _cdf(a, m["asyncpg"]["sample"], f"raw asyncpg p50 {m['asyncpg']['p50']:.0f} ms", BASE)
        _cdf(a, m["asyncpg+bookkeeping"]["sample"], "raw asyncpg + engine's SQL", GREY)
        a.set_xscale("log")
        a.set_xlabel("ms (log)")
        a.set_ylabel("fraction of mutations")
        a.set_title(title)
        a.legend(fontsize=8)
    else:
        _empty(a, title)

    title = "1. throughput vs concurrency"
    if "mutations_curve" in data:
        for name, color in (("engine", OURS), ("asyncpg", BASE)):
            points = data["mutations_curve"][name]
            b.plot([p[0] for p in points], [p[1] for p in points], "o-", color=color,
                   label="engine (sync WebSocket)" if name == "engine" else "raw asyncpg, same SQL")
        b.set_xscale("log", base=2)
        b.set_xlabel("concurrent clients")
        b.set_ylabel("mutations / s")
        b.set_title(title)
        b.legend(fontsize=8)
    else:
        _empty(b, title)

    title = "2. commit → subscriber latency (1,000 subscribers)"
    if "latency" in data:
        lat = data["latency"]
        _cdf(c, lat["engine"]["sample"], f"engine p50 {lat['engine']['p50']:.1f} ms", OURS)
        _cdf(c, lat["baseline"]["sample"], f"asyncpg NOTIFY + websockets p50 {lat['baseline']['p50']:.1f} ms", BASE)
        c.set_xscale("log")
        c.set_xlabel("ms (log)")
        c.set_ylabel("fraction of updates")
        c.set_title(title)
        c.legend(fontsize=8)
    else:
        _empty(c, title)

    title = "3. fan-out: time until the last socket has it"
    if "fanout" in data:
        for name, color in (("engine", OURS), ("broadcast", BASE)):
            points = data["fanout"][name]
            d.plot([p[0] for p in points], [p[1] for p in points], "o-", color=color,
                   label="engine (1 re-run)" if name == "engine" else "raw websockets broadcast")
        d.set_xscale("log")
        d.set_yscale("log")
        d.set_xlabel("sockets")
        d.set_ylabel("ms")
        d.set_title(title)
        d.legend(fontsize=8)
    else:
        _empty(d, title)

    title = "4. matching cost per written key"
    if "invalidation" in data:
        costs = data["invalidation"]["match_us"]
        labels = ["written bucket\nonly", "+10,000 in\nother buckets", "+10,000 in\nthe same bucket"]
        values = [costs["none"], costs["other_buckets"], costs["same_bucket"]]
        e.bar(labels, values, color=[BASE, OURS, GREY])
        e.set_yscale("log")
        e.set_ylabel("µs (log)")
        e.set_title(title)
        e.tick_params(axis="x", labelsize=8)
    else:
        _empty(e, title)

    title = "5. server memory per idle session"
    if "sessions" in data:
        s = data["sessions"]
        f.bar(["engine (session + query)", "raw websockets"],
              [s["engine"]["kib_per_session"], s["baseline"]["kib_per_session"]], color=[OURS, BASE])
        f.axhline(30, color="red", linestyle="--", linewidth=1, label="target 30 KiB")
        f.set_ylabel("KiB")
        f.set_title(title)
        f.legend(fontsize=8)
    else:
        _empty(f, title)

    fig.suptitle(f"tidewater benchmarks — {report.machine}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
