"""Idempotency-Key against the real Redis, Postgres and Kafka of the session stack: replay, conflict, in
flight, per-client scope, and 50 concurrent requests that create exactly one order and one message."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from ingress.idempotency import Claim, IdempotencyStore
from ingress.schemas import PlaceOrder
from shared.topics import ORDER_STATUS, ORDERS
from tests.fixtures.orders import client_ip, fetch, order_body, topic_messages, wait_terminal
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.integration

EXECUTE = "/api/orders/execute"


async def post(client: httpx.AsyncClient, body: dict[str, Any], key: str, ip: str) -> httpx.Response:
    return await client.post(EXECUTE, json=body, headers={"Idempotency-Key": key, "X-Forwarded-For": ip})


async def orders_with_ref(stack: Stack, ref: str) -> list[str]:
    rows = await fetch(stack.settings, "SELECT id FROM orders WHERE client_order_id = $1", ref)
    return [str(r["id"]) for r in rows]


async def test_a_repeat_gets_the_first_answer_and_creates_nothing(stack: Stack) -> None:
    ref, key, ip = f"idem-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4()}", client_ip()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        first = await post(client, order_body(clientOrderId=ref), key, ip)
        assert first.status_code == 202 and "idempotent-replayed" not in first.headers
        order_id = first.json()["orderId"]
        await wait_terminal(stack, order_id)
        # The same order written differently ("1.50" for "1.5", basis points for the fraction) is the same.
        same = order_body(clientOrderId=ref, amountIn="1.50", slippage=None, slippageBps=100)
        again = await post(client, same, key, ip)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await orders_with_ref(stack, ref) == [order_id]
    assert len(await topic_messages(stack.settings, ORDERS, key=order_id)) == 1


async def test_the_same_key_with_another_body_is_a_409_conflict(stack: Stack) -> None:
    key, ip = f"key-{uuid.uuid4()}", client_ip()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        assert (await post(client, order_body(), key, ip)).status_code == 202
        conflict = await post(client, order_body(amountIn="2"), key, ip)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "idempotency_conflict"


async def test_keys_are_scoped_per_client(stack: Stack) -> None:
    key, ref = f"key-{uuid.uuid4()}", f"scope-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        one = await post(client, order_body(clientOrderId=ref), key, client_ip())
        other = await post(client, order_body(clientOrderId=ref), key, client_ip())
    assert one.status_code == other.status_code == 202
    assert "idempotent-replayed" not in other.headers
    assert one.json()["orderId"] != other.json()["orderId"]


async def test_a_key_still_in_flight_is_a_409_with_retry_after(stack: Stack) -> None:
    """Given a first request that claimed its key and has not committed yet (its claim is in Redis, its
    order is not in Postgres), a second request with that key is told to come back later."""
    key, ip = f"key-{uuid.uuid4()}", client_ip()
    body = order_body()
    redis = Redis.from_url(stack.settings.redis_url)
    try:
        store = IdempotencyStore(redis, key_prefix=stack.settings.redis_key_prefix, ttl_s=60)
        claim = Claim(uuid.uuid4(), PlaceOrder.model_validate(body).fingerprint())
        assert await store.claim(ip, key, claim) is None
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
            response = await post(client, body, key, ip)
    finally:
        await redis.aclose()
    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_in_progress"
    assert response.json()["retryAfter"] >= 1 and int(response.headers["retry-after"]) >= 1


async def test_fifty_concurrent_requests_with_one_key_make_one_order_and_one_message(stack: Stack) -> None:
    ref, key, ip = f"race-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4()}", client_ip()
    body = order_body(clientOrderId=ref)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, limits=limits) as client:
        responses = await asyncio.gather(*(post(client, body, key, ip) for _ in range(50)))

    fresh = [r for r in responses if r.status_code == 202 and "idempotent-replayed" not in r.headers]
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(fresh) == 1, [r.status_code for r in responses]
    assert len(fresh) + len(replayed) + len(in_flight) == 50
    assert all(r.json()["error"] == "idempotency_in_progress" for r in in_flight)
    order_id = fresh[0].json()["orderId"]
    assert all(r.json()["orderId"] == order_id for r in replayed)

    assert await orders_with_ref(stack, ref) == [order_id]
    await wait_terminal(stack, order_id)
    assert len(await topic_messages(stack.settings, ORDERS, key=order_id)) == 1
    pending = [
        m for m in await topic_messages(stack.settings, ORDER_STATUS, key=order_id) if b'"seq":1,' in m.value
    ]
    assert len(pending) == 1


async def test_a_claim_whose_order_committed_but_whose_answer_was_lost_replays_from_postgres(
    stack: Stack,
) -> None:
    """Given a first request that committed its order and died before recording its answer in Redis, a
    repeat finds the order in Postgres and gets the 202 the first request would have sent."""
    key, ip, ref = f"key-{uuid.uuid4()}", client_ip(), f"lost-{uuid.uuid4().hex[:8]}"
    body = order_body(clientOrderId=ref)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        committed = await client.post(EXECUTE, json=body, headers={"X-Forwarded-For": client_ip()})
        order_id = committed.json()["orderId"]
        redis = Redis.from_url(stack.settings.redis_url)
        try:
            store = IdempotencyStore(redis, key_prefix=stack.settings.redis_key_prefix, ttl_s=60)
            claim = Claim(uuid.UUID(order_id), PlaceOrder.model_validate(body).fingerprint())
            assert await store.claim(ip, key, claim) is None
        finally:
            await redis.aclose()
        replay = await post(client, body, key, ip)
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == {"orderId": order_id, "status": "pending", "clientOrderId": ref}
    assert await orders_with_ref(stack, ref) == [order_id]
