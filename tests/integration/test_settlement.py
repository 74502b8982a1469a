"""Settling a submission against the venue's ledger, in the real Postgres: a swap whose COMMIT stalls past
its window is seen by the settlement rather than missed, and a settled attempt can never land afterwards
while the order's next attempt still can."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from shared.domain.events import Dex
from shared.domain.order import SwapResult
from shared.runtime.clock import utcnow
from shared.store.db import connect, create_pool
from shared.venue.ledger import LedgerEntry, PostgresLedger, insert_swaps
from shared.venue.mock import MockDex
from shared.venue.model import Latency, swap_key
from tests.fixtures.stack import Stack, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def venue(stack: Stack) -> AsyncIterator[MockDex]:
    pool = await create_pool(stack.settings.database_url, max_size=2)
    try:
        yield MockDex(PostgresLedger(pool), seed=None, latency=Latency((0, 0), (0, 0)))
    finally:
        await pool.close()


def swap(order_id: uuid.UUID, attempt: int) -> LedgerEntry:
    return LedgerEntry(
        swap_key(order_id),
        order_id,
        Dex.RAYDIUM,
        Decimal("1.5"),
        Decimal("228.5"),
        Decimal("152.3"),
        f"tx-{uuid.uuid4().hex}",
        utcnow() + timedelta(seconds=30),
        attempt,
    )


async def land(conn: asyncpg.Connection, entry: LedgerEntry) -> SwapResult | None:
    return (await insert_swaps(conn, [entry])).results[0]


async def test_a_swap_still_committing_is_seen_by_its_settlement(stack: Stack, venue: MockDex) -> None:
    """Given a swap written but not yet committed (its COMMIT stalled), settling that attempt waits for it
    and reports it landed; reading the ledger, as the sweep did, reported no swap and let the order fail
    or retry while the venue had swapped."""
    order_id = uuid.uuid4()
    writer = await connect(stack.settings.database_url)
    observer = await connect(stack.settings.database_url)
    try:
        stalled = writer.transaction()
        await stalled.start()
        landed = await land(writer, swap(order_id, attempt=1))
        assert landed is not None

        settling = asyncio.create_task(venue.settle(order_id, 1))

        async def settlement_waits_on_the_swap() -> bool:
            blocked = await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                writer.get_server_pid(),
            )
            return bool(blocked)

        await wait_for(settlement_waits_on_the_swap, timeout=10, what="the settlement to wait for the swap")
        assert not settling.done()
        await stalled.commit()
        assert await settling == landed
    finally:
        await writer.close()
        await observer.close()


async def test_a_settled_attempt_never_lands_and_the_next_attempt_still_can(
    stack: Stack, venue: MockDex
) -> None:
    order_id = uuid.uuid4()
    conn = await connect(stack.settings.database_url)
    try:
        assert await venue.settle(order_id, 1) is None  # attempt 1 did not land, and now never will
        assert await land(conn, swap(order_id, attempt=1)) is None
        assert await venue.settle(order_id, 1) is None  # still nothing under the key

        retried = await land(conn, swap(order_id, attempt=2))  # the order's retry takes the key over
        assert retried is not None
        assert await venue.settle(order_id, 2) == retried
        assert await venue.settle(order_id, 1) == retried  # a late settlement of attempt 1 sees it too
        assert await land(conn, swap(order_id, attempt=3)) is None  # nothing takes a key from a swap
        swaps = await conn.fetch(
            "SELECT tx_hash FROM mock_dex_swaps WHERE order_id = $1 AND kind = 'swap'", order_id
        )
        assert [r["tx_hash"] for r in swaps] == [retried.tx_hash]
    finally:
        await conn.close()
