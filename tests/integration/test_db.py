"""The pool's connections to the local Postgres are plain by default and TLS when DATABASE_URL asks for it
(Debian's Postgres has ssl=on, so asyncpg's default `prefer` would encrypt them)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.config import Settings
from shared.db import connect_options, create_pool

pytestmark = pytest.mark.integration

ENCRYPTED = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def with_query(url: str, query: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


async def test_a_pool_connection_to_the_local_server_is_plain_by_default(infrastructure: Settings) -> None:
    if connect_options(infrastructure.database_url) != {"ssl": False}:
        pytest.skip("DATABASE_URL names a remote server or its own sslmode")
    pool = await create_pool(infrastructure.database_url, max_size=1)
    try:
        assert await pool.fetchval(ENCRYPTED) is False
    finally:
        await pool.close()


async def test_sslmode_require_in_the_url_gets_tls(infrastructure: Settings) -> None:
    pool = await create_pool(with_query(infrastructure.database_url, "sslmode=require"), max_size=1)
    try:
        assert await pool.fetchval(ENCRYPTED) is True
    finally:
        await pool.close()


async def test_a_connection_released_inside_a_transaction_comes_back_out_of_it(
    infrastructure: Settings,
) -> None:
    """The pool's reset does nothing itself; asyncpg still rolls back what a careless user left open."""
    pool = await create_pool(infrastructure.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS pool_reset_probe (n int)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO pool_reset_probe VALUES (1)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM pool_reset_probe") == 0
    finally:
        await pool.close()


async def test_session_settings_outlive_a_release_so_pool_users_set_them_locally(
    infrastructure: Settings,
) -> None:
    """What the cheap reset gives up (shared.db._keep_session): a session SET stays on the connection, so
    code on the pool uses SET LOCAL inside a transaction, which ends with it."""
    pool = await create_pool(infrastructure.database_url, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL application_name = 'scoped'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "scoped"
            await conn.execute("SET application_name = 'leaked'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "leaked"
    finally:
        await pool.close()
