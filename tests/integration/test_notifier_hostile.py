"""What a hostile or broken WebSocket client can send the notifier: frames that are not JSON, binary frames
and broken pings change nothing for it (they count as signs of life); a frame past the 64 KiB limit closes
that socket with 1009, and the notifier goes on serving everyone else."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.driver import driving
from tests.fixtures.stack import Stack

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
        assert closed.value.rcvd is not None and closed.value.rcvd.code == MESSAGE_TOO_BIG
        assert json.loads(await asyncio.wait_for(bystander.recv(), 10))["type"] == "snapshot"
        await bystander.send('{"type":"ping"}')
        while json.loads(await asyncio.wait_for(bystander.recv(), 10))["type"] != "pong":
            pass
