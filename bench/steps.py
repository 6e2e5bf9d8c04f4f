"""``python -m bench.steps``: where the time from a mutation's send to its subscriber goes, step by step.

The engine runs in this process so its steps can be timed from outside its code: the runner, the hub's pass,
its re-run and its send are wrapped with timers (nothing in ``backend/`` knows). A writer process sends
``bench:add`` into one bucket over a sync socket at a steady rate; ``--subscribers`` sockets in another
process watch that bucket (``bench:latest``) and record when each value arrives. ``CLOCK_MONOTONIC`` is one
clock for every process on the machine, so the steps of one mutation line up across them:

1. the client's send → the server's mutation handler starts (socket, frame parsing, queueing)
2. → its transaction is committed (pool, ``BEGIN``, the insert, the bookkeeping with ``COMMIT``)
3. → the hub's pass has its snapshot and the commits in it (wake-up, the commit-log read)
4. → the re-run of the watched query is done
5. → the first watcher's Transition is handed to its socket
6. → the first watcher has it (loopback, the client's parsing)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

from .harness import Worker, percentile, workers

BUCKET = "steps"
STEPS = ["socket in → handler", "handler → committed", "committed → snapshot read",
         "snapshot → query re-run", "re-run → Transition sent", "sent → client has it"]


def _timed(owner: Any, name: str, record: Callable[[float, float, tuple[Any, ...]], None]) -> None:
    """Wrap the coroutine method ``owner.name`` so each call reports (start, end, args)."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return await original(*args, **kwargs)
        finally:
            record(began, time.monotonic(), args)

    setattr(owner, name, wrapper)


async def _run(rate: float, seconds: float, subscribers: int) -> dict[str, list[float]]:
    from backend.reactive.hub import Hub
    from backend.runner import Runner
    from backend.sync.session import SyncSession
    from backend.testing import TestBackend

    handler_starts: list[float] = []
    commits: dict[int, float] = {}
    reads: list[float] = []  # a re-run's start: the pass's snapshot and commit-log read are done
    reruns: list[float] = []
    sends: list[float] = []

    def on_mutation(began: float, _end: float, _args: tuple[Any, ...]) -> None:
        handler_starts.append(began)

    def on_attempt(_began: float, end: float, args: tuple[Any, ...]) -> None:
        kwargs = args[2]
        if kwargs.get("bucket") == BUCKET:
            commits[int(kwargs["n"])] = end

    def on_rerun(began: float, end: float, _args: tuple[Any, ...]) -> None:
        reads.append(began)
        reruns.append(end)

    _timed(SyncSession, "_mutation", on_mutation)
    _timed(Runner, "_attempt", on_attempt)
    _timed(Hub, "_run", on_rerun)
    original_send = Hub._send_transition

    def send_transition(self: Hub, sub: Any, ts: int) -> None:
        watching = bool(sub.changed)
        original_send(self, sub, ts)
        if watching:
            sends.append(time.monotonic())

    Hub._send_transition = send_transition  # type: ignore[method-assign]

    async with TestBackend(run_scheduler=False) as tb:
        await tb.runner.mutation("bench:add", {"bucket": BUCKET, "n": 0}, None)
        url = f"ws://127.0.0.1:{tb.port}/api/1.0.0/sync"
        watch = [{"url": url, "protocol": "sync", "buckets": {"same": BUCKET, "count": subscribers}}]
        async with workers("subscriber", watch, deadline=seconds + 120) as group:
            await group[0].event("ready", timeout=60)
            writer = await Worker("writer", {"url": url, "protocol": "sync", "connections": 1,
                                             "buckets": {"same": BUCKET, "count": 1}},
                                  deadline=seconds + 60).start()
            try:
                await writer.event("ready")
                writer.send("run", rate=rate, duration=seconds, n_base=1)
                sent = (await writer.event("result", timeout=seconds + 30))["sent"]
            finally:
                await writer.close()
            await asyncio.sleep(0.5)
            group[0].send("collect")
            receipts = (await group[0].event("result"))["receipts"]
    first_seen: dict[int, float] = {}
    for _sock, _query, value, at in receipts:
        if value is not None:
            first_seen[int(value)] = min(at, first_seen.get(int(value), at))
    handler_starts.sort()
    reads.sort()
    reruns.sort()
    sends.sort()
    steps: dict[str, list[float]] = {s: [] for s in STEPS}
    steps["total"] = []
    for n, _bucket, t0, _done in sent:
        committed, seen = commits.get(n), first_seen.get(n)
        if committed is None or seen is None:
            continue  # coalesced with the next commit into one pass: no value of its own reached the client
        marks = [t0, _after(handler_starts, t0), committed, _after(reads, committed), _after(reruns, committed),
                 _after(sends, committed), seen]
        if any(m is None for m in marks) or not all(a <= b for a, b in itertools.pairwise(marks)):  # type: ignore[operator]
            continue
        for name, a, b in zip(STEPS, marks, marks[1:], strict=False):
            steps[name].append((b - a) * 1000)  # type: ignore[operator]
        steps["total"].append((seen - t0) * 1000)
    return steps


def _after(times: list[float], at: float) -> float | None:
    i = bisect.bisect_left(times, at)
    return times[i] if i < len(times) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.steps", description=__doc__)
    parser.add_argument("--rate", type=float, default=50.0, help="mutations per second")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--subscribers", type=int, default=1)
    args = parser.parse_args(argv)
    steps = asyncio.run(_run(args.rate, args.seconds, args.subscribers))
    total = steps.pop("total")
    print(f"{len(total)} mutations, {args.rate:.0f}/s, {args.subscribers} watcher(s); ms per step "
          "(each column's own percentile, so the p50s need not add up to the total's)")
    print("| step | p50 ms | p90 ms | share of the p50 sum |")
    print("|---|---|---|---|")
    p50s = {name: percentile(values, 50) for name, values in steps.items()}
    whole = sum(p50s.values())
    for name, values in steps.items():
        print(f"| {name} | {p50s[name]:.3f} | {percentile(values, 90):.3f} | {100 * p50s[name] / whole:.0f}% |")
    print(f"| send → client has it (total) | {percentile(total, 50):.3f} | {percentile(total, 90):.3f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
