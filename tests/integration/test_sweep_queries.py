"""The executor's sweep queries on real Postgres: each finds exactly the orders that are due (orders on both
sides of every boundary), and reaches them through an index range on `created_at` or `updated_at` rather
than by filtering every open order (which cost each sweep ~10 ms with 3,000 orders in flight)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncpg
import pytest

from executor import repository
from shared.domain.order import OrderRecord
from shared.runtime.config import Settings
from shared.store.db import create_pool, migrate
from tests.fixtures.stack import create_database, drop_database

pytestmark = pytest.mark.integration

DEADLINE_MS, WINDOW_MS, MARGIN_MS, STALE_MS = 30_000, 5_000, 1_000, 10_000


class Recording:
    """The pool, with the last query and arguments it was given kept for EXPLAIN."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.query = ""
        self.args: tuple[Any, ...] = ()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.query, self.args = query, args
        return await self.pool.fetch(query, *args)


@pytest.fixture(scope="module")
async def pool(infrastructure: Settings) -> AsyncIterator[asyncpg.Pool]:
    name = f"order_engine_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(name)
    try:
        await migrate(url)
        pool = await create_pool(url)
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        await drop_database(name)


async def order(
    pool: asyncpg.Pool,
    status: str,
    *,
    created_s_ago: float,
    updated_s_ago: float,
    retry_due_s_ago: float | None = None,
) -> uuid.UUID:
    """An order in `status`, created and last moved that many seconds before Postgres's now; its latest
    event names a retry due that long ago, if given."""
    order_id = uuid.uuid4()
    event: dict[str, Any] = {"orderId": str(order_id), "seq": 1, "status": status}
    await pool.execute(
        """INSERT INTO orders (id, type, token_in, token_out, amount_in, slippage, status, seq, logs,
                               created_at, updated_at)
           VALUES ($1, 'market', 'SOL', 'USDC', 1, 0.01, $2::order_status, 1,
                   jsonb_build_array($3::jsonb || CASE WHEN $6::float8 IS NULL THEN '{}'::jsonb ELSE
                       jsonb_build_object('nextRetryAt', now() - make_interval(secs => $6::float8)) END),
                   now() - make_interval(secs => $4::float8), now() - make_interval(secs => $5::float8))""",
        order_id,
        status,
        event,
        created_s_ago,
        updated_s_ago,
        retry_due_s_ago,
    )
    return order_id


@pytest.fixture(autouse=True)
async def no_orders(pool: asyncpg.Pool) -> None:
    await pool.execute("TRUNCATE orders")


async def swept(
    pool: asyncpg.Pool, sweep: Callable[[asyncpg.Pool], Awaitable[list[OrderRecord]]]
) -> tuple[set[uuid.UUID], str]:
    """The ids the sweep returns, and its plan with sequential scans off (so the table's few rows do not
    make one cheaper): only a range bound on an indexed column shows as an `Index Cond` on it."""
    recording = Recording(pool)
    found = {o.id for o in await sweep(cast(asyncpg.Pool, recording))}
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + recording.query, *recording.args))
    return found, plan


async def test_overdue_unsubmitted_are_the_unsubmitted_orders_past_their_deadline(pool: asyncpg.Pool) -> None:
    due = await order(pool, "routing", created_s_ago=32, updated_s_ago=31)
    await order(pool, "building", created_s_ago=28, updated_s_ago=27)
    await order(pool, "submitted", created_s_ago=40, updated_s_ago=39)  # a swap may be running
    await order(pool, "confirmed", created_s_ago=40, updated_s_ago=39)

    found, plan = await swept(pool, lambda p: repository.overdue_unsubmitted(p, deadline_ms=DEADLINE_MS))

    assert found == {due}
    assert "Index Cond: (created_at <=" in plan, plan


async def test_settled_submissions_are_past_their_deadline_or_their_swap_window(pool: asyncpg.Pool) -> None:
    """Due past the deadline plus the margin, or past the swap window plus the margin, whichever is first."""
    by_deadline = await order(pool, "submitted", created_s_ago=33, updated_s_ago=1)
    by_window = await order(pool, "submitted", created_s_ago=10, updated_s_ago=8)
    await order(pool, "submitted", created_s_ago=10, updated_s_ago=4)
    await order(pool, "building", created_s_ago=40, updated_s_ago=40)

    found, plan = await swept(
        pool,
        lambda p: repository.settled_submissions(
            p, deadline_ms=DEADLINE_MS, swap_window_ms=WINDOW_MS, margin_ms=MARGIN_MS
        ),
    )

    assert found == {by_deadline, by_window}
    assert "Index Cond: (created_at <=" in plan and "Index Cond: (updated_at <=" in plan, plan


async def test_stalled_orders_have_not_moved_and_wait_for_no_retry(pool: asyncpg.Pool) -> None:
    """Not moved for STALE_MS; a pending order waiting for its retry is stalled only STALE_MS after it."""
    stalled = await order(pool, "pending", created_s_ago=12, updated_s_ago=12)
    retry_long_overdue = await order(pool, "pending", created_s_ago=30, updated_s_ago=20, retry_due_s_ago=11)
    await order(pool, "pending", created_s_ago=30, updated_s_ago=20, retry_due_s_ago=5)
    await order(pool, "routing", created_s_ago=9, updated_s_ago=8)
    await order(pool, "submitted", created_s_ago=20, updated_s_ago=20)  # the swap window's sweep's

    found, plan = await swept(pool, lambda p: repository.stalled_before_submission(p, stale_ms=STALE_MS))

    assert found == {stalled, retry_long_overdue}
    assert "Index Cond: (updated_at <=" in plan, plan
