"""The rate limit and admission control, on a stack of their own: ingress and the proxy only (no router or
executor, so every accepted order stays open until the test finishes it), RATE_LIMIT=30.

No stage reports its capacity here, so admission assumes one executor with QUEUE_CONCURRENCY=40 slots whose
swaps take SWAP_WINDOW_MS=5 s: 8 orders/s. Within ADMISSION_MAX_WAIT_MS=10 s that is 40 in service plus 80
waiting."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from tests.fixtures.clients import http_from, loopback_address
from tests.fixtures.orders import client_ip, fetch, open_orders, order_body
from tests.fixtures.stack import Stack, free_port, running_stack, wait_for

pytestmark = [pytest.mark.integration]

EXECUTE = "/api/orders/execute"
ADMITTED_AT_MOST = 40 + 80


@pytest.fixture(scope="module")
async def limited(infrastructure: object) -> AsyncIterator[Stack]:
    async with running_stack(
        services=("ingress",),
        RATE_LIMIT="30",
        QUEUE_CONCURRENCY="40",
        SWAP_WINDOW_MS="5000",
        ADMISSION_MAX_WAIT_MS="10000",
        ADMISSION_SAMPLE_INTERVAL_MS="100",
    ) as started:
        yield started


async def post(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST an order as `client` (an `http_from` client: the proxy names it by its source address)."""
    return await client.post(EXECUTE, json=order_body(), headers=headers)


async def post_as_a_new_client(stack: Stack) -> httpx.Response:
    """POST an order from a loopback address no other request came from."""
    async with http_from(stack, loopback_address(), timeout=30) as client:
        return await post(client)


async def test_thirty_a_minute_pass_the_next_is_429_and_a_token_comes_back(limited: Stack) -> None:
    ip = loopback_address()
    async with http_from(limited, ip, timeout=30) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(post(client) for _ in range(31)))
        elapsed = time.monotonic() - started
        accepted = [r for r in responses if r.status_code == 202]
        limited_ = [r for r in responses if r.status_code == 429]
        # The bucket refills one token every 2 s: on a machine slow enough to spread 31 requests over
        # more than that, the refill may let one more through; otherwise it is exactly 30 and 1.
        outcomes = [(r.status_code, r.json().get("error")) for r in responses]
        assert 30 <= len(accepted) <= 30 + int(elapsed // 2), (elapsed, outcomes)
        assert len(accepted) + len(limited_) == 31
        assert {r.headers["ratelimit-policy"] for r in accepted} == {'"per-ip";q=30;w=60'}
        assert sorted(int(r.headers["ratelimit"].split("r=")[1].split(";")[0]) for r in accepted)[0] == 0

        async def next_refusal() -> httpx.Response | None:
            response = await post(client)
            return response if response.status_code == 429 else None

        # Only on a machine slow enough to let the refill admit all 31 does this need another request.
        refused = limited_[0] if limited_ else await wait_for(next_refusal, timeout=30, what="a 429")
        body = refused.json()
        assert body["error"] == "rate_limited" and 1 <= body["retryAfter"] <= 2
        assert refused.headers["retry-after"] == str(body["retryAfter"])
        assert refused.headers["ratelimit"].startswith('"per-ip";r=0;')
        another = await post_as_a_new_client(limited)
        assert another.status_code == 202, "another client has its own bucket"

        # The bucket is empty now (read from Redis) and holds a token again within retryAfter seconds.
        redis = Redis.from_url(limited.settings.redis_url)
        try:
            tokens = await redis.hget(f"{limited.settings.redis_key_prefix}rate:{ip}", "tokens")
        finally:
            await redis.aclose()
        assert tokens is not None and float(tokens) < 1
        refused_at = time.monotonic()

        async def admitted() -> bool:
            return (await post(client)).status_code == 202

        await wait_for(admitted, timeout=body["retryAfter"] + 10, interval=0.25, what="a token to come back")
        assert time.monotonic() - refused_at <= body["retryAfter"] + 10


async def test_orders_the_pipeline_could_not_start_in_time_get_429_queue_full_until_it_drains(
    limited: Stack,
) -> None:

    async def refused() -> httpx.Response | None:
        response = await post_as_a_new_client(limited)  # a fresh client each time: never rate limited
        assert response.status_code in (202, 429), response.text
        return response if response.status_code == 429 else None

    full = await wait_for(refused, timeout=60, interval=0, what="queue_full")
    body = full.json()
    assert body["error"] == "queue_full" and body["retryAfter"] >= 1, body
    assert full.headers["retry-after"] == str(body["retryAfter"])
    assert await open_orders(limited) <= ADMITTED_AT_MOST, "admitted more than could start in time"
    async with httpx.AsyncClient(timeout=30) as scraper:
        metrics = (await scraper.get(f"http://127.0.0.1:{limited.settings.ingress_port}/metrics")).text
    assert 'stage_backlog_orders{stage="executor"}' in metrics
    assert "admission_expected_wait_seconds" in metrics

    # A keyed request refused by admission created nothing and gives its key back.
    key = "queue-full-key"
    async with http_from(limited, loopback_address(), timeout=30) as client:
        keyed = await post(client, {"Idempotency-Key": key})
        assert keyed.status_code == 429 and keyed.json()["error"] == "queue_full"

        await finish_open_orders(limited)  # as if the pipeline had caught up

        async def accepted() -> bool:
            return (await post_as_a_new_client(limited)).status_code == 202

        await wait_for(accepted, timeout=15, interval=0.2, what="orders to be accepted again")
        retried = await post(client, {"Idempotency-Key": key})
        assert retried.status_code == 202 and "idempotent-replayed" not in retried.headers
    await finish_open_orders(limited)


async def finish_open_orders(stack: Stack) -> None:
    await fetch(
        stack.settings,
        "UPDATE orders SET status = 'failed', error = 'test_finished'"
        " WHERE status NOT IN ('confirmed', 'failed') RETURNING id",
    )


async def test_the_limit_is_shared_by_every_ingress_process(limited: Stack) -> None:
    """A second ingress process on the same Redis: one client's 31 requests spread over both still get
    exactly 30 tokens (the Lua script is atomic whichever process runs it)."""
    second_port = free_port()
    second = limited.process("ingress-2", [sys.executable, "-m", "ingress"])
    second.env = {**limited.env, "INGRESS_PORT": str(second_port)}
    second.start()
    try:
        ports = [limited.settings.ingress_port, second_port]

        async def up() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as probe:
                    return (await probe.get(f"http://127.0.0.1:{second_port}/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(up, timeout=60, interval=0.2, what="the second ingress")
        ip = client_ip()
        async with httpx.AsyncClient(timeout=30) as client:
            started = time.monotonic()
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"http://127.0.0.1:{ports[i % 2]}{EXECUTE}",
                        json=order_body(),
                        headers={"X-Forwarded-For": ip},  # the peer is loopback, a trusted proxy
                    )
                    for i in range(31)
                )
            )
            elapsed = time.monotonic() - started
        codes = [r.status_code for r in responses]
        assert set(codes) <= {202, 429}, codes
        assert 30 <= codes.count(202) <= 30 + int(elapsed // 2), (elapsed, codes)
    finally:
        second.stop()
        await finish_open_orders(limited)
