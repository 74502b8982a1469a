"""The order's state machine and its projection in Postgres, shared by every stage that advances an order.

A stage reads the order, builds the next StatusEvent from it (seq + 1), and applies it with a conditional
UPDATE on (id, seq): exactly one writer wins each step, so a redelivered Kafka message or a second consumer
can never add a second event with a new seq. Postgres is the source of truth; the stage publishes the event
to `order.status` only after the UPDATE commits, and republishes the latest event when it finds the step
already done (a crash between commit and publish then costs a duplicate, which consumers drop by seq).

The retry loop: a retriable failure in routing, building or submitted sends the order back to `pending`
with `attempt` = the attempt to come, `nextRetryAt` = when it will be routed again, and the error that caused
it (`error`, `failureReason` on that event only: the row's columns keep them for the final failure). The
order is then put on the fixed-delay retry topic for that attempt (2 s, 4 s, 8 s), whose consumer routes it
again when it falls due. Once MAX_RETRIES attempts have failed, the order fails with the last error and goes
to `orders.dlq` with every error it met.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from shared.errors import EngineError, InvalidTransition, OrderTimedOut
from shared.events import (
    AttemptError,
    DeadLetter,
    Dex,
    OrderPlaced,
    OrderStatus,
    Quote,
    RetryOrder,
    StatusEvent,
    utcnow,
)
from shared.kafka import Publisher
from shared.logging import get_logger
from shared.metrics import END_TO_END_SECONDS, ORDER_FAILURES, ORDER_RETRIES, ORDERS_FINISHED
from shared.topics import ORDERS, ORDERS_DLQ, ORDERS_RETRY, TopicSpec

logger = get_logger(__name__)

S = OrderStatus
# Back to PENDING is the retry loop: a retriable failure schedules the next attempt.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.ROUTING, S.FAILED}),
    S.ROUTING: frozenset({S.BUILDING, S.PENDING, S.FAILED}),
    S.BUILDING: frozenset({S.SUBMITTED, S.PENDING, S.FAILED}),
    S.SUBMITTED: frozenset({S.CONFIRMED, S.PENDING, S.FAILED}),
    S.CONFIRMED: frozenset(),
    S.FAILED: frozenset(),
}

# Retry n (after attempt n failed) waits RETRY_DELAYS[n - 1]; the last one repeats if MAX_RETRIES > 4.
RETRY_DELAYS: tuple[tuple[float, TopicSpec], ...] = tuple(zip((2.0, 4.0, 8.0), ORDERS_RETRY, strict=True))


def retry_delay(failed_attempt: int) -> tuple[float, TopicSpec]:
    return RETRY_DELAYS[min(failed_attempt, len(RETRY_DELAYS)) - 1]


def check_transition(current: OrderStatus, target: OrderStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current.value, target.value)


@dataclass(frozen=True)
class OrderRecord:
    """One row of `orders`."""

    id: UUID
    type: str
    token_in: str
    token_out: str
    amount_in: Decimal
    slippage: Decimal
    status: OrderStatus
    seq: int
    attempt: int
    dex_used: Dex | None
    quotes: dict[Dex, Quote]
    executed_price: Decimal | None
    amount_out: Decimal | None
    tx_hash: str | None
    failure_reason: str | None
    error: str | None
    logs: list[dict[str, Any]]
    correlation_id: str | None
    client_order_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> OrderRecord:
        quotes = {
            dex: Quote.model_validate(row[f"{dex.value}_quote"])
            for dex in Dex
            if row[f"{dex.value}_quote"] is not None
        }
        return cls(
            id=row["id"],
            type=row["type"],
            token_in=row["token_in"],
            token_out=row["token_out"],
            amount_in=row["amount_in"],
            slippage=row["slippage"],
            status=OrderStatus(row["status"]),
            seq=row["seq"],
            attempt=row["attempt"],
            dex_used=Dex(row["dex_used"]) if row["dex_used"] else None,
            quotes=quotes,
            executed_price=row["executed_price"],
            amount_out=row["amount_out"],
            tx_hash=row["tx_hash"],
            failure_reason=row["failure_reason"],
            error=row["error"],
            logs=row["logs"],
            correlation_id=row["correlation_id"],
            client_order_id=row["client_order_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def deadline(self, deadline_ms: int) -> datetime:
        return self.created_at + timedelta(milliseconds=deadline_ms)

    def error_history(self) -> list[AttemptError]:
        """Every error this order met, one per failed attempt (from its events)."""
        history = []
        for event in (StatusEvent.model_validate(entry) for entry in self.logs):
            if event.error is None or event.status not in (S.PENDING, S.FAILED):
                continue
            # a retry event carries the attempt to come; the error is the previous attempt's
            failed = event.attempt - 1 if event.status is S.PENDING else event.attempt
            history.append(
                AttemptError(
                    attempt=failed, error=event.error, failure_reason=event.failure_reason, at=event.at
                )
            )
        return history

    def latest_event(self) -> StatusEvent:
        """The event with this order's current seq (the last one in `logs`)."""
        return StatusEvent.model_validate(self.logs[-1])

    def next_event(self, status: OrderStatus, *, max_attempts: int, **fields: Any) -> StatusEvent:
        """The event that moves this order to `status`, numbered seq + 1."""
        check_transition(self.status, status)
        return StatusEvent(
            order_id=self.id,
            seq=self.seq + 1,
            status=status,
            at=utcnow(),
            attempt=fields.pop("attempt", self.attempt),
            max_attempts=max_attempts,
            correlation_id=self.correlation_id,
            **fields,
        )


