"""The order's state machine and its projection in Postgres, shared by every stage that advances an order.

A stage reads the order, builds the next StatusEvent from it (seq + 1), and applies it with a conditional
UPDATE on (id, seq): exactly one writer wins each step, so a redelivered Kafka message or a second consumer
can never add a second event with a new seq. Postgres is the source of truth. The same statement writes the
event, and the command for the next stage if any, to the outbox (`shared/outbox.py`): they reach Kafka after
the commit, in seq order, even if the writer dies. Transitions are group-committed (`shared/batching.py`):
the concurrent steps of one process share one statement.

The retry loop: a retriable failure in routing, building or submitted sends the order back to `pending`
with `attempt` = the attempt to come, `nextRetryAt` = when it will be routed again, and the error that caused
it (`error`, `failureReason` on that event only: the row's columns keep them for the final failure). The
order is then put on the fixed-delay retry topic for that attempt (2 s, 4 s, 8 s), whose consumer routes it
again when it falls due. Once MAX_RETRIES attempts have failed, the order fails with the last error and goes
to `orders.dlq` with every error it met.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer

from shared.batching import Flushed, GroupCommit
from shared.config import Settings
from shared.errors import EngineError, InvalidTransition, OrderTimedOut
from shared.events import (
    AttemptError,
    DeadLetter,
    Dex,
    OrderStatus,
    Quote,
    RetryOrder,
    StatusEvent,
    Wire,
    utcnow,
)
from shared.logging import get_logger
from shared.metrics import END_TO_END_SECONDS, ORDER_FAILURES, ORDER_RETRIES, ORDERS_FINISHED
from shared.outbox import Message, Outbox, OutboxRow, message_arrays
from shared.topics import ORDER_STATUS, ORDERS_DLQ, ORDERS_RETRY, TopicSpec

logger = get_logger(__name__)

S = OrderStatus
# Back to PENDING is the retry loop: a retriable failure schedules the next attempt. CANCELLED is reachable
# only before SUBMITTED: the swap starts only once the (conditional) step to SUBMITTED has committed, so a
# cancel that commits first makes that step, and so the swap, never happen.
BEFORE_SUBMISSION = frozenset({S.PENDING, S.ROUTING, S.BUILDING})
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.ROUTING, S.FAILED, S.CANCELLED}),
    S.ROUTING: frozenset({S.BUILDING, S.PENDING, S.FAILED, S.CANCELLED}),
    S.BUILDING: frozenset({S.SUBMITTED, S.PENDING, S.FAILED, S.CANCELLED}),
    S.SUBMITTED: frozenset({S.CONFIRMED, S.PENDING, S.FAILED}),
    S.CONFIRMED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
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
    latest: StatusEvent | None = None
    """The latest event when the writer knows it already (after its own step); else read from `logs`."""

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
        return self.latest if self.latest is not None else StatusEvent.model_validate(self.logs[-1])

    def advanced(self, event: StatusEvent) -> OrderRecord:
        """This order once `event` is applied (what the conditional UPDATE wrote, without reading it back)."""
        failed = event.status is OrderStatus.FAILED
        return replace(
            self,
            status=event.status,
            seq=event.seq,
            attempt=event.attempt,
            dex_used=event.dex or self.dex_used,
            quotes={**self.quotes, **(event.quotes or {})},
            tx_hash=event.tx_hash or self.tx_hash,
            executed_price=event.executed_price if event.executed_price is not None else self.executed_price,
            amount_out=event.amount_out if event.amount_out is not None else self.amount_out,
            failure_reason=(event.failure_reason or self.failure_reason) if failed else None,
            error=(event.error or self.error) if failed else None,
            logs=[],
            latest=event,
            updated_at=event.at,
        )

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
    """The whole order, every event in `logs` included (what GET and the dead-letter path need)."""
    row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    return OrderRecord.from_row(row) if row is not None else None


# What a stage needs to take a step: everything but the event history, of which only the latest event.
STAGE_COLUMNS = (
    "id, type, token_in, token_out, amount_in, slippage, status, seq, attempt, dex_used, raydium_quote,"
    " meteora_quote, executed_price, amount_out, tx_hash, failure_reason, error,"
    " jsonb_build_array(logs -> -1) AS logs, correlation_id, client_order_id, created_at, updated_at"
)


async def load_orders(
    conn: asyncpg.Pool | asyncpg.Connection, ids: Sequence[UUID]
) -> dict[UUID, OrderRecord]:
    rows = await conn.fetch(f"SELECT {STAGE_COLUMNS} FROM orders WHERE id = ANY($1::uuid[])", list(ids))
    return {row["id"]: OrderRecord.from_row(row) for row in rows}


@dataclass(frozen=True)
class Transition:
    """One step of one order: the event that moves it from `order.seq` to seq + 1, and the messages that go
    out with it (its status event first, then any command for the next stage)."""

    order: OrderRecord
    event: StatusEvent
    messages: tuple[Message, ...]


def message(topic: TopicSpec, order: OrderRecord, payload: Wire) -> Message:
    return Message(topic, order.id, payload.to_json(), order.correlation_id)


WRITE_TRANSITIONS = """
WITH e AS (
    SELECT * FROM unnest($1::int[], $2::uuid[], $3::int[], $4::text[], $5::int[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::numeric[], $11::numeric[], $12::text[], $13::text[],
                         $14::text[])
        AS e(n, id, seq, status, attempt, dex, rq, mq, tx, price, amount_out, reason, error, event)
), upd AS (
    UPDATE orders o SET
        status = e.status::order_status, seq = e.seq, attempt = e.attempt,
        dex_used = COALESCE(e.dex, o.dex_used),
        raydium_quote = COALESCE(e.rq::jsonb, o.raydium_quote),
        meteora_quote = COALESCE(e.mq::jsonb, o.meteora_quote),
        tx_hash = COALESCE(e.tx, o.tx_hash),
        executed_price = COALESCE(e.price, o.executed_price),
        amount_out = COALESCE(e.amount_out, o.amount_out),
        failure_reason = CASE WHEN e.status = 'failed' THEN COALESCE(e.reason, o.failure_reason) END,
        error = CASE WHEN e.status = 'failed' THEN COALESCE(e.error, o.error) END,
        logs = (CASE WHEN jsonb_array_length(o.logs) >= $15 THEN o.logs - 0 ELSE o.logs END)
               || jsonb_build_array(e.event::jsonb),
        updated_at = now()
    FROM e WHERE o.id = e.id AND o.seq = e.seq - 1
    RETURNING e.n, o.id
), m AS (
    SELECT * FROM unnest($16::int[], $17::text[], $18::text[], $19::text[], $20::text[]) WITH ORDINALITY
        AS m(n, topic, key, payload, correlation_id, pos)
), ins AS (
    INSERT INTO outbox (topic, key, payload, correlation_id)
    SELECT m.topic, m.key, m.payload, m.correlation_id FROM m JOIN upd ON upd.n = m.n ORDER BY m.pos
    RETURNING id, topic, key, payload, correlation_id
)
SELECT upd.n AS applied, NULL::bigint AS id, NULL::text AS topic, NULL::text AS key, NULL::text AS payload,
       NULL::text AS correlation_id FROM upd
UNION ALL SELECT NULL, id, topic, key, payload, correlation_id FROM ins
UNION ALL SELECT NULL, id, topic, key, payload, correlation_id FROM outbox
    WHERE topic = 'order.status' AND key IN (SELECT id::text FROM upd)
"""


def _quote_json(event: StatusEvent, dex: Dex) -> str | None:
    quote = (event.quotes or {}).get(dex)
    return quote.to_json().decode() if quote is not None else None


async def write_transitions(
    conn: asyncpg.Connection, transitions: Sequence[Transition], *, logs_max: int
) -> Flushed[OrderRecord | None]:
    """Apply each transition whose order is still at its seq, with its outbox rows, in one statement.
    Returns the updated order (None where another writer took the step first) and the rows to publish: the
    statement's own and any older events of the same orders still unpublished (sent first: `order.status`
    stays in seq order even when an earlier writer's send failed)."""
    events = [t.event for t in transitions]
    messages = [(n, m) for n, t in enumerate(transitions) for m in t.messages]
    records = await conn.fetch(
        WRITE_TRANSITIONS,
        list(range(len(events))),
        [e.order_id for e in events],
        [e.seq for e in events],
        [e.status.value for e in events],
        [e.attempt for e in events],
        [e.dex.value if e.dex else None for e in events],
        [_quote_json(e, Dex.RAYDIUM) for e in events],
        [_quote_json(e, Dex.METEORA) for e in events],
        [e.tx_hash for e in events],
        [e.executed_price for e in events],
        [e.amount_out for e in events],
        [e.failure_reason for e in events],
        [e.error for e in events],
        [t.messages[0].payload.decode() for t in transitions],
        logs_max,
        [n for n, _ in messages],
        *message_arrays([m for _, m in messages]),
    )
    applied = {r["applied"] for r in records if r["applied"] is not None}
    rows = sorted((OutboxRow.from_record(r) for r in records if r["id"] is not None), key=lambda r: r.id)
    results = [t.order.advanced(t.event) if n in applied else None for n, t in enumerate(transitions)]
    return Flushed(results, rows)


class OrderSteps:
    """Advances orders one step at a time: a conditional UPDATE whose event (and command, if any) leaves
    through the outbox. Concurrent steps share one statement (group commit)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        writer: GroupCommit[Transition, OrderRecord | None],
        outbox: Outbox,
        *,
        max_attempts: int,
        deadline_ms: int = 30_000,
    ) -> None:
        self._pool = pool
        self._writer = writer
        self.outbox = outbox
        self._max_attempts = max_attempts
        self.deadline_ms = deadline_ms

    async def load(self, order_id: UUID) -> OrderRecord | None:
        return (await self.load_many([order_id])).get(order_id)

    async def load_many(self, order_ids: Sequence[UUID]) -> dict[UUID, OrderRecord]:
        return await load_orders(self._pool, order_ids)

    def overdue(self, order: OrderRecord) -> bool:
        return utcnow() >= order.deadline(self.deadline_ms)

    def transition(
        self, order: OrderRecord, status: OrderStatus, *commands: tuple[TopicSpec, Wire], **fields: Any
    ) -> Transition:
        event = order.next_event(status, max_attempts=self._max_attempts, **fields)
        messages = (message(ORDER_STATUS, order, event), *(message(t, order, p) for t, p in commands))
        return Transition(order, event, messages)

    async def apply(self, transition: Transition) -> OrderRecord | None:
        """Write one transition (batched with whatever else this process is writing); None if another writer
        moved the order first."""
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

    async def advance(
        self, order: OrderRecord, status: OrderStatus, *commands: tuple[TopicSpec, Wire], **fields: Any
    ) -> OrderRecord | None:
        """Move `order` to `status` (its event and `commands` go out after the commit); None if another
        writer moved it first."""
        return await self.apply(self.transition(order, status, *commands, **fields))

    async def fail(self, order: OrderRecord, error: EngineError) -> OrderRecord | None:
        """A terminal failure, not retried."""
        return await self.advance(order, S.FAILED, failure_reason=error.message, error=error.code)

    async def time_out(self, order: OrderRecord) -> OrderRecord | None:
        return await self.fail(order, OrderTimedOut())

    async def retry_or_fail(self, order: OrderRecord, error: EngineError) -> OrderRecord | None:
        """Route on the error: retriable with attempts left → back to pending with the order on its retry
        topic; otherwise failed (and, when retries ran out, the order with its error history on the DLQ)."""
        attempt = max(order.attempt, 1)
        if not error.retriable:
            return await self.fail(order, error)
        if attempt >= self._max_attempts:
            return await self._dead_letter(order, error)
        delay_s, topic = retry_delay(attempt)
        due = utcnow() + timedelta(seconds=delay_s)
        command = RetryOrder(
            order_id=order.id,
            attempt=attempt + 1,
            due_at=due,
            created_at=order.created_at,
            error=error.code,
            correlation_id=order.correlation_id,
        )
        retried = await self.advance(
            order,
            S.PENDING,
            (topic, command),
            attempt=attempt + 1,
            next_retry_at=due,
            error=error.code,
            failure_reason=error.message,
        )
        if retried is not None:
            ORDER_RETRIES.labels(error.code).inc()
            logger.info("order.retry_scheduled", orderId=str(order.id), attempt=attempt + 1, error=error.code)
        return retried

    async def _dead_letter(self, order: OrderRecord, error: EngineError) -> OrderRecord | None:
        """Fail the order for good, with every error it met on `orders.dlq` (from its whole history)."""
        full = await load_order(self._pool, order.id)
        history = full.error_history() if full is not None else []
        transition = self.transition(order, S.FAILED, failure_reason=error.message, error=error.code)
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
            max_attempts=self._max_attempts,
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
        yield OrderSteps(
            pool, writer, outbox, max_attempts=settings.max_retries, deadline_ms=settings.order_deadline_ms
        )
    finally:
        await writer.stop()
