"""Liveness drives restarts: a process whose essential task has died exits with EXIT_STATUS, so that its
supervisor starts it again, instead of lingering alive and useless. Here the task dies, not the process:
the notifier's `order.status` consumer task raises inside itself (tests/fixtures/faultinject) while a client
follows a real order through the real stages; the notifier exits, is started again (as supervisord would),
and the client, reconnecting with lastSeq, ends with every event of the order once. A stage (a faust worker,
whose shutdown path differs) whose heartbeat task dies exits the same way."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.runtime.config import Settings
from shared.runtime.tasks import EXIT_STATUS
from tests.fixtures.faultinject import exit_status, inject, restart_hooked
from tests.fixtures.orders import wait_status
from tests.fixtures.stack import Stack, log_events, running_stack
from tests.integration.test_order_flow import HAPPY_PATH, place

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

READ_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
async def slow_stack(infrastructure: Settings) -> AsyncIterator[Stack]:
    """Swaps of 3-4 s, so that the notifier is gone while the order is still in flight; its consumer task
    breaks when the test says."""
    async with running_stack(
        MOCK_EXECUTION_LATENCY_MIN_MS="3000", MOCK_EXECUTION_LATENCY_MAX_MS="4000", SWAP_WINDOW_MS="6000"
    ) as stack:
        await restart_hooked(stack, "notifier", "hub")
        yield stack


async def read_events(ws: ClientConnection, until_seq: int | None = None) -> list[dict[str, Any]]:
    """The order's events from the socket (the snapshot's logs, then each status), until `until_seq` or
    until the socket closes; a test failure if neither happens within READ_TIMEOUT_S (heartbeats keep
    coming from a notifier that lingers)."""
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            while until_seq is None or not events or events[-1]["seq"] < until_seq:
                message = json.loads(await ws.recv())
                if message["type"] == "snapshot":
                    events += message["logs"]
                elif message["type"] == "status":
                    events.append(message)
    except ConnectionClosed:
        pass
    except TimeoutError:
        raise AssertionError(f"neither seq {until_seq} nor a close within {READ_TIMEOUT_S} s") from None
    return events


async def test_a_notifier_whose_consumer_task_dies_exits_and_a_client_resumes_exactly(
    slow_stack: Stack,
) -> None:
    stack = slow_stack
    notifier = stack.processes["notifier"]
    assert notifier.popen is not None
    order_id = await place(stack)
    async with connect(f"{stack.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        events = await read_events(ws, until_seq=3)  # building: the 3-4 s swap is still to come
        inject(notifier)
        events += await read_events(ws)  # whatever came before the hub died; then the socket closes
    assert await exit_status(notifier, timeout=30) == EXIT_STATUS, notifier.tail()
    died = log_events(stack, "task.essential_died", "notifier")
    assert [(line["task"], line["error"]) for line in died] == [
        ("order-status-consumer", "RuntimeError('faultinject: the order.status consumer broke')")
    ]
    assert events[-1]["status"] != "confirmed", "the notifier was gone while the order was in flight"

    notifier.start()  # as supervisord would
    await stack.wait_ready(["notifier"])
    async with connect(f"{stack.ws_url}?orderId={order_id}&lastSeq={events[-1]['seq']}") as ws:
        events += await read_events(ws)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5], "every event once, in order"
    assert [e["status"] for e in events] == HAPPY_PATH and ws.close_code == 1000


async def test_a_stage_whose_heartbeat_task_dies_exits_and_its_restart_takes_orders(
    slow_stack: Stack,
) -> None:
    """The same for a faust stage: its worker's shutdown ends the process with `SystemExit(0)`; it still
    exits with EXIT_STATUS."""
    stack = slow_stack
    await restart_hooked(stack, "router", "heartbeat")
    router = stack.processes["router"]
    assert router.popen is not None
    inject(router)
    assert await exit_status(router, timeout=60) == EXIT_STATUS, router.tail()
    died = log_events(stack, "task.essential_died", "router")
    assert [(line["task"], line["error"]) for line in died] == [
        ("heartbeat", "RuntimeError('faultinject: the heartbeat broke')")
    ]
    router.start()
    await stack.wait_ready()
    assert await wait_status(stack, await place(stack), timeout=60) == "confirmed"


async def test_a_notifier_stopped_on_purpose_has_no_essential_task_die(slow_stack: Stack) -> None:
    """Stopping cancels the consumer task: a stop, not a death. (Were it taken for one, the process would
    exit with EXIT_STATUS, not by the SIGTERM uvicorn re-raises.)"""
    notifier = slow_stack.processes["notifier"]
    died = len(log_events(slow_stack, "task.essential_died", "notifier"))
    assert notifier.stop() == -signal.SIGTERM, notifier.tail()
    assert len(log_events(slow_stack, "task.essential_died", "notifier")) == died
