"""The order's state machine and its projection in Postgres, shared by every stage that advances an order.

A stage reads the order, builds the next StatusEvent from it (seq + 1), and applies it with a conditional
UPDATE on (id, seq): exactly one writer wins each step, so a redelivered Kafka message or a second consumer
can never add a second event with a new seq. Postgres is the source of truth; the stage publishes the event
to `order.status` only after the UPDATE commits, and republishes the latest event when it finds the step
already done (a crash between commit and publish then costs a duplicate, which consumers drop by seq).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from shared.errors import InvalidTransition
from shared.events import Dex, OrderStatus, Quote, StatusEvent, utcnow
from shared.kafka import Publisher
from shared.logging import get_logger
from shared.metrics import END_TO_END_SECONDS, ORDER_FAILURES, ORDERS_FINISHED

logger = get_logger(__name__)

S = OrderStatus
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.ROUTING, S.FAILED}),
    S.ROUTING: frozenset({S.BUILDING, S.FAILED}),
    S.BUILDING: frozenset({S.SUBMITTED, S.FAILED}),
    S.SUBMITTED: frozenset({S.CONFIRMED, S.FAILED}),
    S.CONFIRMED: frozenset(),
    S.FAILED: frozenset(),
}


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
            failure_reason = COALESCE($11, failure_reason),
            error = COALESCE($12, error),
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
    )
    return OrderRecord.from_row(row) if row is not None else None


class OrderSteps:
    """Advances orders one step at a time: conditional UPDATE first, then the event on `order.status`."""

    def __init__(self, pool: asyncpg.Pool, publisher: Publisher, *, max_attempts: int, logs_max: int) -> None:
        self._pool = pool
        self._publisher = publisher
        self._max_attempts = max_attempts
        self._logs_max = logs_max

    async def load(self, order_id: UUID) -> OrderRecord | None:
        return await load_order(self._pool, order_id)

    async def advance(self, order: OrderRecord, status: OrderStatus, **fields: Any) -> OrderRecord | None:
        """Move `order` to `status` and publish the event; None if another writer moved it first."""
        event = order.next_event(status, max_attempts=self._max_attempts, **fields)
        updated = await apply_event(self._pool, event, logs_max=self._logs_max)
        if updated is None:
            logger.info("order.step_taken_elsewhere", order_id=str(order.id), status=status.value)
            return None
        await self._publisher.status(event)
        if status.terminal:
            ORDERS_FINISHED.labels(status.value).inc()
            END_TO_END_SECONDS.labels(status.value).observe((event.at - order.created_at).total_seconds())
            if status is OrderStatus.FAILED:
                ORDER_FAILURES.labels(event.error or "unknown").inc()
        return updated

    async def republish_latest(self, order: OrderRecord) -> None:
        """On a redelivered message: the previous run may have committed its step but died before
        publishing it. Publishing the latest event again is harmless (consumers drop seq they have seen)."""
        await self._publisher.status(order.latest_event())
