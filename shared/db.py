"""The asyncpg pool and the migrations that shape the database."""

from __future__ import annotations

import logging
from importlib.resources import files

import asyncpg
import orjson

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0
MIGRATION_LOCK = 7_306_001  # pg_advisory_lock key: concurrent starters apply migrations one at a time


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads
    )


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection (outside the pool) that speaks JSONB as Python objects, like the pool's."""
    conn = await asyncpg.connect(dsn, timeout=COMMAND_TIMEOUT_S)
    await _init_connection(conn)
    return conn


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections speak JSONB as Python objects; commands time out instead of hanging."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=COMMAND_TIMEOUT_S,
        timeout=COMMAND_TIMEOUT_S,
        init=_init_connection,
    )
    assert pool is not None
    return pool


async def migrate(dsn: str) -> list[str]:
    """Apply the SQL files in shared/migrations that this database has not seen, in name order."""
    conn = await asyncpg.connect(dsn, timeout=COMMAND_TIMEOUT_S)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        scripts = sorted(
            (f for f in files("shared.migrations").iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
        )
        applied = []
        for script in scripts:
            if script.name in done:
                continue
            async with conn.transaction():
                await conn.execute(script.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", script.name)
            logger.info("migration applied", extra={"migration": script.name})
            applied.append(script.name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await conn.close()


# Errors that mean "Postgres cannot be reached right now" (503, or retry later), not a bug in our SQL.
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
