"""The orders' rows: reading them, and applying many orders' steps in one statement.

A stage reads the order, builds the next StatusEvent from it (seq + 1), and applies it with a conditional
UPDATE on (id, seq): exactly one writer wins each step, so a redelivered Kafka message or a second consumer
can never add a second event with a new seq. Postgres is the source of truth. The same statement writes the
event, and the command for the next stage if any, to the outbox (`shared/messaging/outbox.py`): they reach
Kafka after the commit, in seq order, even if the writer dies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from shared.domain.events import Dex, StatusEvent, Wire
from shared.domain.order import OrderRecord
from shared.messaging.outbox import Message, OutboxRow, message_arrays
from shared.messaging.topics import TopicSpec
from shared.store.batching import Flushed

# The open orders' partial index (migration 011) has this predicate; a query must repeat it to use it.
OPEN_ORDER_SQL = "status NOT IN ('confirmed', 'failed', 'cancelled')"


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
