"""Fan-out of `order.status` to WebSocket subscribers.

Each notifier process reads every partition of `order.status` from its end (no consumer group: no offsets to
commit, no rebalances) and hands each event to the subscribers of its order on this process. A subscriber
registers before it reads the snapshot from Postgres, so an event that lands between the two is queued, and
the connection drops everything with seq ≤ what it already sent: nothing is lost, nothing is sent twice.
Because the snapshot comes from Postgres, a client that connects after a restart (or with `lastSeq`) is
caught up from the durable record, not from this process's memory.

Subscriptions are found by the message's key (the orderId), so an event nobody here follows is never
decoded: a notifier's cost follows its clients' events, not the whole stream. If the consumer task dies,
the notifier says so on /ready (503) and in its log, refuses new WebSocket handshakes (503), and exits so that
its supervisor starts it again, instead of serving heartbeats only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from uuid import UUID

from aiokafka import AIOKafkaConsumer

from shared.domain.events import StatusEvent
from shared.messaging.kafka import topic_partitions
from shared.messaging.quarantine import Rejected, read, reject
from shared.messaging.topics import ORDER_STATUS
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger
from shared.runtime.tasks import cancel_and_wait, essential

logger = get_logger(__name__)


class Subscription:
    """One client's queue of events for one order. Bounded: a client that cannot keep up is cut off."""

    def __init__(self, order_id: UUID, maxsize: int) -> None:
        self.order_id = order_id
        self.queue: asyncio.Queue[StatusEvent] = asyncio.Queue(maxsize)
        self.overflowed = asyncio.Event()

    def offer(self, event: StatusEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()


class Hub:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queue_size = settings.ws_send_queue
        # by str(orderId), the key every `order.status` message carries
        self._subscriptions: dict[str, set[Subscription]] = defaultdict(set)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.positioned = asyncio.Event()

    def subscribe(self, order_id: UUID) -> Subscription:
        subscription = Subscription(order_id, self._queue_size)
        self._subscriptions[str(order_id)].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        key = str(subscription.order_id)
        subscribers = self._subscriptions.get(key)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscriptions[key]

    @property
    def consuming(self) -> bool:
        """The consumer task is running (False once it has died: nothing more would reach any client)."""
        return self._task is not None and not self._task.done()

    def dispatch_raw(
        self,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        """Hand one `order.status` message to the subscribers of its order, decoding it only if there are
        any. One that cannot be read is counted and logged (shared/messaging/quarantine.py), never raised:
        that would end the consumer task, and every client of this process would stop getting events. The
        notifier owns no part of the topic, so it sets nothing aside."""
        try:
            order = key.decode() if key is not None else None
        except UnicodeDecodeError:
            reject(ORDER_STATUS.name, partition, offset, Rejected("key", "the key is not UTF-8"))
            return
        if order is None:
            reject(ORDER_STATUS.name, partition, offset, Rejected("key", "no key (the orderId)"))
            return
        subscribers = self._subscriptions.get(order)
        if not subscribers:
            return
        event = read(StatusEvent, key, value)
        if isinstance(event, Rejected):
            reject(ORDER_STATUS.name, partition, offset, event)
            return
        for subscription in tuple(subscribers):
            subscription.offer(event)

    async def start(self) -> None:
        topic = self._settings.topic(ORDER_STATUS.name)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_servers,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_min_bytes=self._settings.notifier_fetch_min_bytes,
            fetch_max_wait_ms=self._settings.kafka_fetch_max_wait_ms,
            request_timeout_ms=max(self._settings.kafka_request_timeout_ms, 10_000),
        )
        await self._consumer.start()
        partitions = await topic_partitions(self._consumer._client, topic)
        if not partitions:
            raise RuntimeError(f"topic {topic} does not exist: run `python -m shared.runtime.cli topics`")
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve every position now, so that no event after "ready" is skipped
            await self._consumer.position(tp)
        self.positioned.set()
        # Essential (shared/runtime/tasks.py): should it die, the process exits and is started again.
        self._task = essential(asyncio.create_task(self._run(), name="order-status-consumer"))

    async def _run(self) -> None:
        assert self._consumer is not None
        try:
            while True:
                batches = await self._consumer.getmany(timeout_ms=1000, max_records=1000)
                for messages in batches.values():
                    for message in messages:
                        self.dispatch_raw(
                            message.key, message.value, partition=message.partition, offset=message.offset
                        )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            logger.error("notifier.consumer_died", error=repr(exc), exc_info=exc)
            raise

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._consumer is not None:
            await self._consumer.stop()
