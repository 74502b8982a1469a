"""The notifier's WebSocket fan-out against real processes, Kafka and Postgres: two notifiers serving the
same orders, the delivery metrics, and two hundred clients on one notifier."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from tests.fixtures.driver import Driver
from tests.fixtures.notifier import LIFECYCLE, Notifiers, read_to_close, recv, seqs
from tests.fixtures.notifier import driver_fixture as driver_fixture  # the `driver` fixture
from tests.fixtures.notifier import notifiers_fixture as notifiers_fixture  # the `notifiers` fixture
from tests.fixtures.stack import Stack, wait_for

pytestmark = pytest.mark.integration


# --- more than one notifier -----------------------------------------------------------------------------


async def test_two_notifiers_each_serve_their_own_clients_every_event(
    stack: Stack, driver: Driver, notifiers: Notifiers
) -> None:
    """Every notifier reads every partition and filters by its own subscriptions: clients of the same orders,
    spread over the stack's notifier (through the proxy) and a second process, all get every live event."""
    orders = [await driver.create() for _ in range(6)]
    urls = [stack.ws_url, notifiers.plain.ws_url]
    clients = [await connect(f"{urls[i % 2]}?orderId={o}", open_timeout=10) for o in orders for i in range(2)]
    try:
        for ws in clients:
            assert (await recv(ws))["seq"] == 1
        for status in LIFECYCLE:
            await asyncio.gather(*(driver.advance(o, status) for o in orders))
        streams = await asyncio.gather(*(read_to_close(ws) for ws in clients))
    finally:
        for ws in clients:
            await ws.close()
    for ws, stream in zip(clients, streams, strict=True):
        assert seqs(stream) == [2, 3, 4, 5] and ws.close_code == 1000


# --- metrics ---------------------------------------------------------------------------------------


async def test_the_notifier_counts_connections_deliveries_and_their_latency(
    driver: Driver, notifiers: Notifiers
) -> None:
    notifier = notifiers.fast  # only this test's clients are delivered to on it in this module
    order_id = await driver.create()
    before = {
        name: await notifier.metric(name)
        for name in ("ws_events_delivered_total", "ws_delivery_seconds_count", "ws_connections_open")
    }
    async with connect(f"{notifier.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        assert await notifier.metric("ws_connections_open") == before["ws_connections_open"] + 1
        assert (await recv(ws))["type"] == "snapshot"  # not a delivery of an event
        for status in LIFECYCLE:
            await driver.advance(order_id, status)
        live = await read_to_close(ws)
    assert len(live) == 4

    async def settled() -> bool:
        return await notifier.metric("ws_connections_open") == before["ws_connections_open"]

    await wait_for(settled, timeout=20, what="the connection gauge to drop back")
    assert await notifier.metric("ws_events_delivered_total") == before["ws_events_delivered_total"] + 4
    assert await notifier.metric("ws_delivery_seconds_count") == before["ws_delivery_seconds_count"] + 4


async def test_two_hundred_clients_on_one_notifier_all_get_their_complete_streams(
    stack: Stack, driver: Driver
) -> None:
    """A modest load check through the proxy (the 1,000-client run is benchmarks/ws_fanout.py)."""
    orders = list(await asyncio.gather(*(driver.create() for _ in range(200))))
    clients = list(
        await asyncio.gather(*(connect(f"{stack.ws_url}?orderId={o}", open_timeout=30) for o in orders))
    )
    try:
        snapshots = await asyncio.gather(*(recv(ws) for ws in clients))
        assert {s["seq"] for s in snapshots} == {1}
        for status in LIFECYCLE:
            await asyncio.gather(*(driver.advance(o, status) for o in orders))
        streams = await asyncio.gather(*(read_to_close(ws, timeout=30) for ws in clients))
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))
    assert all(seqs(stream) == [2, 3, 4, 5] for stream in streams)
    assert all(ws.close_code == 1000 for ws in clients)
