"""The pool's connections to the local Postgres are plain by default and TLS when DATABASE_URL asks for it
(Debian's Postgres has ssl=on, so asyncpg's default `prefer` would encrypt them); what a release keeps and
what it does not; the advisory lock a pool user may hold (`exclusive`); services refuse an unmigrated
database."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.runtime.config import Settings
from shared.store.db import connect, connect_options, create_pool, exclusive, migrate, require_migrated
from tests.fixtures.stack import create_database, drop_database, wait_for
from tests.fixtures.throwaway import CuttableLink

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


@pytest.mark.parametrize(("query", "mode"), [(None, "force_generic_plan"), ("plan_cache_mode=auto", "auto")])
async def test_pool_statements_keep_one_plan_unless_the_url_says_otherwise(
    infrastructure: Settings, query: str | None, mode: str
) -> None:
    url = with_query(infrastructure.database_url, query) if query else infrastructure.database_url
    pool = await create_pool(url, max_size=1)
    try:
        assert await pool.fetchval("SHOW plan_cache_mode") == mode
        assert (await pool.fetchval("SHOW application_name")).startswith("order-engine pid ")
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
    """What the cheap reset gives up (shared.store.db._keep_session): a session SET stays on the connection,
    so code on the pool uses SET LOCAL inside a transaction, which ends with it."""
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


LOCK = 7_306_999  # no lock of the engine's


async def lock_is_free(dsn: str) -> bool:
    """Whether another session can take LOCK now (and gives it back)."""
    conn = await connect(dsn, jsonb=False)
    try:
        taken = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK))
        if taken:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK)
        return taken
    finally:
        await conn.close()


async def test_exclusive_holds_the_lock_for_its_block_only_however_the_block_ends(
    infrastructure: Settings,
) -> None:
    dsn = infrastructure.database_url
    pool = await create_pool(dsn, max_size=2)
    try:
        async with exclusive(pool, LOCK) as held:
            assert held is not None and not await lock_is_free(dsn)
            async with exclusive(pool, LOCK) as second:
                assert second is None, "one holder at a time, even within a process"
        assert await lock_is_free(dsn)
        with pytest.raises(RuntimeError):
            async with exclusive(pool, LOCK):
                raise RuntimeError("the block failed")
        assert await lock_is_free(dsn)
    finally:
        await pool.close()


async def test_exclusive_never_returns_a_connection_to_the_pool_still_holding_the_lock(
    infrastructure: Settings,
) -> None:
    """A task cancelled in its block, then again while the lock is being released: the connection that
    could not release it is terminated, and the lock goes with it."""
    dsn = infrastructure.database_url
    pool = await create_pool(dsn, max_size=1)
    inside = asyncio.Event()

    async def holder() -> None:
        async with exclusive(pool, LOCK):
            inside.set()
            await asyncio.Event().wait()

    try:
        task = asyncio.create_task(holder())
        await inside.wait()
        task.cancel()
        await asyncio.sleep(0)  # the first cancellation lands; the release is now in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: lock_is_free(dsn), timeout=5, what="the lock released with its session")
        async with pool.acquire() as conn:  # the pool still works: it replaced the terminated connection
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_exclusive_lets_go_of_a_lock_granted_after_its_caller_stopped_waiting(
    infrastructure: Settings,
) -> None:
    """The try-lock ran, but its answer came after the command timeout: the session holds the lock all the
    same, so its connection is terminated, not returned to the pool holding it. (The chaos suite's Postgres
    stall once left the relay's lock so, on an idle pool connection: no relay anywhere, and every ingress
    refusing orders as "not reaching Kafka" until the clients gave up.)"""
    dsn = infrastructure.database_url
    link = CuttableLink(*infrastructure.database_address)
    await link.start()
    host, port = infrastructure.database_address
    pool = await create_pool(dsn.replace(f"{host}:{port}", f"127.0.0.1:{link.port}"), command_timeout_s=1.0)
    try:
        async with exclusive(pool, LOCK):  # once, so the try-lock's statement is prepared: no round trip
            pass  # left to time out before it is sent to run
        link.stall(answers_only=True)
        # The answer comes while the pool waits (up to the command timeout) for the timed-out query to end,
        # so the pool would take the connection back as it is.
        asyncio.get_running_loop().call_later(1.5, link.resume)
        with pytest.raises(TimeoutError):
            async with exclusive(pool, LOCK):
                pytest.fail("the lock's answer came too late: the block must not run")
        await wait_for(lambda: lock_is_free(dsn), timeout=5, what="the lock released with its session")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        link.resume()
        await pool.close()
        await link.cut()


async def test_a_service_refuses_a_database_its_migrations_have_not_reached(infrastructure: Settings) -> None:
    """Migrations are one step of their own (`python -m shared.runtime.cli migrate`); a service started on a
    database without them stops at once, naming the step, instead of failing on its first statement."""
    name = f"order_engine_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(name)
    try:
        conn = await connect(url)
        try:
            with pytest.raises(RuntimeError, match=r"lacks migrations \['001_orders.sql'"):
                await require_migrated(conn)
            await migrate(url)
            await require_migrated(conn)
            await conn.execute("DELETE FROM schema_migrations WHERE name = '011_orders_by_client.sql'")
            with pytest.raises(RuntimeError, match=r"lacks migrations \['011_orders_by_client.sql'\]"):
                await require_migrated(conn)
        finally:
            await conn.close()
    finally:
        await drop_database(name)
