"""What a hostile or broken WebSocket client can do to the notifiers: frames that are not JSON, binary frames
and broken pings change nothing (they count as signs of life); a frame past the 64 KiB limit closes that
socket (1009), and the notifier goes on serving everyone else; a flood of sockets from one IP meets
WS_MAX_PER_IP across every notifier."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.fixtures.driver import driving
from tests.fixtures.stack import Stack, free_port, wait_for

pytestmark = pytest.mark.integration

MESSAGE_TOO_BIG = 1009


async def pending_order(stack: Stack) -> str:
    """An order that stays open (no router takes it), so its socket stays open for the test."""
    async with driving(stack) as driver:
        return await driver.create()


async def test_garbage_frames_change_nothing_and_a_real_ping_is_still_answered(stack: Stack) -> None:
    order_id = await pending_order(stack)
    async with connect(f"{stack.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "snapshot"
        for garbage in ("not json", '{"type":"ping"', "[]", "\u0000\u2028", b"\x00\xff binary", '{"type":1}'):
            await ws.send(garbage)
        await ws.send('{"type":"ping"}')
        kinds = []
        while "pong" not in kinds:
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
        assert set(kinds) <= {"ping", "pong"}, kinds


async def test_an_oversized_frame_closes_that_socket_only(stack: Stack) -> None:
    order_id = await pending_order(stack)
    url = f"{stack.ws_url}?orderId={order_id}"
    async with connect(url, open_timeout=10) as flooder, connect(url, open_timeout=10) as bystander:
        await asyncio.wait_for(flooder.recv(), 10)  # the snapshot
        await flooder.send("x" * (128 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(flooder.recv(), 10)
        # 1009, or the TCP connection dropped before the close frame reached us while we were still sending
        assert closed.value.rcvd is None or closed.value.rcvd.code == MESSAGE_TOO_BIG, closed.value
        assert json.loads(await asyncio.wait_for(bystander.recv(), 10))["type"] == "snapshot"
        await bystander.send('{"type":"ping"}')
        while json.loads(await asyncio.wait_for(bystander.recv(), 10))["type"] != "pong":
            pass


async def test_one_client_ip_holds_at_most_ws_max_per_ip_sockets_across_two_notifiers(stack: Stack) -> None:
    """WS_MAX_PER_IP=2, counted in Redis: two sockets on one notifier leave none for the same IP on the
    other (429 rate_limited); a closed socket frees its place; another IP is not affected."""
    ports = [free_port(), free_port()]
    started = [
        stack.start_service(
            f"notifier-ip-{n}", module="notifier", ready_port=port, NOTIFIER_PORT=str(port), WS_MAX_PER_IP="2"
        )
        for n, port in enumerate(ports)
    ]
    try:
        await stack.wait_ready([proc.name for proc in started])
        order_id = await pending_order(stack)
        urls = [f"ws://127.0.0.1:{port}/api/orders/execute?orderId={order_id}" for port in ports]

        def client(ip: str) -> dict[str, str]:
            return {"X-Forwarded-For": ip}

        first = await connect(urls[0], additional_headers=client("203.0.113.20"))
        second = await connect(urls[0], additional_headers=client("203.0.113.20"))
        with pytest.raises(InvalidStatus) as refused:
            await connect(urls[1], additional_headers=client("203.0.113.20"))
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body or b"{}")["error"] == "rate_limited"
        other_ip = await connect(urls[1], additional_headers=client("203.0.113.21"))
        await first.close()

        async def admitted_again() -> bool:
            try:
                third = await connect(urls[1], additional_headers=client("203.0.113.20"))
            except InvalidStatus:
                return False
            await third.close()
            return True

        await wait_for(admitted_again, timeout=10, interval=0.2, what="the closed socket's place freed")
        await second.close()
        await other_ip.close()
    finally:
        for proc in started:
            proc.stop()