async def load_order(conn: asyncpg.Pool | asyncpg.Connection, order_id: UUID) -> OrderRecord | None:
    row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    return OrderRecord.from_row(row) if row is not None else None


async def apply_event(
    conn: asyncpg.Pool | asyncpg.Connection, event: StatusEvent, *, logs_max: int
) -> OrderRecord | None:
    """Record `event` if the order is still at seq - 1; returns the updated order, or None if another
    writer got there first (the caller then treats its message as already handled)."""
    quotes = event.quotes or {}
    row = await conn.fetchrow(
        """
        UPDATE orders SET
            status = $3, seq = $2, attempt = $4,
            dex_used = COALESCE($5, dex_used),
            raydium_quote = COALESCE($6, raydium_quote),
            meteora_quote = COALESCE($7, meteora_quote),
            tx_hash = COALESCE($8, tx_hash),
            executed_price = COALESCE($9, executed_price),
            amount_out = COALESCE($10, amount_out),
            failure_reason = CASE WHEN $15 THEN COALESCE($11, failure_reason) ELSE NULL END,
            error = CASE WHEN $15 THEN COALESCE($12, error) ELSE NULL END,
            logs = (CASE WHEN jsonb_array_length(logs) >= $14 THEN logs - 0 ELSE logs END)
                   || jsonb_build_array($13::jsonb),
            updated_at = now()
        WHERE id = $1 AND seq = $2 - 1
        RETURNING *
        """,
        event.order_id,
        event.seq,
        event.status.value,
        event.attempt,
        event.dex.value if event.dex else None,
        quotes[Dex.RAYDIUM].to_dict() if Dex.RAYDIUM in quotes else None,
        quotes[Dex.METEORA].to_dict() if Dex.METEORA in quotes else None,
        event.tx_hash,
        event.executed_price,
        event.amount_out,
        event.failure_reason,
        event.error,
        event.to_dict(),
        logs_max,
        event.status is OrderStatus.FAILED,  # the row keeps an error only once the order has failed
    )
    return OrderRecord.from_row(row) if row is not None else None


async def mark_published(conn: asyncpg.Pool | asyncpg.Connection, order_id: UUID, seq: int) -> None:
    """Events up to `seq` are on `order.status` (what the sweep for unpublished events goes by)."""
    await conn.execute(
        "UPDATE orders SET published_seq = $2 WHERE id = $1 AND published_seq < $2", order_id, seq
    )


