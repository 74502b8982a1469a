"""All of ingress's SQL: the order row, its outbox rows, and the relay's claims on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from shared.events import OrderPlaced, StatusEvent


async def insert_order(
    conn: asyncpg.Connection | asyncpg.Pool,
    placed: OrderPlaced,
    pending: StatusEvent,
    *,
    client_order_id: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO orders (id, type, token_in, token_out, amount_in, slippage, status, seq, logs,"
        " correlation_id, client_order_id, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'pending', 1, jsonb_build_array($7::jsonb), $8, $9, $10, $10)",
        placed.order_id,
        placed.type,
        placed.token_in,
        placed.token_out,
        placed.amount_in,
        placed.slippage,
        pending.to_dict(),
        placed.correlation_id,
        client_order_id,
        placed.created_at,
    )


async def order_exists(conn: asyncpg.Connection | asyncpg.Pool, order_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1)", order_id))


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    correlation_id: str | None


async def add_to_outbox(
    conn: asyncpg.Connection, topic: str, key: UUID, payload: dict[str, Any], correlation_id: str | None
) -> None:
    await conn.execute(
        "INSERT INTO outbox (topic, key, payload, correlation_id) VALUES ($1, $2, $3, $4)",
        topic,
        str(key),
        payload,
        correlation_id,
    )


async def claim_unpublished(conn: asyncpg.Connection, limit: int) -> list[OutboxRow]:
    """The oldest unpublished rows, locked for this transaction; rows another relay holds are skipped."""
    rows = await conn.fetch(
        "SELECT id, topic, key, payload, correlation_id FROM outbox WHERE published_at IS NULL"
        " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [OutboxRow(r["id"], r["topic"], r["key"], r["payload"], r["correlation_id"]) for r in rows]


async def mark_published(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ids)


async def count_unpublished(conn: asyncpg.Connection | asyncpg.Pool, topic: str) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL AND topic = $1", topic)
    )


# Errors that mean "Postgres cannot be reached right now" (503), as opposed to a bug in our SQL.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)
