"""A history of operations under faults, and a checker that judges it against what the database holds.

The fault test records every client operation as an ``Op`` (invoked, then ``ok`` with its value, ``fail``
when the server definitely refused it, or ``unknown`` when the client cannot tell: a timeout, a lost
connection). After the run it reads the database and each subscriber's view into plain data
(``Facts``). The ``check_*`` functions are pure: they take that data and return every ``Anomaly`` they
find, so they can be tried on hand-made histories that must fail (tests/integration/test_history_checker.py).

What an anomaly is (Jepsen/Elle style, for this domain):

* ``lost`` / ``duplicate`` / ``phantom``: an acknowledged mutation is not in the database exactly once, an
  unknown one is in it more than once, a refused one is in it at all, or an acknowledged value (a booking
  or lot id) is not what the database holds under that operation's tag.
* ``oversold``: a class has more seated bookings than seats; ``counter``: the instance's ``booked`` or
  ``waitlisted`` counter disagrees with its booking rows.
* ``ledger``: a member's credit lots do not sum to their ledger.
* ``waitlist``: positions are not 1..n, or not in (priority, join time) order.
* ``stale``: a subscriber's final view differs from a fresh read after quiescence.
* ``time``: a client saw a Transition's timestamp go backwards.
* ``torn``: two queries that must agree disagreed within one Transition.
* ``crash``: a node or client process died without the nemesis killing it.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["pending", "ok", "fail", "unknown"]


@dataclass
class Op:
    """One client operation; ``tag`` is written into the database by the operation itself."""

    tag: str
    client: str
    kind: str  # book | cancel | grant
    args: dict[str, Any]
    invoked: float = field(default_factory=time.monotonic)
    outcome: Outcome = "pending"
    value: Any = None
    error: str | None = None
    completed: float | None = None

    def finish(self, outcome: Outcome, value: Any = None, error: str | None = None) -> None:
        self.outcome, self.value, self.error, self.completed = outcome, value, error, time.monotonic()


@dataclass(frozen=True)
class Anomaly:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass
class History:
    """Everything recorded during a run, appended to by clients and the nemesis."""

    ops: list[Op] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    # client -> the timestamps of its Transitions, in arrival order (across reconnects)
    timestamps: dict[str, list[int]] = field(default_factory=dict)
    # (client, label, ts, left, right): two values that must be equal, read from one Transition
    pairs: list[tuple[str, str, int, Any, Any]] = field(default_factory=list)
    # things that must not happen at all, noticed while running (a node or client process died by itself)
    incidents: list[str] = field(default_factory=list)

    def invoke(self, client: str, kind: str, tag: str, args: dict[str, Any]) -> Op:
        op = Op(tag, client, kind, args)
        self.ops.append(op)
        return op

    def saw_ts(self, client: str, ts: int) -> None:
        self.timestamps.setdefault(client, []).append(ts)

    def counts(self) -> Counter[str]:
        return Counter(f"{op.kind}:{op.outcome}" for op in self.ops)


@dataclass
class InstanceFacts:
    """One class as the database holds it after the run."""

    instance_id: str
    capacity: int
    booked: int  # the instance row's counter
    waitlisted: int
    seated: int  # booking rows that hold a seat
    waiting: int  # booking rows on the waitlist
    # the roster query's waitlist: (position, priority, joinedAt, booking id), in the order it was returned
    roster_waitlist: list[tuple[int, int, str, str]] = field(default_factory=list)


@dataclass
class Facts:
    # tag -> ids of the rows carrying that tag (bookings for book/cancel, lots for grant)
    applied: dict[str, list[str]] = field(default_factory=dict)
    instances: list[InstanceFacts] = field(default_factory=list)
    # member id -> (sum of lots' remaining, ledger sum)
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (client, query name) -> (final subscribed value, fresh read)
    views: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)


def check_exactly_once(ops: Iterable[Op], applied: Mapping[str, Sequence[str]]) -> list[Anomaly]:
    found: list[Anomaly] = []
    for op in ops:
        ids = list(applied.get(op.tag, ()))
        n = len(ids)
        if op.outcome == "ok":
            if n != 1:
                found.append(Anomaly("lost" if n == 0 else "duplicate",
                                     f"{op.kind} {op.tag} was acknowledged and is in the database {n} times"))
            elif op.kind in ("book", "grant") and _acked_id(op) != ids[0]:
                found.append(Anomaly("phantom", f"{op.kind} {op.tag} acknowledged {_acked_id(op)!r} "
                                                f"but the database holds {ids[0]!r}"))
        elif op.outcome == "fail" and n:
            found.append(Anomaly("phantom", f"{op.kind} {op.tag} was refused ({op.error}) yet applied {n} times"))
        elif op.outcome in ("unknown", "pending") and n > 1:
            found.append(Anomaly("duplicate", f"{op.kind} {op.tag} (outcome unknown) was applied {n} times"))
    return found


def _acked_id(op: Op) -> Any:
    value = op.value if isinstance(op.value, dict) else {}
    return value.get("bookingId") if op.kind == "book" else value.get("lotId")


def check_classes(instances: Iterable[InstanceFacts]) -> list[Anomaly]:
    found: list[Anomaly] = []
    for i in instances:
        if i.seated > i.capacity:
            found.append(Anomaly("oversold", f"class {i.instance_id} has {i.seated} seated for {i.capacity} seats"))
        if (i.booked, i.waitlisted) != (i.seated, i.waiting):
            found.append(Anomaly("counter", f"class {i.instance_id} counts booked={i.booked} waitlisted="
                                            f"{i.waitlisted} but holds {i.seated} seated, {i.waiting} waiting"))
        found.extend(check_waitlist(i.instance_id, i.roster_waitlist, i.waiting))
    return found


def check_waitlist(instance_id: str, roster: Sequence[tuple[int, int, str, str]], waiting: int) -> list[Anomaly]:
    """Positions are exactly 1..n for the n waiting rows, and follow (priority, joinedAt, id) order."""
    found: list[Anomaly] = []
    positions = [entry[0] for entry in roster]
    if positions != list(range(1, waiting + 1)):
        found.append(Anomaly("waitlist", f"class {instance_id}: positions {positions} for {waiting} waiting"))
    order = [entry[1:] for entry in roster]
    if order != sorted(order):
        found.append(Anomaly("waitlist", f"class {instance_id}: the waitlist is not in join order: {order}"))
    return found


def check_balances(balances: Mapping[str, tuple[int, int]]) -> list[Anomaly]:
    return [Anomaly("ledger", f"member {member}: lots hold {lots} credits, the ledger sums to {ledger}")
            for member, (lots, ledger) in balances.items() if lots != ledger]


def check_views(views: Mapping[tuple[str, str], tuple[Any, Any]]) -> list[Anomaly]:
    return [Anomaly("stale", f"{client} ended with {name} = {_short(seen)}, a fresh read gives {_short(fresh)}")
            for (client, name), (seen, fresh) in views.items() if seen != fresh]


def check_timestamps(timestamps: Mapping[str, Sequence[int]]) -> list[Anomaly]:
    found: list[Anomaly] = []
    for client, seen in timestamps.items():
        for n, (before, after) in enumerate(itertools.pairwise(seen), start=1):
            if after < before:
                found.append(Anomaly("time", f"{client}: Transition {n} went from ts {before} back to {after}"))
    return found


def check_pairs(pairs: Iterable[tuple[str, str, int, Any, Any]]) -> list[Anomaly]:
    return [Anomaly("torn", f"{client}: {label} disagree at ts {ts}: {_short(left)} vs {_short(right)}")
            for client, label, ts, left, right in pairs if left != right]


def check(history: History, facts: Facts) -> list[Anomaly]:
    """Every anomaly in the run."""
    return [
        *check_exactly_once(history.ops, facts.applied),
        *check_classes(facts.instances),
        *check_balances(facts.balances),
        *check_views(facts.views),
        *check_timestamps(history.timestamps),
        *check_pairs(history.pairs),
        *(Anomaly("crash", incident) for incident in history.incidents),
    ]


def summary(history: History, anomalies: Sequence[Anomaly]) -> str:
    ops = history.counts()
    lines = [
        f"operations: {len(history.ops)} ({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))})",
        f"faults: {sum(history.faults.values())} ({', '.join(f'{k} {v}' for k, v in sorted(history.faults.items()))})",
        "failures by reason: " + ", ".join(f"{reason} {n}" for reason, n in _reasons(history.ops).most_common(8)),
        f"transitions observed: {sum(len(v) for v in history.timestamps.values())}, "
        f"pair samples: {len(history.pairs)}",
        f"anomalies: {len(anomalies)}",
        *(f"  {a}" for a in anomalies[:50]),
    ]
    return "\n".join(lines)


def _reasons(ops: Iterable[Op]) -> Counter[str]:
    """Failed and unknown operations grouped by the stable code in their error, or its first words."""
    reasons: Counter[str] = Counter()
    for op in ops:
        if op.outcome in ("fail", "unknown"):
            text = op.error or ""
            code = re.search(r"'code': '([a-z_]+)'", text)
            reasons[f"{op.outcome}:{code.group(1) if code else text.splitlines()[0][:60] if text else '?'}"] += 1
    return reasons


def _short(value: Any, limit: int = 300) -> str:
    text = repr(dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value)
    return text if len(text) <= limit else text[:limit] + "…"
