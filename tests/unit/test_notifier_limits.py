"""How many sockets a client may hold, and the bounded per-client queue."""

from __future__ import annotations

import uuid

from notifier.fanout import Subscription
from notifier.limits import ConnectionLimits, Refusal
from shared.domain.events import StatusEvent
from shared.domain.status import OrderStatus
from shared.runtime.clock import utcnow


def test_three_per_order_and_ip_then_a_refusal_and_a_release_frees_a_slot() -> None:
    limits = ConnectionLimits(per_order_ip=3, per_process=10)
    order, other = uuid.uuid4(), uuid.uuid4()
    assert [limits.acquire("a", order) for _ in range(3)] == [None, None, None]
    assert limits.acquire("a", order) is Refusal.PER_ORDER_IP
    assert limits.acquire("b", order) is None and limits.acquire("a", other) is None
    limits.release("a", order)
    assert limits.acquire("a", order) is None
    assert limits.open == 5


def test_the_process_maximum_counts_every_connection() -> None:
    limits = ConnectionLimits(per_order_ip=3, per_process=2)
    assert limits.acquire("a", uuid.uuid4()) is None and limits.acquire("b", uuid.uuid4()) is None
    assert limits.acquire("c", uuid.uuid4()) is Refusal.PROCESS_FULL


def test_a_full_queue_marks_the_subscription_overflowed_instead_of_growing() -> None:
    order = uuid.uuid4()
    subscription = Subscription(order, maxsize=2)
    for seq in (1, 2, 3):
        subscription.offer(
            StatusEvent(order_id=order, seq=seq, status=OrderStatus.PENDING, at=utcnow(), max_attempts=3)
        )
    assert subscription.queue.qsize() == 2 and subscription.overflowed.is_set()
