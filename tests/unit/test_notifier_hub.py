"""The notifier's hub: events reach the subscribers of their order, and only their order's; an event that
nobody on this process follows is not even decoded; a dead consumer is visible."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from notifier.fanout import Hub
from shared.domain.events import StatusEvent
from shared.domain.status import OrderStatus
from shared.runtime.clock import utcnow
from shared.runtime.config import Settings


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
