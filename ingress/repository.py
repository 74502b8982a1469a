"""All of ingress's SQL: new orders (with their outbox rows, group-committed) and the idempotency check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from shared.batching import Flushed
from shared.events import OrderPlaced, StatusEvent
from shared.outbox import Message, OutboxRow, message_arrays
from shared.topics import ORDER_STATUS, ORDERS


@dataclass(frozen=True)
class NewOrder:
    placed: OrderPlaced
    pending: StatusEvent
    client_order_id: str | None

    def messages(self) -> tuple[Message, Message]:
        """The pending event first: rows go out in id order, so seq 1 is on `order.status` before the router
        can see the order and publish seq 2."""
        key, correlation_id = self.placed.order_id, self.placed.correlation_id
        return (
            Message(ORDER_STATUS, key, self.pending.to_json(), correlation_id),
            Message(ORDERS, key, self.placed.to_json(), correlation_id),
        )


INSERT_ORDERS = """
WITH o AS (
    INSERT INTO orders (id, type, token_in, token_out, amount_in, slippage, status, seq, logs, correlation_id,
                        client_order_id, created_at, updated_at)
    SELECT n.id, 'market', n.token_in, n.token_out, n.amount_in, n.slippage, 'pending', 1,
           jsonb_build_array(n.event::jsonb), n.correlation_id, n.client_order_id, n.at, n.at
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::text[], $7::text[],
                $8::text[], $9::timestamptz[])
        AS n(id, token_in, token_out, amount_in, slippage, event, correlation_id, client_order_id, at)
    RETURNING id
), m AS (
    SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::text[]) WITH ORDINALITY
        AS m(topic, key, payload, correlation_id, pos)
)
INSERT INTO outbox (topic, key, payload, correlation_id)
SELECT m.topic, m.key, m.payload, m.correlation_id FROM m WHERE m.key::uuid IN (SELECT id FROM o)
ORDER BY m.pos
RETURNING id, topic, key, payload, correlation_id
"""


async def insert_orders(conn: asyncpg.Connection, orders: Sequence[NewOrder]) -> Flushed[None]:
    """Every order of the batch at seq 1 (pending), with its two outbox rows, in one statement."""
    messages = [o.messages() for o in orders]
    records = await conn.fetch(
        INSERT_ORDERS,
        [o.placed.order_id for o in orders],
        [o.placed.token_in for o in orders],
        [o.placed.token_out for o in orders],
        [o.placed.amount_in for o in orders],
        [o.placed.slippage for o in orders],
        [pending.payload.decode() for pending, _ in messages],
        [o.placed.correlation_id for o in orders],
        [o.client_order_id for o in orders],
        [o.placed.created_at for o in orders],
        *message_arrays([m for pair in messages for m in pair]),
    )
    rows = sorted((OutboxRow.from_record(r) for r in records), key=lambda r: r.id)
    return Flushed([None] * len(orders), rows)


async def order_exists(conn: asyncpg.Connection | asyncpg.Pool, order_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1)", order_id))
