"""The executor's SQL beyond the shared state machine: finding orders the sweeper must finish.

Each query bounds `created_at` or `updated_at` by a plain range (`<= statement_timestamp() - interval`),
which the open orders' two indexes (migrations 011 and 012) answer with the due orders only; the exact rule
is a filter over those few. Written as `column + interval <= clock_timestamp()`, the same rule made every
sweep read every open order's row: an expression over the column is no index condition, and neither is a
volatile function such as clock_timestamp() (statement_timestamp() is the same instant for one statement)."""

from __future__ import annotations

import asyncpg

from shared.domain.order import OrderRecord
from shared.store.orders import STAGE_COLUMNS

SWEEP_BATCH = 500


async def overdue_unsubmitted(pool: asyncpg.Pool, *, deadline_ms: int) -> list[OrderRecord]:
    """Open orders past their deadline that no swap can be running for (not submitted)."""
    rows = await pool.fetch(
        f"SELECT {STAGE_COLUMNS} FROM orders WHERE status IN ('pending', 'routing', 'building')"
        " AND created_at <= statement_timestamp() - make_interval(secs => $1::float8 / 1000)"
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
        # Past the deadline or past the swap window: one index range each (an OR of the two is planned as
        # a walk over every submitted order).
        f"SELECT {STAGE_COLUMNS} FROM orders WHERE id IN ("
        "  (SELECT id FROM orders WHERE status = 'submitted'"
        "   AND created_at <= statement_timestamp() - make_interval(secs => ($1::float8 + $3) / 1000)"
        "   ORDER BY created_at LIMIT $4)"
        "  UNION"
        "  (SELECT id FROM orders WHERE status = 'submitted'"
        "   AND updated_at <= statement_timestamp() - make_interval(secs => ($2::float8 + $3) / 1000)"
        "   ORDER BY updated_at LIMIT $4)"
        ") ORDER BY updated_at LIMIT $4",
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
        " AND updated_at <= statement_timestamp() - make_interval(secs => $1::float8 / 1000)"
        " AND COALESCE((logs -> -1 ->> 'nextRetryAt')::timestamptz, updated_at)"
        "     <= statement_timestamp() - make_interval(secs => $1::float8 / 1000)"
        " ORDER BY updated_at LIMIT $2",
        stale_ms,
        SWEEP_BATCH,
    )
    return [OrderRecord.from_row(r) for r in rows]
