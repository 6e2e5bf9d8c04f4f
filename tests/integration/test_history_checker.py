"""The fault test's checker must be able to fail: hand-made histories with one defect each are caught."""

from __future__ import annotations

from tests.support.history import Facts, History, InstanceFacts, check, check_exactly_once, summary


def _history() -> History:
    history = History()
    history.invoke("a", "book", "op-a-0", {}).finish("ok", {"bookingId": "b1", "status": "confirmed"})
    history.invoke("a", "grant", "op-a-1", {}).finish("ok", {"lotId": "l1"})
    history.invoke("b", "cancel", "op-b-0", {}).finish("ok", {"status": "cancelled"})
    history.invoke("b", "book", "op-b-1", {}).finish("fail", error="booking_refused")
    history.invoke("b", "grant", "op-b-2", {}).finish("unknown", error="timeout")
    history.saw_ts("a", 10)
    history.saw_ts("a", 12)
    history.pairs.append(("a", "seats", 12, 2, 2))
    return history


def _facts() -> Facts:
    return Facts(
        applied={"op-a-0": ["b1"], "op-a-1": ["l1"], "op-b-0": ["b1"], "op-b-2": ["l2"]},
        instances=[InstanceFacts("i1", capacity=2, booked=2, waitlisted=2, seated=2, waiting=2,
                                 roster_waitlist=[(1, 0, "2025-01-01T00:00:00", "b3"),
                                                  (2, 0, "2025-01-01T00:00:01", "b4")])],
        balances={"m1": (7, 7)},
        views={("a", "schedule"): ([1], [1])},
    )


def kinds(history: History, facts: Facts) -> list[str]:
    return [anomaly.kind for anomaly in check(history, facts)]


def test_a_clean_history_has_no_anomalies() -> None:
    assert kinds(_history(), _facts()) == []


def test_an_unknown_operation_may_be_applied_once_or_not_at_all() -> None:
    facts = _facts()
    del facts.applied["op-b-2"]
    assert kinds(_history(), facts) == []


def test_a_duplicate_is_reported() -> None:
    facts = _facts()
    facts.applied["op-a-1"] = ["l1", "l9"]
    assert kinds(_history(), facts) == ["duplicate"]


def test_an_unknown_operation_applied_twice_is_a_duplicate() -> None:
    facts = _facts()
    facts.applied["op-b-2"] = ["l2", "l3"]
    assert kinds(_history(), facts) == ["duplicate"]


def test_a_lost_acknowledged_mutation_is_reported() -> None:
    facts = _facts()
    del facts.applied["op-b-0"]
    assert kinds(_history(), facts) == ["lost"]


def test_a_refused_mutation_that_was_applied_is_reported() -> None:
    facts = _facts()
    facts.applied["op-b-1"] = ["b7"]
    assert kinds(_history(), facts) == ["phantom"]


def test_an_acknowledged_id_that_differs_from_the_database_is_reported() -> None:
    facts = _facts()
    facts.applied["op-a-0"] = ["b2"]
    assert kinds(_history(), facts) == ["phantom"]


def test_an_oversold_class_is_reported() -> None:
    facts = _facts()
    facts.instances[0].seated = facts.instances[0].booked = 3
    assert kinds(_history(), facts) == ["oversold"]


def test_a_counter_that_disagrees_with_the_rows_is_reported() -> None:
    facts = _facts()
    facts.instances[0].waitlisted = 1
    assert kinds(_history(), facts) == ["counter"]


def test_waitlist_gaps_and_disorder_are_reported() -> None:
    facts = _facts()
    first, second = facts.instances[0].roster_waitlist
    facts.instances[0].roster_waitlist = [first, (3, *second[1:])]
    assert kinds(_history(), facts) == ["waitlist"]
    facts.instances[0].roster_waitlist = [(1, *second[1:]), (2, *first[1:])]
    assert kinds(_history(), facts) == ["waitlist"]


def test_a_balance_that_differs_from_its_ledger_is_reported() -> None:
    facts = _facts()
    facts.balances["m1"] = (7, 8)
    assert kinds(_history(), facts) == ["ledger"]


def test_a_stale_final_view_is_reported() -> None:
    facts = _facts()
    facts.views[("a", "schedule")] = ([1], [2])
    assert kinds(_history(), facts) == ["stale"]


def test_a_timestamp_going_backwards_is_reported() -> None:
    history = _history()
    history.saw_ts("a", 11)
    history.saw_ts("b", 5)  # each client has its own clock history: b starting lower is fine
    assert kinds(history, _facts()) == ["time"]


def test_a_torn_pair_is_reported() -> None:
    history = _history()
    history.pairs.append(("a", "seats", 13, 2, 1))
    assert kinds(history, _facts()) == ["torn"]


def test_a_crash_is_reported() -> None:
    history = _history()
    history.incidents.append("node 1 exited by itself")
    assert kinds(history, _facts()) == ["crash"]


def test_a_pending_operation_counts_as_unknown() -> None:
    history = History()
    history.invoke("a", "grant", "op-a-0", {})
    assert check_exactly_once(history.ops, {"op-a-0": ["l1"]}) == []
    assert [a.kind for a in check_exactly_once(history.ops, {"op-a-0": ["l1", "l2"]})] == ["duplicate"]


def test_the_summary_names_every_anomaly() -> None:
    history, facts = _history(), _facts()
    facts.balances["m1"] = (1, 2)
    text = summary(history, check(history, facts))
    assert "anomalies: 1" in text and "ledger: member m1" in text
    assert "operations: 5" in text and "fail:booking_refused 1" in text
