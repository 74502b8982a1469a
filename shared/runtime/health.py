"""Readiness probes for the three engines. Each returns True or raises; callers bound them with a timeout."""

from __future__ import annotations

import asyncio

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from shared.store.db import connect
from shared.store.redis import open_redis

PROBE_TIMEOUT_S = 3.0


async def check_kafka(servers: list[str]) -> bool:
    """True once the broker answers a metadata request (an open port alone is not enough)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000))
    try:
        await asyncio.wait_for(admin.start(), PROBE_TIMEOUT_S)
        cluster = await asyncio.wait_for(admin.describe_cluster(), PROBE_TIMEOUT_S)
        return bool(cluster.get("brokers"))
    finally:
        await admin.close()


async def check_postgres_url(url: str) -> bool:
    conn = await connect(url, connect_timeout_s=PROBE_TIMEOUT_S, jsonb=False)
    try:
        return bool(await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S) == 1)
    finally:
        await conn.close()


async def check_postgres(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S) == 1)


async def check_redis(client: Redis) -> bool:
    return bool(await asyncio.wait_for(client.ping(), PROBE_TIMEOUT_S))


async def check_redis_url(url: str) -> bool:
    client = open_redis(url, timeout_s=PROBE_TIMEOUT_S)
    try:
        return await check_redis(client)
    finally:
        await client.aclose()
