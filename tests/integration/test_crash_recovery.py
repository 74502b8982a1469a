"""I1 and I2 under a crash: SIGKILL the executor with hundreds of swaps in flight, start it again, and every
order still finishes, exactly as the venue's ledger says, with one swap at most and a gapless seq."""

from __future__ import annotations

import asyncio
import signal

import pytest

from shared.messaging.topics import ORDER_STATUS
from tests.fixtures.execution import (
    assert_consistent_with_ledger,
    assert_gapless,
    count_in_status,
    ledger,
    orders,
    place_many,
    read_topic,
    wait_terminal,
)
from tests.fixtures.orders import fetch
from tests.fixtures.stack import running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

IN_FLIGHT = {
    "RATE_LIMIT": "0",
    "QUEUE_CONCURRENCY": "1000",
    # Swaps outlast placing the orders, so the kill lands while they are in flight and none has settled.
    "MOCK_EXECUTION_LATENCY_MIN_MS": "5000",
    "MOCK_EXECUTION_LATENCY_MAX_MS": "6000",
    "SWAP_WINDOW_MS": "8000",
    "ORDER_DEADLINE_MS": "120000",
    "SWEEP_INTERVAL_MS": "250",
}


async def test_sigkill_of_the_executor_with_200_swaps_in_flight_loses_nothing_and_swaps_once(
    infrastructure: object,
) -> None:
    async with running_stack(**IN_FLIGHT) as stack:
        ids = await place_many(stack, 200)

        async def many_in_flight() -> bool:
            return await count_in_status(stack, ids, "submitted") >= 150

        await wait_for(many_in_flight, timeout=60, interval=0.1, what="150 swaps in flight")
        stack.processes["executor"].kill()
        stack.start_service("executor")

        rows = await wait_terminal(stack, ids, timeout=120)
        assert_consistent_with_ledger(rows, await ledger(stack, ids))
        assert_gapless(rows, await read_topic(stack, ORDER_STATUS))
        assert sum(r["status"] == "confirmed" for r in rows.values()) >= 190, (
            "slippage may fail a few, no more"
        )


async def test_sigterm_lets_the_swaps_in_flight_finish_and_exits_0(infrastructure: object) -> None:
    async with running_stack(
        RATE_LIMIT="0",
        MOCK_EXECUTION_LATENCY_MIN_MS="1500",
        MOCK_EXECUTION_LATENCY_MAX_MS="2000",
        QUEUE_CONCURRENCY="100",
    ) as stack:
        ids = await place_many(stack, 40)

        async def in_flight() -> list[str]:
            rows = await fetch(
                stack.settings,
                "SELECT id FROM orders WHERE status = 'submitted' AND id = ANY($1::uuid[])",
                ids,
            )
            return [str(r["id"]) for r in rows] if len(rows) >= 20 else []

        submitted = await wait_for(in_flight, timeout=60, interval=0.05, what="20 swaps in flight")
        executor = stack.processes["executor"]
        assert executor.popen is not None
        executor.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(executor.popen.wait, 30) == 0
        # finished by the process that was stopping, in their first attempt: nothing was left to a sweep
        rows = await orders(stack, submitted)
        assert {(r["status"], r["attempt"]) for r in rows.values()} <= {("confirmed", 1), ("failed", 1)}
        assert_consistent_with_ledger(rows, await ledger(stack, submitted))

        stack.start_service("executor")
        rows = await wait_terminal(stack, ids, timeout=60)
        assert_consistent_with_ledger(rows, await ledger(stack, ids))


async def test_sigkill_of_the_router_mid_routing_leaves_no_order_stuck(infrastructure: object) -> None:
    """Quotes take 1-1.5 s, so a hundred orders sit in routing when the router dies; offsets of some of
    them are already committed (the router's pool), so only the sweep can bring those back."""
    async with running_stack(
        RATE_LIMIT="0",
        MOCK_QUOTE_LATENCY_MIN_MS="1000",
        MOCK_QUOTE_LATENCY_MAX_MS="1500",
        STALE_STEP_MS="2000",
        SWEEP_INTERVAL_MS="250",
    ) as stack:
        ids = await place_many(stack, 100)

        async def routing() -> bool:
            return await count_in_status(stack, ids, "routing") >= 30

        await wait_for(routing, timeout=60, interval=0.05, what="30 orders in routing")
        stack.processes["router"].kill()
        stack.start_service("router")

        rows = await wait_terminal(stack, ids, timeout=90)
        assert_consistent_with_ledger(rows, await ledger(stack, ids))
        assert_gapless(rows, await read_topic(stack, ORDER_STATUS))
        assert sum(r["status"] == "confirmed" for r in rows.values()) >= 95
