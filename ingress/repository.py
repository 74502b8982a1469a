"""All of ingress's SQL: new orders (with their outbox rows and Idempotency-Keys, group-committed), the
keys' replay lookup and their pruning, and a caller's own orders (listed, or one to cancel)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from shared.domain.events import OrderPlaced, StatusEvent
from shared.domain.order import OrderRecord
from shared.domain.status import OrderStatus
from shared.messaging.outbox import Message, OutboxRow, message_arrays
from shared.messaging.topics import ORDER_STATUS, ORDERS
from shared.store.batching import Flushed


@dataclass(frozen=True)
class KeyClaim:
    """An Idempotency-Key as the order's statement writes it: per client, hashed, with the body's
    fingerprint."""

    scope: str
    key_hash: bytes
    fingerprint: str


@dataclass(frozen=True)
class NewOrder:
    placed: OrderPlaced
    pending: StatusEvent
    client_order_id: str | None
    client: str  # who placed it: the principal's subject, else the client's IP (as the key is scoped)
    key: KeyClaim | None = None

    def messages(self) -> tuple[Message, Message]:
        """The pending event first: rows go out in id order, so seq 1 is on `order.status` before the router
        can see the order and publish seq 2."""
        key, correlation_id = self.placed.order_id, self.placed.correlation_id
        return (
            Message(ORDER_STATUS, key, self.pending.to_json(), correlation_id),
            Message(ORDERS, key, self.placed.to_json(), correlation_id),
        )


@dataclass(frozen=True)
class KeyHolder:
    """The order an Idempotency-Key already names (a live key: committed, not expired)."""

    order_id: UUID
    fingerprint: str
    client_order_id: str | None


@dataclass(frozen=True)
class Placement:
    """What writing a new order gave: placed, or not, with the order its key already names (None when
    that order expired and another took the key over between the write and the lookup: retry)."""

    placed: bool
    holder: KeyHolder | None = None


PLACED = Placement(placed=True)


# A key's row goes in with its order or not at all. A key held by a committed order blocks the new one (an
# in-flight holder is waited for by the unique index); an expired key is taken over in place.
INSERT_ORDERS = """
WITH n AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::text[],
                         $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::bytea[], $12::text[],
                         $18::text[])
        AS n(id, token_in, token_out, amount_in, slippage, event, correlation_id, client_order_id, at,
             scope, key_hash, fingerprint, client)
), k AS (
    INSERT INTO idempotency_keys AS held (scope, key_hash, fingerprint, order_id)
    SELECT n.scope, n.key_hash, n.fingerprint, n.id FROM n WHERE n.key_hash IS NOT NULL
    ON CONFLICT (scope, key_hash) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, order_id = EXCLUDED.order_id, created_at = now()
        WHERE held.created_at < now() - make_interval(secs => $17)
    RETURNING order_id
), o AS (
    INSERT INTO orders (id, type, token_in, token_out, amount_in, slippage, status, seq, logs, correlation_id,
                        client_order_id, created_at, updated_at, client)
    SELECT n.id, 'market', n.token_in, n.token_out, n.amount_in, n.slippage, 'pending', 1,
           jsonb_build_array(n.event::jsonb), n.correlation_id, n.client_order_id, n.at, n.at, n.client
    FROM n WHERE n.key_hash IS NULL OR n.id IN (SELECT order_id FROM k)
    RETURNING id
), m AS (
    SELECT * FROM unnest($13::text[], $14::text[], $15::text[], $16::text[]) WITH ORDINALITY
        AS m(topic, key, payload, correlation_id, pos)
)
INSERT INTO outbox (topic, key, payload, correlation_id)
SELECT m.topic, m.key, m.payload, m.correlation_id FROM m WHERE m.key::uuid IN (SELECT id FROM o)
ORDER BY m.pos
RETURNING id, topic, key, payload, correlation_id
"""

KEY_HOLDERS = """
SELECT k.scope, k.key_hash, k.fingerprint, k.order_id, o.client_order_id
FROM unnest($1::text[], $2::bytea[]) AS w(scope, key_hash)
JOIN idempotency_keys k USING (scope, key_hash)
LEFT JOIN orders o ON o.id = k.order_id
"""


async def insert_orders(
    conn: asyncpg.Connection, orders: Sequence[NewOrder], *, key_ttl_s: int
) -> Flushed[Placement]:
    """Every order of the batch at seq 1 (pending), with its two outbox rows and its key, in one statement;
    an order whose key is already held is not written, and gets the holder instead."""
    # One statement cannot write a key twice: a key's second order in the same batch waits for the first.
    firsts: dict[tuple[str, bytes], NewOrder] = {}
    batch = []
    for order in orders:
        if order.key is None:
            batch.append(order)
        elif (order.key.scope, order.key.key_hash) not in firsts:
            firsts[(order.key.scope, order.key.key_hash)] = order
            batch.append(order)
    messages = [o.messages() for o in batch]
    records = await conn.fetch(
        INSERT_ORDERS,
        [o.placed.order_id for o in batch],
        [o.placed.token_in for o in batch],
        [o.placed.token_out for o in batch],
        [o.placed.amount_in for o in batch],
        [o.placed.slippage for o in batch],
        [pending.payload.decode() for pending, _ in messages],
        [o.placed.correlation_id for o in batch],
        [o.client_order_id for o in batch],
        [o.placed.created_at for o in batch],
        [o.key.scope if o.key else None for o in batch],
        [o.key.key_hash if o.key else None for o in batch],
        [o.key.fingerprint if o.key else None for o in batch],
        *message_arrays([m for pair in messages for m in pair]),
        key_ttl_s,
        [o.client for o in batch],
    )
    rows = sorted((OutboxRow.from_record(r) for r in records), key=lambda r: r.id)
    placed = {row.key for row in rows}
    turned_away = [o for o in orders if str(o.placed.order_id) not in placed]
    holders = await key_holders(conn, [o.key for o in turned_away if o.key is not None])
    results: list[Placement] = []
    for order in orders:
        if str(order.placed.order_id) in placed:
            results.append(PLACED)
        elif order.key is None:
            raise RuntimeError(f"order {order.placed.order_id} without a key was not written")
        else:
            results.append(Placement(placed=False, holder=holders.get((order.key.scope, order.key.key_hash))))
    return Flushed(results, rows)


async def key_holders(
    conn: asyncpg.Connection, keys: Sequence[KeyClaim]
) -> dict[tuple[str, bytes], KeyHolder]:
    if not keys:
        return {}
    records = await conn.fetch(KEY_HOLDERS, [k.scope for k in keys], [k.key_hash for k in keys])
    return {
        (r["scope"], bytes(r["key_hash"])): KeyHolder(r["order_id"], r["fingerprint"], r["client_order_id"])
        for r in records
    }


async def prune_keys(conn: asyncpg.Connection | asyncpg.Pool, *, key_ttl_s: int, limit: int = 500_000) -> int:
    """Delete up to `limit` expired Idempotency-Keys, oldest first; how many went."""
    deleted = await conn.fetchval(
        """
        WITH gone AS (
            DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
                SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)
                ORDER BY created_at LIMIT $2))
            RETURNING 1
        )
        SELECT count(*) FROM gone
        """,
        key_ttl_s,
        limit,
    )
    return int(deleted)


async def own_order(
    conn: asyncpg.Pool | asyncpg.Connection, order_id: UUID, client: str
) -> OrderRecord | None:
    """The whole order, if `client` placed it."""
    row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1 AND client = $2", order_id, client)
    return OrderRecord.from_row(row) if row is not None else None


@dataclass(frozen=True)
class Position:
    """Where a page of a caller's orders ends (newest first): the last order's creation and id."""

    created_at: datetime
    order_id: UUID


# What a list shows of each order: all but the event log.
LISTED_COLUMNS = (
    "id, type, token_in, token_out, amount_in, slippage, status, seq, attempt, dex_used, raydium_quote,"
    " meteora_quote, executed_price, amount_out, tx_hash, failure_reason, error, '[]'::jsonb AS logs,"
    " correlation_id, client_order_id, created_at, updated_at"
)


async def list_orders(
    conn: asyncpg.Pool | asyncpg.Connection,
    client: str,
    *,
    status: OrderStatus | None,
    client_order_id: str | None,
    after: Position | None,
    limit: int,
) -> list[OrderRecord]:
    """Up to `limit` of `client`'s orders, newest first, after `after`: one range scan of orders_by_client
    (a filter only skips rows of it). The SQL names only the conditions given, so each shape gets a plan
    that uses the index."""
    where: list[str] = ["client = $1"]
    args: list[object] = [client]
    if status is not None:
        args.append(status.value)
        where.append(f"status = ${len(args)}::order_status")
    if client_order_id is not None:
        args.append(client_order_id)
        where.append(f"client_order_id = ${len(args)}")
    if after is not None:
        args.extend([after.created_at, after.order_id])
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {LISTED_COLUMNS} FROM orders WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    return [OrderRecord.from_row(row) for row in rows]
