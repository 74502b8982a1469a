"""Who the client is behind proxies, how many sockets it may hold, and the bounded per-client queue."""

from __future__ import annotations

import uuid

from notifier.limits import ConnectionLimits, Refusal, client_ip, trusted_proxies
from notifier.service import Subscription
from shared.config import Settings
from shared.events import OrderStatus, StatusEvent, utcnow

LOCAL = trusted_proxies(Settings(trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"]))


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_ip("192.0.2.1", "203.0.113.9", LOCAL) == "192.0.2.1"


def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() -> None:
    assert client_ip("127.0.0.1", "203.0.113.9", LOCAL) == "203.0.113.9"
    # A client-made entry on the left cannot move it: the proxy appended what it saw.
    assert client_ip("127.0.0.1", "1.2.3.4, 203.0.113.9, 10.1.2.3", LOCAL) == "203.0.113.9"


def test_a_trusted_peer_without_a_usable_header_is_the_client() -> None:
    assert client_ip("127.0.0.1", None, LOCAL) == "127.0.0.1"
    assert client_ip("127.0.0.1", "garbage", LOCAL) == "127.0.0.1"
    assert client_ip("127.0.0.1", "10.0.0.5", LOCAL) == "10.0.0.5"  # only proxies: the first hop


def test_the_default_trusts_only_the_local_proxy() -> None:
    assert [str(n) for n in trusted_proxies(Settings())] == ["127.0.0.1/32"]


def test_trusted_proxies_may_also_come_as_a_comma_separated_string() -> None:
    settings = Settings().model_copy(update={"trusted_proxies": "127.0.0.1/32, 10.0.0.0/8"})
    assert [str(n) for n in trusted_proxies(settings)] == ["127.0.0.1/32", "10.0.0.0/8"]


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