class OrderSteps:
    """Advances orders one step at a time: conditional UPDATE first, then the event on `order.status`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        max_attempts: int,
        logs_max: int,
        deadline_ms: int = 30_000,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._max_attempts = max_attempts
        self._logs_max = logs_max
        self.deadline_ms = deadline_ms

    async def load(self, order_id: UUID) -> OrderRecord | None:
        return await load_order(self._pool, order_id)

    def overdue(self, order: OrderRecord) -> bool:
        return utcnow() >= order.deadline(self.deadline_ms)

    async def advance(self, order: OrderRecord, status: OrderStatus, **fields: Any) -> OrderRecord | None:
        """Move `order` to `status` and publish the event; None if another writer moved it first."""
        updated = await self.record(order, status, **fields)
        if updated is not None:
            await self.announce(updated)
        return updated

    async def record(self, order: OrderRecord, status: OrderStatus, **fields: Any) -> OrderRecord | None:
        """The durable half of `advance`: the conditional UPDATE alone. The caller `announce`s the result
        (if it dies first, the sweep for unpublished events does)."""
        event = order.next_event(status, max_attempts=self._max_attempts, **fields)
        updated = await apply_event(self._pool, event, logs_max=self._logs_max)
        if updated is None:
            logger.info("order.step_taken_elsewhere", orderId=str(order.id), status=status.value)
            return None
        logger.info(
            "order.step",
            status=status.value,
            seq=event.seq,
            attempt=event.attempt,
            dex=event.dex.value if event.dex else None,
            error=event.error,
            duration_ms=round((event.at - order.updated_at).total_seconds() * 1000, 1),
        )
        return updated

    async def announce(self, order: OrderRecord) -> None:
        """Publish the event `record` just wrote (the order's latest) and mark it published."""
        event = order.latest_event()
        await self._publisher.status(event)
        await mark_published(self._pool, event.order_id, event.seq)
        if event.status.terminal:
            ORDERS_FINISHED.labels(event.status.value).inc()
            END_TO_END_SECONDS.labels(event.status.value).observe(
                (event.at - order.created_at).total_seconds()
            )
            if event.status is OrderStatus.FAILED:
                ORDER_FAILURES.labels(event.error or "unknown").inc()

    async def fail(self, order: OrderRecord, error: EngineError) -> OrderRecord | None:
        """A terminal failure, not retried."""
        return await self.advance(order, S.FAILED, failure_reason=error.message, error=error.code)

    async def time_out(self, order: OrderRecord) -> OrderRecord | None:
        return await self.fail(order, OrderTimedOut())

    async def retry_or_fail(self, order: OrderRecord, error: EngineError) -> OrderRecord | None:
        """Route on the error: retriable with attempts left → back to pending and onto the retry topic;
        otherwise failed (and, when retries ran out, the order with its error history on the DLQ)."""
        attempt = max(order.attempt, 1)
        if not error.retriable:
            return await self.fail(order, error)
        if attempt >= self._max_attempts:
            failed = await self.fail(order, error)
            if failed is not None:
                await self._dead_letter(failed)
            return failed
        delay_s, topic = retry_delay(attempt)
        due = utcnow() + timedelta(seconds=delay_s)
        retried = await self.advance(
            order,
            S.PENDING,
            attempt=attempt + 1,
            next_retry_at=due,
            error=error.code,
            failure_reason=error.message,
        )
        if retried is None:
            return None
        ORDER_RETRIES.labels(error.code).inc()
        logger.info("order.retry_scheduled", orderId=str(order.id), attempt=attempt + 1, error=error.code)
        command = RetryOrder(
            order_id=order.id,
            attempt=attempt + 1,
            due_at=due,
            created_at=order.created_at,
            error=error.code,
            correlation_id=order.correlation_id,
        )
        await self._publisher.send(topic, order.id, command, order.correlation_id)
        return retried

    async def _dead_letter(self, order: OrderRecord) -> None:
        latest = order.latest_event()
        letter = DeadLetter(
            order_id=order.id,
            token_in=order.token_in,
            token_out=order.token_out,
            amount_in=order.amount_in,
            slippage=order.slippage,
            attempts=max(order.attempt, 1),
            max_attempts=self._max_attempts,
            error=latest.error or "unknown",
            failure_reason=latest.failure_reason,
            errors=order.error_history(),
            created_at=order.created_at,
            failed_at=latest.at,
            correlation_id=order.correlation_id,
        )
        await self._publisher.send(ORDERS_DLQ, order.id, letter, order.correlation_id)

    async def redrive(self, order: OrderRecord) -> None:
        """Put an order that made no progress back on `orders`: the router resumes it from its current step
        (pending, routing or building); every step it repeats is a no-op if already done."""
        placed = OrderPlaced(
            order_id=order.id,
            token_in=order.token_in,
            token_out=order.token_out,
            amount_in=order.amount_in,
            slippage=order.slippage,
            created_at=order.created_at,
            correlation_id=order.correlation_id,
        )
        await self._publisher.send(ORDERS, order.id, placed, order.correlation_id)

    async def republish_latest(self, order: OrderRecord) -> None:
        """On a redelivered message: the previous run may have committed its step but died before
        publishing it. Publishing the latest event again is harmless (consumers drop seq they have seen)."""
        await self.publish_from(order, order.seq - 1)

    async def publish_from(self, order: OrderRecord, published_seq: int) -> None:
        """Publish the order's events above `published_seq`, in order (from its logs), and record it."""
        for entry in order.logs:
            if entry["seq"] > published_seq:
                await self._publisher.status(StatusEvent.model_validate(entry))
        await mark_published(self._pool, order.id, order.seq)
