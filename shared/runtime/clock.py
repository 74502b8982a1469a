"""One clock for every process: Postgres's.

Deadlines, retry times (`nextRetryAt`) and event timestamps are written by one process and compared by
another, and the sweep compares them with Postgres's `now()`. Were each process to read its own clock, a
host running a second ahead would time orders out early and route retries before they were due. So each
process follows Postgres's clock: `utcnow()` is the local wall clock plus an offset measured against
`clock_timestamp()` when the process starts and every CLOCK_SYNC_INTERVAL_S after (the sample with the
shortest round trip of a few, taken at its midpoint, as NTP does), exported as `clock_offset_seconds`.
Between measurements the local clock's rate carries it, which drifts by microseconds a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.runtime.logging import get_logger
from shared.runtime.metrics import CLOCK_OFFSET, CLOCK_SYNCS
from shared.runtime.tasks import cancel_and_wait
from shared.store.db import FAILED

logger = get_logger(__name__)

CLOCK_SYNC_INTERVAL_S = 30.0
SAMPLES = 5

_offset = timedelta(0)


def utcnow() -> datetime:
    """Now, on Postgres's clock (as last measured by this process)."""
    return datetime.now(UTC) + _offset


async def measure_offset(db: asyncpg.Pool | asyncpg.Connection, samples: int = SAMPLES) -> timedelta:
    """How far Postgres's clock is ahead of this process's wall clock."""
    best: tuple[float, timedelta] | None = None
    for _ in range(samples):
        sent, started = datetime.now(UTC), time.perf_counter()
        theirs: datetime = await db.fetchval("SELECT clock_timestamp()")
        round_trip = time.perf_counter() - started
        offset = theirs - (sent + timedelta(seconds=round_trip / 2))
        if best is None or round_trip < best[0]:
            best = (round_trip, offset)
    assert best is not None
    return best[1]


async def sync(db: asyncpg.Pool | asyncpg.Connection) -> timedelta:
    """Measure the offset and follow it from now on."""
    global _offset
    _offset = await measure_offset(db)
    CLOCK_OFFSET.set(_offset.total_seconds())
    CLOCK_SYNCS.inc()
    return _offset


@contextlib.asynccontextmanager
async def following_postgres(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Sync once before the service takes work, then every CLOCK_SYNC_INTERVAL_S while it runs. A failed
    measurement keeps the last offset (Postgres being away is not a reason to lose the clock)."""

    async def keep_in_sync() -> None:
        while True:
            await asyncio.sleep(CLOCK_SYNC_INTERVAL_S)
            try:
                await sync(pool)
            except FAILED as exc:
                logger.warning("clock.sync_failed", error=repr(exc))

    with contextlib.suppress(*FAILED):
        offset = await sync(pool)
        logger.info("clock.synced", offsetMs=round(offset.total_seconds() * 1000, 3))
    task = asyncio.create_task(keep_in_sync(), name="clock-sync")
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def sleep_until(instant: datetime, *, cap_s: float) -> None:
    """Sleep until the clock (Postgres's: shared/clock.py) has reached `instant`, for at most `cap_s`. An
    event loop's timer may fire a little before its time (uvloop's are milliseconds), so the clock is read
    again after each sleep: a caller that then checks `instant <= utcnow()` never finds itself early. The
    cap bounds the wait when `instant` comes from a clock that runs ahead."""
    give_up = time.monotonic() + cap_s
    while (left := (instant - utcnow()).total_seconds()) > 0:
        budget = give_up - time.monotonic()
        if budget <= 0:
            return
        await asyncio.sleep(min(left, budget))
