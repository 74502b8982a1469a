"""The notifier SIGKILLed while a real order is in flight through the real router and executor, behind the
real proxy: the client reconnects to the same public address with lastSeq and ends with every event once.
A dedicated stack with 1.5-2 s swaps makes sure the kill lands mid-stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.runtime.config import Settings
from tests.fixtures.stack import Stack, running_stack
from tests.integration.test_order_flow import HAPPY_PATH, place

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
async def slow_stack(infrastructure: Settings) -> AsyncIterator[Stack]:
    async with running_stack(
        MOCK_EXECUTION_LATENCY_MIN_MS="1500", MOCK_EXECUTION_LATENCY_MAX_MS="2000"
    ) as started:
        yield started


async def test_a_client_resumes_exactly_after_its_notifier_is_killed_mid_order(slow_stack: Stack) -> None:
    stack = slow_stack
    order_id = await place(stack)
    events: list[dict[str, Any]] = []
    async with connect(f"{stack.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        snapshot = json.loads(await ws.recv())
        events += snapshot["logs"]
        while events[-1]["seq"] < 3:  # building: the swap (1.5-2 s) is still to come
            message = json.loads(await ws.recv())
            if message["type"] == "status":
                events.append(message)
        stack.processes["notifier"].kill()
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()

    stack.start_service("notifier")
    await stack.wait_ready(["notifier"])
    async with connect(f"{stack.ws_url}?orderId={order_id}&lastSeq={events[-1]['seq']}") as ws:
        snapshot = json.loads(await ws.recv())
        events += snapshot["logs"]
        try:
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "status":
                    events.append(message)
        except ConnectionClosed:
            pass
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5], "every event once, in order"
    assert [e["status"] for e in events] == HAPPY_PATH and ws.close_code == 1000
