"""Idempotency-Key against the real Postgres, Redis and Kafka of the session stack: replay, conflict,
per-client scope, keys that outlive Redis and a lost answer, expiry, and 50 concurrent requests that create
exactly one order and one message."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from ingress import repository
from ingress.schemas import PlaceOrder
from ingress.service import key_claim, new_order
from shared.messaging.topics import ORDER_STATUS, ORDERS
from shared.store.db import connect
from tests.fixtures.clients import http_from, loopback_address
from tests.fixtures.orders import fetch, order_body, topic_messages, wait_status
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.integration

EXECUTE = "/api/orders/execute"


async def post(client: httpx.AsyncClient, body: dict[str, Any], key: str) -> httpx.Response:
    """POST `body` under `key` as `client` (an `http_from` client: its source address is its identity)."""
    return await client.post(EXECUTE, json=body, headers={"Idempotency-Key": key})


async def orders_with_ref(stack: Stack, ref: str) -> list[str]:
    rows = await fetch(stack.settings, "SELECT id FROM orders WHERE client_order_id = $1", ref)
    return [str(r["id"]) for r in rows]


async def test_a_repeat_gets_the_first_answer_and_creates_nothing(stack: Stack) -> None:
    ref, key = f"idem-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4()}"
    async with http_from(stack, loopback_address()) as client:
        first = await post(client, order_body(clientOrderId=ref), key)
        assert first.status_code == 202 and "idempotent-replayed" not in first.headers
        order_id = first.json()["orderId"]
        await wait_status(stack, order_id)
        # The same order written differently ("1.50" for "1.5", basis points for the fraction) is the same.
        same = order_body(clientOrderId=ref, amountIn="1.50", slippage=None, slippageBps=100)
        again = await post(client, same, key)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await orders_with_ref(stack, ref) == [order_id]
    assert len(await topic_messages(stack.settings, ORDERS, key=order_id)) == 1


async def test_the_same_key_with_another_body_is_a_409_conflict(stack: Stack) -> None:
    key = f"key-{uuid.uuid4()}"
    async with http_from(stack, loopback_address()) as client:
        assert (await post(client, order_body(), key)).status_code == 202
        conflict = await post(client, order_body(amountIn="2"), key)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "idempotency_conflict"


async def test_keys_are_scoped_per_client(stack: Stack) -> None:
    key, ref = f"key-{uuid.uuid4()}", f"scope-{uuid.uuid4().hex[:8]}"
    async with (
        http_from(stack, loopback_address()) as client,
        http_from(stack, loopback_address()) as another_client,
    ):
        one = await post(client, order_body(clientOrderId=ref), key)
        other = await post(another_client, order_body(clientOrderId=ref), key)
    assert one.status_code == other.status_code == 202
    assert "idempotent-replayed" not in other.headers
    assert one.json()["orderId"] != other.json()["orderId"]


async def test_a_key_outlives_redis(stack: Stack) -> None:
    """Given a placed order whose key Redis no longer has (flushed, restarted without persistence), a
    repeat still replays it: the key lives in Postgres with the order."""
    key, ref = f"key-{uuid.uuid4()}", f"redis-{uuid.uuid4().hex[:8]}"
    async with http_from(stack, loopback_address()) as client:
        first = await post(client, order_body(clientOrderId=ref), key)
        redis = Redis.from_url(stack.settings.redis_url)
        try:
            ours = [k async for k in redis.scan_iter(f"{stack.settings.redis_key_prefix}*")]
            if ours:
                await redis.delete(*ours)
        finally:
            await redis.aclose()
        again = await post(client, order_body(clientOrderId=ref), key)
    assert first.status_code == 202
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await orders_with_ref(stack, ref) == [first.json()["orderId"]]


async def test_fifty_concurrent_requests_with_one_key_make_one_order_and_one_message(stack: Stack) -> None:
    ref, key = f"race-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4()}"
    body = order_body(clientOrderId=ref)
    limits = httpx.Limits(max_connections=50)
    async with http_from(stack, loopback_address(), timeout=30, limits=limits) as client:
        responses = await asyncio.gather(*(post(client, body, key) for _ in range(50)))

    fresh = [r for r in responses if r.status_code == 202 and "idempotent-replayed" not in r.headers]
    replayed = [
        r for r in responses if r.status_code == 202 and r.headers.get("idempotent-replayed") == "true"
    ]
    assert len(fresh) == 1, [r.status_code for r in responses]
    assert len(replayed) == 49, [
        (r.status_code, r.text) for r in responses if r not in replayed
    ]  # a repeat waits for the first commit
    order_id = fresh[0].json()["orderId"]
    assert all(r.json()["orderId"] == order_id for r in replayed)

    assert await orders_with_ref(stack, ref) == [order_id]
    await wait_status(stack, order_id)
    assert len(await topic_messages(stack.settings, ORDERS, key=order_id)) == 1
    pending = [
        m for m in await topic_messages(stack.settings, ORDER_STATUS, key=order_id) if b'"seq":1,' in m.value
    ]
    assert len(pending) == 1


async def place_directly(stack: Stack, body: dict[str, Any], key: str, ip: str) -> str:
    """Write an order with its key as the statement of a request from `ip` does, with no answer sent: a
    request that committed and then lost its connection (an ambiguous COMMIT) or its process."""
    request = PlaceOrder.model_validate(body)
    order = new_order(request, None, key_claim(ip, key, request), client=ip, max_attempts=3)
    conn = await connect(stack.settings.database_url)
    try:
        flushed = await repository.insert_orders(conn, [order], key_ttl_s=300)
    finally:
        await conn.close()
    assert flushed.results == [repository.PLACED]
    return str(order.placed.order_id)


async def test_a_request_whose_order_committed_but_whose_answer_was_lost_replays_it(stack: Stack) -> None:
    """Given an order committed with its key whose client never heard back, a retry with the key gets the
    202 the first request would have sent, and no second order."""
    key, ip, ref = f"key-{uuid.uuid4()}", loopback_address(), f"lost-{uuid.uuid4().hex[:8]}"
    body = order_body(clientOrderId=ref)
    order_id = await place_directly(stack, body, key, ip)
    async with http_from(stack, ip) as client:
        replay = await post(client, body, key)
        conflict = await post(client, order_body(clientOrderId=ref, amountIn="2"), key)
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == {"orderId": order_id, "status": "pending", "clientOrderId": ref}
    assert conflict.status_code == 409 and conflict.json()["error"] == "idempotency_conflict"
    assert await orders_with_ref(stack, ref) == [order_id]


async def test_an_expired_key_places_a_new_order_and_is_pruned(stack: Stack) -> None:
    """Given a key older than IDEMPOTENCY_TTL_S, the same key places a new order (the key moves to it), and
    pruning removes keys that expired and only those."""
    key, ip, ref = f"key-{uuid.uuid4()}", loopback_address(), f"ttl-{uuid.uuid4().hex[:8]}"
    body = order_body(clientOrderId=ref)
    old = await place_directly(stack, body, key, ip)
    kept = await place_directly(stack, body, f"key-{uuid.uuid4()}", ip)
    ttl = stack.settings.idempotency_ttl_s
    await fetch(
        stack.settings,
        "UPDATE idempotency_keys SET created_at = now() - make_interval(secs => $1) WHERE order_id = $2",
        ttl + 1,
        uuid.UUID(old),
    )
    async with http_from(stack, ip) as client:
        again = await post(client, body, key)
    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    new = again.json()["orderId"]
    assert sorted(await orders_with_ref(stack, ref)) == sorted([old, kept, new])
    held = await fetch(
        stack.settings,
        "SELECT order_id FROM idempotency_keys WHERE order_id = ANY($1::uuid[])",
        [old, kept, new],
    )
    assert sorted(str(r["order_id"]) for r in held) == sorted([kept, new])

    await fetch(
        stack.settings,
        "UPDATE idempotency_keys SET created_at = now() - make_interval(secs => $1) WHERE order_id = $2",
        ttl + 1,
        uuid.UUID(new),
    )
    conn = await connect(stack.settings.database_url)
    try:
        assert await repository.prune_keys(conn, key_ttl_s=ttl) >= 1
    finally:
        await conn.close()
    left = await fetch(
        stack.settings,
        "SELECT order_id FROM idempotency_keys WHERE order_id = ANY($1::uuid[])",
        [old, kept, new],
    )
    assert [str(r["order_id"]) for r in left] == [kept]
