"""The outbox relay: publishes the rows that ingress committed with each order, then marks them published.

One relay task runs in every ingress process. It wakes right after each commit (the fast path) and also
polls every OUTBOX_POLL_INTERVAL_MS, so rows left behind by a process that crashed between commit and
publish are picked up by any surviving or restarted process. Rows are claimed `FOR UPDATE SKIP LOCKED` in
id order (several relays share the work without waiting on each other), sent one by one through the
acks=all idempotent producer, and marked published in the same transaction only after every send was
acknowledged. A failure rolls the batch back: rows sent before it go out again, which downstream stages
treat as a no-op (conditional UPDATEs on seq) and the notifier drops by seq.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from ingress import repository
from shared.events import OrderPlaced, StatusEvent, Wire
from shared.kafka import Publisher
from shared.logging import get_logger
from shared.topics import ORDER_STATUS, ORDERS, TopicSpec

logger = get_logger(__name__)

PAYLOADS: dict[str, tuple[TopicSpec, type[Wire]]] = {
    ORDERS.name: (ORDERS, OrderPlaced),
    ORDER_STATUS.name: (ORDER_STATUS, StatusEvent),
}
MAX_BACKOFF_S = 5.0


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        poll_interval_s: float,
        batch_size: int,
        fast_path: bool = True,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._fast_path = fast_path
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Called after a commit: publish now rather than at the next poll (unless the fast path is off,
        OUTBOX_FAST_PATH=false, which tests use to leave a committed order unpublished)."""
        if self._fast_path:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain_once(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await repository.claim_unpublished(conn, self._batch_size)
            for row in rows:
                spec, model = PAYLOADS[row.topic]
                payload = model.model_validate(row.payload)
                with structlog.contextvars.bound_contextvars(
                    orderId=row.key, correlationId=row.correlation_id
                ):
                    await self._publisher.send(spec, payload_key(row), payload, row.correlation_id)
                    logger.debug("outbox.sent", topic=row.topic, outbox_id=row.id)
            if rows:
                await repository.mark_published(conn, [row.id for row in rows])
        return len(rows)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            self._wake.clear()
            try:
                published = await self.drain_once()
            except (KafkaError, TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("outbox.publish_failed", error=repr(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            except Exception as exc:  # the relay must outlive any one bad batch; say so loudly and go on
                logger.error("outbox.relay_error", error=repr(exc), exc_info=exc)
                await asyncio.sleep(MAX_BACKOFF_S)
                continue
            backoff = 0.1
            if published:
                logger.debug("outbox.published", rows=published)
            if published >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)


def payload_key(row: repository.OutboxRow) -> UUID:
    return UUID(row.key)
