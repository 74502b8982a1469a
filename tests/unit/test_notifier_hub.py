"""The notifier's hub: events reach the subscribers of their order, and only their order's; an event that
nobody on this process follows is not even decoded; a message that cannot be read is counted and skipped;
a dead consumer is visible."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from notifier.fanout import Hub
from shared.domain.events import StatusEvent
from shared.domain.status import OrderStatus
from shared.runtime.clock import utcnow
from shared.runtime.config import Settings
from shared.runtime.tasks import cancel_and_wait


def event(order_id: uuid.UUID, seq: int) -> StatusEvent:
    return StatusEvent(order_id=order_id, seq=seq, status=OrderStatus.ROUTING, at=utcnow(), max_attempts=3)


def test_an_event_reaches_the_subscribers_of_its_order_only() -> None:
    hub = Hub(Settings())
    mine, other = uuid.uuid4(), uuid.uuid4()
    first, second, elsewhere = hub.subscribe(mine), hub.subscribe(mine), hub.subscribe(other)
    hub.dispatch_raw(str(mine).encode(), event(mine, 2).to_json())
    assert [e.seq for e in (first.queue.get_nowait(), second.queue.get_nowait())] == [2, 2]
    assert elsewhere.queue.empty()


def test_an_event_nobody_here_follows_is_not_decoded() -> None:
    hub = Hub(Settings())
    followed = uuid.uuid4()
    subscription = hub.subscribe(followed)
    hub.dispatch_raw(str(uuid.uuid4()).encode(), b"not json at all")  # would raise if decoded
    hub.dispatch_raw(None, b"{}")
    hub.dispatch_raw(str(followed).encode(), b"not json at all")  # followed, undecodable: dropped, logged
    assert subscription.queue.empty()
    hub.unsubscribe(subscription)
    hub.dispatch_raw(str(followed).encode(), event(followed, 3).to_json())
    assert subscription.queue.empty()


class DyingConsumer:
    async def getmany(self, **_: Any) -> dict[object, list[object]]:
        raise RuntimeError("the consumer broke")


async def test_a_dead_consumer_is_visible() -> None:
    hub = Hub(Settings())
    hub._consumer = DyingConsumer()
    hub._task = asyncio.create_task(hub._run())
    await asyncio.wait([hub._task])
    assert not hub.consuming
    assert isinstance(hub._task.exception(), RuntimeError)


def rejected(reason: str) -> float:
    labels = {"topic": "order.status", "reason": reason}
    return REGISTRY.get_sample_value("messages_rejected_total", labels) or 0.0


def test_a_message_that_cannot_be_read_is_counted_and_the_hub_delivers_later_events() -> None:
    """One undecodable `order.status` message raised out of the consumer task before: every client of the
    process stopped getting events."""
    hub = Hub(Settings())
    followed = uuid.uuid4()
    subscription = hub.subscribe(followed)
    key = str(followed).encode()
    before = {reason: rejected(reason) for reason in ("key", "value", "schema")}
    with capture_logs() as logs:
        hub.dispatch_raw(b"\xff\xfe", event(followed, 2).to_json(), partition=1, offset=41)
        hub.dispatch_raw(None, event(followed, 2).to_json(), partition=1, offset=42)
        hub.dispatch_raw(key, b"\xff not json", partition=1, offset=43)
        hub.dispatch_raw(key, b'{"orderId": 7}', partition=1, offset=44)
        hub.dispatch_raw(key, event(uuid.uuid4(), 2).to_json(), partition=1, offset=45)  # another order's
        hub.dispatch_raw(key, None, partition=1, offset=46)
    assert subscription.queue.empty()
    assert {reason: rejected(reason) - before[reason] for reason in before} == {
        "key": 3,
        "value": 2,
        "schema": 1,
    }
    assert [(line["topic"], line["partition"], line["offset"]) for line in logs] == [
        ("order.status", 1, offset) for offset in range(41, 47)
    ]

    hub.dispatch_raw(key, event(followed, 3).to_json(), partition=1, offset=47)
    assert subscription.queue.get_nowait().seq == 3


class OneBatchConsumer:
    """Hands over one batch of (key, value) messages, then nothing until cancelled."""

    def __init__(self, *messages: tuple[bytes | None, bytes]) -> None:
        self.batches = [
            {"tp": [Record(key, value, 0, offset) for offset, (key, value) in enumerate(messages)]}
        ]

    async def getmany(self, **_: Any) -> dict[str, list[Record]]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(3600)
        return {}


@dataclass
class Record:
    key: bytes | None
    value: bytes
    partition: int
    offset: int


async def test_the_consumer_task_outlives_a_poison_message_and_delivers_what_follows() -> None:
    hub = Hub(Settings())
    followed = uuid.uuid4()
    subscription = hub.subscribe(followed)
    hub._consumer = OneBatchConsumer(
        (b"\xff\xfe", b"{}"),
        (str(followed).encode(), b"]["),
        (str(followed).encode(), event(followed, 2).to_json()),
    )
    hub._task = asyncio.create_task(hub._run())
    try:
        assert (await asyncio.wait_for(subscription.queue.get(), 5)).seq == 2
        assert hub.consuming
    finally:
        await cancel_and_wait(hub._task)
