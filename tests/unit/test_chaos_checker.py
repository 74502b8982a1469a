"""The chaos checker can fail: each invariant's violation, planted in an otherwise clean history, is found
(and only that one)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.chaos.checker import check
from tests.chaos.history import Follow, History, Post

A, B = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
STEPS = ["pending", "routing", "building", "submitted", "confirmed"]


def clean() -> History:
    """Two orders, each confirmed in five steps, seen once by its client, swapped once by the venue."""
    history = History("planted", fault_at=datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    for n, order_id in enumerate((A, B)):
        history.posts.append(Post(f"key-{n}", [202], {order_id}))
        history.follows[order_id] = Follow(order_id, [1, 2, 3, 4, 5], list(STEPS), 1)
        history.orders[order_id] = {
            "status": "confirmed",
            "seq": 5,
            "tx_hash": f"tx-{n}",
            "error": None,
            "logs": [{"seq": seq, "status": status} for seq, status in enumerate(STEPS, 1)],
            "created_at": datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
            "updated_at": datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC),
        }
        history.topic += [{"orderId": order_id, "seq": seq} for seq in range(1, 6)]
        history.executions.append((order_id, 1))
        history.swaps[order_id] = [{"attempt": 1, "tx_hash": f"tx-{n}"}]
    return history


def plant(history: History, column: str) -> History:
    """Break `history` the way the bug behind `column` would."""
    order: dict[str, Any] = history.orders[A]
    match column:
        case "lost":
            order["status"], order["seq"] = "submitted", 4
            history.follows[A] = Follow(A, [1, 2, 3, 4], STEPS[:4], 3)
            history.topic = [e for e in history.topic if not (e["orderId"] == A and e["seq"] == 5)]
        case "double_swaps":
            history.executions.append((A, 1))  # the same attempt driven twice (the ledger kept one)
        case "gaps":
            history.topic.remove({"orderId": A, "seq": 3})
        case "gaps_reordered":  # seq 4's first copy before seq 3's
            third = history.topic.index({"orderId": A, "seq": 3})
            history.topic[third], history.topic[third + 1] = history.topic[third + 1], history.topic[third]
        case "duplicates":
            history.follows[A].seqs.insert(3, 3)
            history.follows[A].statuses.insert(3, "building")
        case "duplicate_order":
            history.posts[0].order_ids.add(B)  # a retry with the same key got another order
        case "misreported":
            order["status"], order["error"] = "failed", "slippage_exceeded"
            history.follows[A].statuses[-1] = "failed"
    return history


def test_a_clean_history_has_no_findings() -> None:
    findings = check(clean())
    assert (findings.accepted, findings.terminal, findings.violations) == (2, 2, 0)
    assert findings.recovery_s == 3.0
    assert findings.slowest[0] == "2.0 s pending > routing > building > submitted > confirmed"


def test_copies_sent_again_on_the_topic_are_at_least_once_not_gaps() -> None:
    """What a broker killed mid-run gave: written, unacknowledged, sent again after a later seq."""
    history = clean()
    history.topic.insert(3, {"orderId": A, "seq": 3})
    history.topic.insert(4, {"orderId": A, "seq": 2})
    findings = check(history)
    assert (findings.violations, findings.topic_repeats) == (0, 2)


def test_a_retry_after_the_swap_failed_is_not_a_double_swap() -> None:
    history = clean()
    history.executions.insert(0, (A, 2))
    history.swaps[A] = [{"attempt": 2, "tx_hash": "tx-0"}]
    assert check(history).violations == 0


def test_a_swap_without_a_recorded_execute_call_is_found_the_record_being_incomplete() -> None:
    history = clean()
    history.executions.remove((A, 1))
    assert len(check(history).double_swaps) == 1


def test_a_swap_sent_after_the_one_that_landed_is_a_double_swap() -> None:
    history = clean()
    history.executions.append((A, 2))
    assert len(check(history).double_swaps) == 1


@pytest.mark.parametrize(
    ("planted", "column"),
    [
        ("lost", "lost"),
        ("double_swaps", "double_swaps"),
        ("gaps", "gaps"),
        ("gaps_reordered", "gaps"),
        ("duplicates", "duplicates"),
        ("duplicate_order", "duplicates"),
        ("misreported", "misreported"),
    ],
)
def test_each_planted_violation_is_found_in_its_column(planted: str, column: str) -> None:
    findings = check(plant(clean(), planted))
    counts = {
        name: len(getattr(findings, name))
        for name in ("lost", "double_swaps", "gaps", "duplicates", "misreported")
    }
    assert counts[column] >= 1, counts
    assert sum(counts.values()) == counts[column], f"only {column} should be found: {counts}"
