"""The notifier's WebSocket contract against real processes, Kafka and Postgres.

Most tests drive a test-owned order exactly the way the stages do (`shared.store.steps.OrderSteps`: the
conditional UPDATE with its outbox row, then the event on the run's `order.status`), so that
"mid-stream" is a fact of the test, not a timing accident. Extra notifier processes run next to the stack's
own one with their own settings (fast heartbeat, small queues, a stalled link to Postgres).
"""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.domain.status import OrderStatus
from tests.fixtures.driver import Driver
from tests.fixtures.notifier import LIFECYCLE, Notifier, Notifiers, read_to_close, recv, seqs
from tests.fixtures.notifier import driver_fixture as driver_fixture  # the `driver` fixture
from tests.fixtures.notifier import notifiers_fixture as notifiers_fixture  # the `notifiers` fixture
from tests.fixtures.stack import Stack, free_port
from tests.fixtures.throwaway import CuttableLink

pytestmark = pytest.mark.integration


# --- refusals of the request itself (invalid and unknown orderId: tests/integration/test_http.py) -------


@pytest.mark.parametrize("query", ["", "orderId=", "orderId=12345", "orderId={order}&lastSeq=three"])
async def test_a_malformed_request_gets_invalid_body_then_4400(
    stack: Stack, driver: Driver, query: str
) -> None:
    order_id = await driver.create()
    async with connect(f"{stack.ws_url}?{query.format(order=order_id)}", open_timeout=10) as ws:
        messages = await read_to_close(ws)
    assert [(m["type"], m["error"]) for m in messages] == [("error", "invalid_body")]
    assert ws.close_code == 4400


# --- the snapshot-then-live race ----------------------------------------------------------------------


async def test_an_event_landing_between_subscribe_and_snapshot_is_sent_once(
    stack: Stack, driver: Driver
) -> None:
    """Given a notifier whose Postgres link is stalled while a client connects (its subscription exists,
    its snapshot query waits on the link), when the order advances in that window, the snapshot already has
    the event (stages commit before publishing) and the queued copy must be dropped; the later events follow
    without a gap. A second client of the same notifier, connected before, shows when the event is queued."""
    host, port = stack.settings.database_address
    link = CuttableLink(host, port)
    await link.start()
    linked = stack.settings.database_url.replace(f"{host}:{port}", f"127.0.0.1:{link.port}")
    notifier = Notifier("notifier-linked", free_port(), {"DATABASE_URL": linked})
    notifier.start(stack)
    try:
        await stack.wait_ready([notifier.name])
        order_id = await driver.create()
        url = f"{notifier.ws_url}?orderId={order_id}"
        async with connect(url, open_timeout=10) as witness:
            assert (await recv(witness))["seq"] == 1
            link.stall()
            async with connect(url, open_timeout=10) as ws:
                # The handshake completed, so the subscription exists; the snapshot is not read yet.
                await driver.advance(order_id, OrderStatus.ROUTING)
                assert (await recv(witness))["seq"] == 2  # offered to every subscription of the order
                link.resume()
                snapshot = await recv(ws)
                assert (snapshot["type"], snapshot["seq"], seqs(snapshot["logs"])) == ("snapshot", 2, [1, 2])
                for status in LIFECYCLE[1:]:
                    await driver.advance(order_id, status)
                live = await read_to_close(ws)
        assert [m["type"] for m in live] == ["status"] * 3
        assert seqs(live) == [3, 4, 5], "seq 2 was queued and in the snapshot: sent once, then 3..5"
        assert ws.close_code == 1000
    finally:
        link.resume()
        assert notifier.proc is not None
        notifier.proc.stop()
        await link.cut()


# --- resume --------------------------------------------------------------------------------------------


async def test_a_client_reconnecting_with_last_seq_continues_exactly(stack: Stack, driver: Driver) -> None:
    order_id = await driver.create()
    async with connect(f"{stack.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        assert (await recv(ws))["seq"] == 1
        await driver.advance(order_id, OrderStatus.ROUTING)
        first = await recv(ws)
    await driver.advance(order_id, OrderStatus.BUILDING)  # while the client is away

    async with connect(f"{stack.ws_url}?orderId={order_id}&lastSeq={first['seq']}", open_timeout=10) as ws:
        snapshot = await recv(ws)
        await driver.advance(order_id, OrderStatus.SUBMITTED)
        await driver.advance(order_id, OrderStatus.CONFIRMED)
        live = await read_to_close(ws)
    assert first["seq"] == 2
    assert (snapshot["seq"], seqs(snapshot["logs"])) == (3, [3])
    assert seqs(live) == [4, 5] and ws.close_code == 1000


async def test_a_notifier_killed_mid_stream_loses_and_repeats_nothing(
    stack: Stack, driver: Driver, notifiers: Notifiers
) -> None:
    """SIGKILL the client's notifier between two events; events land while it is down; the client
    reconnects with lastSeq to the restarted process and ends with every seq exactly once."""
    notifier = notifiers.plain
    order_id = await driver.create()
    seen: list[int] = []
    async with connect(f"{notifier.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        seen += [(await recv(ws))["seq"]]
        await driver.advance(order_id, OrderStatus.ROUTING)
        seen += [(await recv(ws))["seq"]]
        assert notifier.proc is not None
        notifier.proc.kill()
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    await driver.advance(order_id, OrderStatus.BUILDING)
    await driver.advance(order_id, OrderStatus.SUBMITTED)

    notifier.start(stack)
    await stack.wait_ready([notifier.name])
    async with connect(f"{notifier.ws_url}?orderId={order_id}&lastSeq={seen[-1]}", open_timeout=10) as ws:
        snapshot = await recv(ws)
        seen += seqs(snapshot["logs"])
        await driver.advance(order_id, OrderStatus.CONFIRMED)
        live = await read_to_close(ws)
    seen += seqs(live)
    assert seen == [1, 2, 3, 4, 5]
    assert live[-1]["status"] == "confirmed" and ws.close_code == 1000


# --- terminal ------------------------------------------------------------------------------------------


async def test_a_failed_order_sends_its_reason_then_closes_and_a_late_client_gets_the_snapshot(
    stack: Stack, driver: Driver
) -> None:
    order_id = await driver.create()
    async with connect(f"{stack.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        await recv(ws)
        await driver.advance(order_id, OrderStatus.ROUTING)
        await driver.advance(
            order_id, OrderStatus.FAILED, failure_reason="no route: both venues down", error="no_route"
        )
        live = await read_to_close(ws)
    assert ws.close_code == 1000
    failed = live[-1]
    assert (failed["type"], failed["status"], failed["failureReason"], failed["error"]) == (
        "status",
        "failed",
        "no route: both venues down",
        "no_route",
    )

    async with connect(f"{stack.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        late = await read_to_close(ws)
    assert [m["type"] for m in late] == ["snapshot"] and late[0]["status"] == "failed"
    assert ws.close_code == 1000
