"""The mock venue's ledger (table mock_dex_swaps): one row per swap that landed, keyed by the order's swap
key, and the `expired` rows that settle an attempt that did not land."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol
from uuid import UUID

import asyncpg

from shared.domain.events import Dex
from shared.domain.order import SwapResult
from shared.store.batching import Flushed, GroupCommit


@dataclass(frozen=True)
class LedgerEntry:
    """A swap the venue lands, if `valid_until` has not passed and the key has no swap yet."""

    key: str
    order_id: UUID
    dex: Dex
    amount_in: Decimal
    amount_out: Decimal
    executed_price: Decimal
    tx_hash: str
    valid_until: datetime | None
    attempt: int = 1


# A swap lands if its window is open and its key is free, or holds only an earlier attempt's `expired` row.
INSERT_SWAPS = """
INSERT INTO mock_dex_swaps AS held
    (idempotency_key, order_id, dex, amount_in, amount_out, executed_price, tx_hash, kind, attempt)
SELECT n.key, n.order_id, n.dex, n.amount_in, n.amount_out, n.price, n.tx, 'swap', n.attempt
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::numeric[], $5::numeric[], $6::numeric[], $7::text[],
            $8::timestamptz[], $9::int[])
    AS n(key, order_id, dex, amount_in, amount_out, price, tx, valid_until, attempt)
WHERE n.valid_until IS NULL OR clock_timestamp() <= n.valid_until
ON CONFLICT (idempotency_key) DO UPDATE SET
    dex = EXCLUDED.dex, amount_in = EXCLUDED.amount_in, amount_out = EXCLUDED.amount_out,
    executed_price = EXCLUDED.executed_price, tx_hash = EXCLUDED.tx_hash, kind = 'swap',
    attempt = EXCLUDED.attempt, executed_at = now()
    WHERE held.kind = 'expired' AND held.attempt < EXCLUDED.attempt
RETURNING idempotency_key, dex, tx_hash, executed_price, amount_out
"""

# An attempt settled as not landed: its `expired` row goes in (or moves up from an earlier attempt's),
# unless the key holds a swap. True when it did.
SETTLE = """
INSERT INTO mock_dex_swaps AS held (idempotency_key, order_id, kind, attempt) VALUES ($1, $2, 'expired', $3)
ON CONFLICT (idempotency_key) DO UPDATE SET attempt = EXCLUDED.attempt
    WHERE held.kind = 'expired' AND held.attempt < EXCLUDED.attempt
RETURNING true
"""


async def insert_swaps(
    conn: asyncpg.Connection, entries: Sequence[LedgerEntry]
) -> Flushed[SwapResult | None]:
    """The ledger's inserts of many concurrent swaps in one statement (the venue's check of `valid_until`
    runs per row, when the statement does). One statement cannot write a key twice: a second swap of the
    same key in the batch is left out, and finds the first one's row afterwards (see `execute`)."""
    firsts: dict[str, LedgerEntry] = {}
    for entry in entries:
        firsts.setdefault(entry.key, entry)
    batch = list(firsts.values())
    records = await conn.fetch(
        INSERT_SWAPS,
        [e.key for e in batch],
        [e.order_id for e in batch],
        [e.dex.value for e in batch],
        [e.amount_in for e in batch],
        [e.amount_out for e in batch],
        [e.executed_price for e in batch],
        [e.tx_hash for e in batch],
        [e.valid_until for e in batch],
        [e.attempt for e in batch],
    )
    landed = {r["idempotency_key"]: _swap_result(r) for r in records}
    return Flushed([landed.get(e.key) if firsts[e.key] is e else None for e in entries], [])


def _swap_result(row: asyncpg.Record) -> SwapResult:
    return SwapResult(Dex(row["dex"]), row["tx_hash"], row["executed_price"], row["amount_out"])


class Ledger(Protocol):
    """Where the mock venue records what landed. `PostgresLedger` is the real one; the unit tests keep one
    in memory."""

    async def land(self, entry: LedgerEntry) -> SwapResult | None:
        """Record `entry` if its window is open and its key holds no swap (nor a settled later attempt);
        its result if it landed, else None."""
        ...

    async def swap_of(self, key: str) -> SwapResult | None:
        """The swap that landed under `key`, if any."""
        ...

    async def settle(self, key: str, order_id: UUID, attempt: int) -> SwapResult | None:
        """The swap under `key` if one landed; else marks `attempt` settled (no swap of it can land later)
        and returns None. Waits for a swap of the key still being written."""
        ...

    async def close(self) -> None: ...


class PostgresLedger:
    """The ledger in table mock_dex_swaps. `batched`: concurrent swaps share one statement (group commit),
    as the stages run it."""

    def __init__(self, pool: asyncpg.Pool, *, batched: bool = False) -> None:
        self._pool = pool
        self._batch: GroupCommit[LedgerEntry, SwapResult | None] | None = (
            GroupCommit(pool, None, insert_swaps, name="ledger") if batched else None
        )

    async def land(self, entry: LedgerEntry) -> SwapResult | None:
        if self._batch is not None:
            return await self._batch.submit(entry)
        async with self._pool.acquire() as conn:
            return (await insert_swaps(conn, [entry])).results[0]

    async def swap_of(self, key: str) -> SwapResult | None:
        return await _swap_of(self._pool, key)

    async def settle(self, key: str, order_id: UUID, attempt: int) -> SwapResult | None:
        async with self._pool.acquire() as conn:
            if await conn.fetchval(SETTLE, key, order_id, attempt):
                return None
            return await _swap_of(conn, key)

    async def close(self) -> None:
        if self._batch is not None:
            await self._batch.stop()


async def _swap_of(db: asyncpg.Pool | asyncpg.Connection, key: str) -> SwapResult | None:
    row = await db.fetchrow(
        "SELECT dex, tx_hash, executed_price, amount_out FROM mock_dex_swaps"
        " WHERE idempotency_key = $1 AND kind = 'swap'",
        key,
    )
    return _swap_result(row) if row is not None else None
