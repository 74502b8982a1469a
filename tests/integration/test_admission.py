"""Admission control against the real pipeline: under overload, what is accepted finishes and the rest is
refused at once with 429 `queue_full` and a `Retry-After`.

The stack's executor takes 4 swaps at once of 400-600 ms each (8 orders/s); orders must finish within 8 s
and may wait 3 s for the pipeline. The test offers 5 times that for 6 seconds, on a fixed schedule that does
not wait for answers (open loop), and then follows every accepted order to its end."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fixtures.execution import ORDER, wait_terminal
from tests.fixtures.stack import Stack, create_stack, destroy_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE_PER_S = 40
DURATION_S = 6


@pytest.fixture(scope="module")
async def small(infrastructure: object) -> AsyncIterator[Stack]:
    stack = await create_stack(
        QUEUE_CONCURRENCY="4",
        MOCK_EXECUTION_LATENCY_MIN_MS="400",
        MOCK_EXECUTION_LATENCY_MAX_MS="600",
        MOCK_PRICE_MOVE_BPS="0",  # no slippage failure: every accepted order must confirm
        SWAP_WINDOW_MS="2000",
        ORDER_DEADLINE_MS="8000",
        ADMISSION_MAX_WAIT_MS="3000",
        ADMISSION_SAMPLE_INTERVAL_MS="100",
    )
    try:
        yield stack
    finally:
        await destroy_stack(stack)


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
