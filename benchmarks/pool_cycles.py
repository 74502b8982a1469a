"""CPU cost of the client side of one pool round: acquire, `SELECT 1`, release, through our pool.

    .venv/bin/python -m benchmarks.pool_cycles --cycles 20000
    .venv/bin/python -m benchmarks.pool_cycles --dsn 'postgres://user:password@localhost:5432/order_engine?sslmode=require'
    .venv/bin/python -m benchmarks.pool_cycles --reset asyncpg   # asyncpg's default reset on release

Prints the CPU time of this process (user + system) per cycle and whether the pool's connection is encrypted
(`pg_stat_ssl`). Figures are printed, never asserted. Needs the Postgres of `make infra-up`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from shared.runtime.config import Settings
from shared.store.db import create_pool


async def run(dsn: str, cycles: int, reset: str) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    if reset == "asyncpg":
        pool._reset = None  # asyncpg's default: Connection.reset(), one round trip per release
    try:
        encrypted = await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        for _ in range(500):  # warm-up: statement cache, codecs
            async with pool.acquire() as conn:
                await conn.execute("SELECT 1")
        before, wall0 = os.times(), time.perf_counter()
        for _ in range(cycles):
            async with pool.acquire() as conn:
                await conn.execute("SELECT 1")
        after, wall = os.times(), time.perf_counter() - wall0
        user, system = after.user - before.user, after.system - before.system
    finally:
        await pool.close()
    cpu = user + system
    print(
        f"cycles={cycles} tls={encrypted} reset={reset} cpu={cpu:.2f}s ({cpu / cycles * 1e6:.0f} µs/cycle"
        f", user {user / cycles * 1e6:.0f} + sys {system / cycles * 1e6:.0f}) "
        f"wall={wall:.2f}s ({wall / cycles * 1e6:.0f} µs/cycle) load={os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--dsn", default=None, help="DATABASE_URL by default")
    parser.add_argument(
        "--reset", choices=("ours", "asyncpg"), default="ours", help="the pool's reset, or asyncpg's default"
    )
    args = parser.parse_args()
    asyncio.run(run(args.dsn or Settings().database_url, args.cycles, args.reset))


if __name__ == "__main__":
    main()
