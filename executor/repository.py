"""The executor's SQL beyond the shared state machine: finding orders the sweeper must finish."""

from __future__ import annotations

import asyncpg

from shared.domain.order import OrderRecord
from shared.store.orders import STAGE_COLUMNS

SWEEP_BATCH = 500


async def overdue_unsubmitted(pool: asyncpg.Pool, *, deadline_ms: int) -> list[OrderRecord]:
    """Open orders past their deadline that no swap can be running for (not submitted)."""
    rows = await pool.fetch(
        f"SELECT {STAGE_COLUMNS} FROM orders WHERE status IN ('pending', 'routing', 'building')"
        " AND created_at + make_interval(secs => $1::float8 / 1000) <= clock_timestamp()"
        " ORDER BY created_at LIMIT $2",
        deadline_ms,
        SWEEP_BATCH,
    )
    return [OrderRecord.from_row(r) for r in rows]


async def settled_submissions(
    pool: asyncpg.Pool, *, deadline_ms: int, swap_window_ms: int, margin_ms: int
) -> list[OrderRecord]:
    """Submitted orders whose swap can no longer land (its `valid_until` has passed, plus a margin): the
    ledger now says for good whether it did."""
    rows = await pool.fetch(
        f"SELECT {STAGE_COLUMNS} FROM orders WHERE status = 'submitted'"
        " AND LEAST(created_at + make_interval(secs => $1::float8 / 1000),"
        "           updated_at + make_interval(secs => $2::float8 / 1000))"
        "     + make_interval(secs => $3::float8 / 1000) <= clock_timestamp()"
        " ORDER BY updated_at LIMIT $4",
        deadline_ms,
        swap_window_ms,
        margin_ms,
        SWEEP_BATCH,
    )
    return [OrderRecord.from_row(r) for r in rows]


async def stalled_before_submission(pool: asyncpg.Pool, *, stale_ms: int) -> list[OrderRecord]:
    """Orders in pending, routing or building that have not moved for `stale_ms` (a lost message or a router
    that died after its offset was committed). A pending order waiting for its retry is not stalled until
    its retry is `stale_ms` overdue."""
    rows = await pool.fetch(
        f"SELECT {STAGE_COLUMNS} FROM orders WHERE status IN ('pending', 'routing', 'building')"
        " AND GREATEST(updated_at, COALESCE((logs -> -1 ->> 'nextRetryAt')::timestamptz, updated_at))"
        "     + make_interval(secs => $1::float8 / 1000) <= clock_timestamp()"
        " ORDER BY updated_at LIMIT $2",
        stale_ms,
        SWEEP_BATCH,
    )
    return [OrderRecord.from_row(r) for r in rows]
