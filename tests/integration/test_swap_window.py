"""A swap's validity window starts when the swap starts: orders queued for an executor slot do not expire
while they wait.

One slot, swaps of 400-600 ms, a window of 1 s: ten orders placed at once queue for up to ~5 s. Had the
window started when the order reached the executor, most would expire (blockhash_expired) and be retried."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fixtures.execution import place_many, wait_terminal
from tests.fixtures.stack import Stack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.serial]


@pytest.fixture(scope="module")
async def one_slot(infrastructure: object) -> AsyncIterator[Stack]:
    async with running_stack(
        QUEUE_CONCURRENCY="1",
        MOCK_EXECUTION_LATENCY_MIN_MS="400",
        MOCK_EXECUTION_LATENCY_MAX_MS="600",
        MOCK_PRICE_MOVE_BPS="0",
        SWAP_WINDOW_MS="1000",
        ORDER_DEADLINE_MS="60000",
    ) as stack:
        yield stack


async def test_orders_waiting_for_a_slot_swap_on_their_first_attempt(one_slot: Stack) -> None:
    ids = await place_many(one_slot, 10, parallel=10)
    rows = await wait_terminal(one_slot, ids, timeout=60)
    outcomes = sorted((r["status"], r["attempt"], r["error"]) for r in rows.values())
    assert outcomes == [("confirmed", 1, None)] * 10
    retried = [str(r["id"]) for r in rows.values() if any(e["status"] == "pending" for e in r["logs"][1:])]
    assert retried == []
