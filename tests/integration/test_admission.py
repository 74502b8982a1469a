"""Admission control against the real pipeline: under overload, what is accepted finishes and the rest is
refused at once with 429 `queue_full` and a `Retry-After`.

The stack's executor takes 4 swaps at once of 400-600 ms each (8 orders/s); orders must finish within 8 s
and may wait 3 s for the pipeline. The test offers 5 times that for 6 seconds, on a fixed schedule that does
not wait for answers (open loop), and then follows every accepted order to its end."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fixtures.execution import ORDER, wait_terminal
from tests.fixtures.orders import fetch
from tests.fixtures.stack import Stack, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

RATE_PER_S = 40
DURATION_S = 6


@pytest.fixture(scope="module")
async def small(infrastructure: object) -> AsyncIterator[Stack]:
    async with running_stack(
        QUEUE_CONCURRENCY="4",
        MOCK_EXECUTION_LATENCY_MIN_MS="400",
        MOCK_EXECUTION_LATENCY_MAX_MS="600",
        MOCK_PRICE_MOVE_BPS="0",  # no slippage failure: every accepted order must confirm
        SWAP_WINDOW_MS="2000",
        ORDER_DEADLINE_MS="8000",
        ADMISSION_MAX_WAIT_MS="3000",
        ADMISSION_SAMPLE_INTERVAL_MS="100",
    ) as stack:
        yield stack


async def test_under_five_times_overload_every_accepted_order_confirms_and_the_rest_is_429(
    small: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=small.base_url, timeout=30) as client:
        started = time.monotonic()

        async def one(at: float) -> httpx.Response:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            return await client.post("/api/orders/execute", json=ORDER)

        responses = await asyncio.gather(*(one(i / RATE_PER_S) for i in range(RATE_PER_S * DURATION_S)))

    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {202, 429}, codes
    refused = [r for r in responses if r.status_code == 429]
    assert refused, f"5x overload was all accepted: {codes}"
    for response in refused:
        body = response.json()
        assert body["error"] == "queue_full" and body["retryAfter"] >= 1, body
        assert response.headers["retry-after"] == str(body["retryAfter"])
    accepted = [r.json()["orderId"] for r in responses if r.status_code == 202]
    assert len(accepted) >= 8 * DURATION_S // 2, f"admission refused what the pipeline could take: {codes}"

    rows = await wait_terminal(small, accepted, timeout=60)
    outcomes = Counter((r["status"], r["error"]) for r in rows.values())
    assert outcomes == {("confirmed", None): len(accepted)}, outcomes


@pytest.fixture(scope="module")
async def relay_asleep(infrastructure: object) -> AsyncIterator[Stack]:
    """A stack whose relay looks for abandoned outbox rows only every ten minutes (after its first pass at
    start), so a row planted as abandoned stays unpublished for as long as a test needs."""
    async with running_stack(OUTBOX_POLL_INTERVAL_MS="600000", ADMISSION_SAMPLE_INTERVAL_MS="100") as stack:
        yield stack


async def test_publishing_behind_while_kafka_answers_is_429_with_the_time_to_catch_up(
    relay_asleep: Stack,
) -> None:
    """The outbox 30 s behind with the broker up is what a saturated engine looks like: overload, so 429
    `queue_full` and a Retry-After of what is left to catch up, not 503 (Kafka down is tests/integration/
    test_faults.py's); once the row is gone, orders are taken again."""
    stuck = uuid.uuid4()
    await fetch(
        relay_asleep.settings,
        "INSERT INTO outbox (topic, key, payload, created_at)"
        " VALUES ('order.status', $1, '{}', now() - interval '30 seconds')",
        str(stuck),
    )
    async with httpx.AsyncClient(base_url=relay_asleep.base_url, timeout=10) as client:

        async def refused() -> httpx.Response | None:
            response = await client.post("/api/orders/execute", json=ORDER)
            return response if response.status_code != 202 else None

        response = await wait_for(refused, timeout=10, interval=0.1, what="a refusal, publishing behind")
        assert response.status_code == 429 and response.json()["error"] == "queue_full", response.text
        assert 20 <= int(response.headers["retry-after"]) <= 30, response.headers
        await fetch(relay_asleep.settings, "DELETE FROM outbox WHERE key = $1", str(stuck))

        async def accepted() -> bool:
            return (await client.post("/api/orders/execute", json=ORDER)).status_code == 202

        await wait_for(accepted, timeout=10, interval=0.1, what="orders taken once publishing caught up")
