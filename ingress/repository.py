"""All of ingress's SQL."""

from __future__ import annotations

import asyncpg

from shared.events import OrderPlaced, StatusEvent


async def insert_order(
    conn: asyncpg.Connection | asyncpg.Pool, placed: OrderPlaced, pending: StatusEvent
) -> None:
    await conn.execute(
        "INSERT INTO orders (id, type, token_in, token_out, amount_in, slippage, status, seq, logs,"
        " correlation_id, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'pending', 1, jsonb_build_array($7::jsonb), $8, $9, $9)",
        placed.order_id,
        placed.type,
        placed.token_in,
        placed.token_out,
        placed.amount_in,
        placed.slippage,
        pending.to_dict(),
        placed.correlation_id,
        placed.created_at,
    )
