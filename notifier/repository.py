"""All of the notifier's SQL."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from shared.domain.status import OrderStatus


async def snapshot(
    pool: asyncpg.Pool, order_id: UUID
) -> tuple[OrderStatus, int, list[dict[str, Any]]] | None:
    row = await pool.fetchrow("SELECT status, seq, logs FROM orders WHERE id = $1", order_id)
    if row is None:
        return None
    return OrderStatus(row["status"]), row["seq"], row["logs"]
