"""OrderSteps: how every service moves an order one step, and the retry loop.

Transitions are group-committed (`shared/store/batching.py`): the concurrent steps of one process share one
statement (`shared/store/orders.py`), and their events leave through the process's outbox.

The retry loop: a retriable failure in routing, building or submitted sends the order back to `pending`
with `attempt` = the attempt to come, `nextRetryAt` = when it will be routed again, and the error that caused
it (`error`, `failureReason` on that event only: the row's columns keep them for the final failure). The
order is then put on the fixed-delay retry topic for that attempt (2 s, 4 s, 8 s), whose consumer routes it
again when it falls due. Once MAX_RETRIES attempts have failed, the order fails with the last error and goes
to `orders.dlq` with every error it met."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer

from shared.domain.errors import EngineError
from shared.domain.events import (
    AttemptError,
    DeadLetter,
    Dex,
    ExecuteOrder,
    Quote,
    RetryOrder,
    StatusEvent,
    Wire,
)
from shared.domain.order import OrderRecord, SwapResult
from shared.domain.rules import RETRY_DELAYS_S, AfterFailure, OrderRules, retry_index
from shared.domain.status import OrderStatus
from shared.messaging.outbox import Outbox
from shared.messaging.topics import ORDER_STATUS, ORDERS_DLQ, ORDERS_EXECUTE, ORDERS_RETRY, TopicSpec
from shared.runtime.clock import utcnow
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger
from shared.runtime.metrics import END_TO_END_SECONDS, ORDER_FAILURES, ORDER_RETRIES, ORDERS_FINISHED
from shared.store.batching import GroupCommit
from shared.store.orders import Transition, load_order, load_orders, message, write_transitions

logger = get_logger(__name__)

# The retry topic of each fixed delay: retry n waits RETRY_DELAYS_S[n - 1] on ORDERS_RETRY[n - 1].
RETRY_DELAYS: tuple[tuple[float, TopicSpec], ...] = tuple(zip(RETRY_DELAYS_S, ORDERS_RETRY, strict=True))


def retry_delay(failed_attempt: int) -> tuple[float, TopicSpec]:
    return RETRY_DELAYS[retry_index(failed_attempt)]


class OrderSteps:
    """Advances orders one step at a time: a conditional UPDATE whose event (and command, if any) leaves
    through the outbox. Concurrent steps share one statement (group commit). Each method returns the order
    after its step, or None if another writer moved the order first."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        writer: GroupCommit[Transition, OrderRecord | None],
        outbox: Outbox,
        rules: OrderRules,
    ) -> None:
        self._pool = pool
        self._writer = writer
        self.outbox = outbox
        self.rules = rules

    @property
    def deadline_ms(self) -> int:
        return self.rules.deadline_ms

    async def load(self, order_id: UUID) -> OrderRecord | None:
        return (await self.load_many([order_id])).get(order_id)

    async def load_many(self, order_ids: Sequence[UUID]) -> dict[UUID, OrderRecord]:
        return await load_orders(self._pool, order_ids)

    def overdue(self, order: OrderRecord) -> bool:
        return self.rules.overdue(order)

    async def start_routing(self, order: OrderRecord) -> OrderRecord | None:
        return await self.step(order, self.rules.start_routing(order))

    async def route(
        self, order: OrderRecord, best: Quote, quotes: dict[Dex, Quote], command: ExecuteOrder
    ) -> OrderRecord | None:
        """Routed to `best`; `command` tells the executor to swap it."""
        return await self.step(order, self.rules.route(order, best, quotes), (ORDERS_EXECUTE, command))

    async def submit(self, order: OrderRecord) -> OrderRecord | None:
        return await self.step(order, self.rules.submit(order))

    async def confirm(self, order: OrderRecord, swap: SwapResult) -> OrderRecord | None:
        return await self.step(order, self.rules.confirm(order, swap))

    async def fail(self, order: OrderRecord, error: EngineError) -> OrderRecord | None:
        """A terminal failure, not retried."""
        return await self.step(order, self.rules.fail(order, error))

    async def time_out(self, order: OrderRecord) -> OrderRecord | None:
        return await self.step(order, self.rules.time_out(order))

    async def cancel(self, order: OrderRecord) -> OrderRecord | None:
        return await self.step(order, self.rules.cancel(order))

    async def retry_or_fail(self, order: OrderRecord, error: EngineError) -> OrderRecord | None:
        """Route on the error: retriable with attempts left → back to pending with the order on its retry
        topic; otherwise failed (and, when retries ran out, the order with its error history on the DLQ)."""
        match self.rules.after_failure(order, error):
            case AfterFailure.FAIL:
                return await self.fail(order, error)
            case AfterFailure.DEAD_LETTER:
                return await self._dead_letter(order, error)
        delay_s, topic = retry_delay(max(order.attempt, 1))
        event = self.rules.retry(order, error, utcnow() + timedelta(seconds=delay_s))
        assert event.next_retry_at is not None
        command = RetryOrder(
            order_id=order.id,
            attempt=event.attempt,
            due_at=event.next_retry_at,
            created_at=order.created_at,
            error=error.code,
            correlation_id=order.correlation_id,
        )
        retried = await self.step(order, event, (topic, command))
        if retried is not None:
            ORDER_RETRIES.labels(error.code).inc()
            logger.info(
                "order.retry_scheduled", orderId=str(order.id), attempt=event.attempt, error=error.code
            )
        return retried

    def transition(
        self, order: OrderRecord, event: StatusEvent, *commands: tuple[TopicSpec, Wire]
    ) -> Transition:
        """`event` with its messages: the event on `order.status` first, then any `commands`."""
        messages = (message(ORDER_STATUS, order, event), *(message(t, order, p) for t, p in commands))
        return Transition(order, event, messages)

    async def step(
        self, order: OrderRecord, event: StatusEvent, *commands: tuple[TopicSpec, Wire]
    ) -> OrderRecord | None:
        """Write `event` (from `rules`, or `order.next_event`) and `commands` after it."""
        return await self.apply(self.transition(order, event, *commands))

    async def apply(self, transition: Transition) -> OrderRecord | None:
        """Write one transition (batched with whatever else this process is writing)."""
        updated = await self._writer.submit(transition)
        event = transition.event
        if updated is None:
            logger.info("order.step_taken_elsewhere", orderId=str(event.order_id), status=event.status.value)
            return None
        logger.info(
            "order.step",
            orderId=str(event.order_id),
            status=event.status.value,
            seq=event.seq,
            attempt=event.attempt,
            dex=event.dex.value if event.dex else None,
            error=event.error,
            duration_ms=round((event.at - transition.order.updated_at).total_seconds() * 1000, 1),
        )
        if event.status.terminal:
            ORDERS_FINISHED.labels(event.status.value).inc()
            END_TO_END_SECONDS.labels(event.status.value).observe(
                (event.at - updated.created_at).total_seconds()
            )
            if event.status is OrderStatus.FAILED:
                ORDER_FAILURES.labels(event.error or "unknown").inc()
        return updated

    async def _dead_letter(self, order: OrderRecord, error: EngineError) -> OrderRecord | None:
        """Fail the order for good, with every error it met on `orders.dlq` (from its whole history)."""
        full = await load_order(self._pool, order.id)
        history = full.error_history() if full is not None else []
        transition = self.transition(order, self.rules.fail(order, error))
        failed = transition.event
        last = AttemptError(
            attempt=failed.attempt, error=error.code, failure_reason=error.message, at=failed.at
        )
        letter = DeadLetter(
            order_id=order.id,
            token_in=order.token_in,
            token_out=order.token_out,
            amount_in=order.amount_in,
            slippage=order.slippage,
            attempts=max(order.attempt, 1),
            max_attempts=self.rules.max_attempts,
            error=error.code,
            failure_reason=error.message,
            errors=[*history, last],
            created_at=order.created_at,
            failed_at=failed.at,
            correlation_id=order.correlation_id,
        )
        transition = Transition(order, failed, (*transition.messages, message(ORDERS_DLQ, order, letter)))
        return await self.apply(transition)


@asynccontextmanager
async def order_steps(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, settings: Settings
) -> AsyncIterator[OrderSteps]:
    """The process's outbox and transition writer, running, and the OrderSteps over them."""
    outbox = Outbox(pool, producer, settings)
    outbox.start()
    try:
        async with steps_through(pool, outbox, settings) as steps:
            yield steps
    finally:
        await outbox.stop()


@asynccontextmanager
async def steps_through(pool: asyncpg.Pool, outbox: Outbox, settings: Settings) -> AsyncIterator[OrderSteps]:
    """A transition writer over an outbox the caller runs (ingress shares its own), and the OrderSteps."""
    writer: GroupCommit[Transition, OrderRecord | None] = GroupCommit(
        pool, outbox, partial(write_transitions, logs_max=settings.order_logs_max), name="transitions"
    )
    writer.start()
    try:
        yield OrderSteps(pool, writer, outbox, OrderRules(settings.max_retries, settings.order_deadline_ms))
    finally:
        await writer.stop()
