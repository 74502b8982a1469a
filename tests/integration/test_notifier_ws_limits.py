"""The notifier's WebSocket limits against real processes, Kafka and Postgres: the heartbeat that closes a
silent client, the connections allowed per order and client address and per process, and the slow client
cut off rather than buffered."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from shared.domain.events import StatusEvent
from shared.domain.status import OrderStatus
from shared.runtime.clock import utcnow
from tests.fixtures.clients import loopback_address, ws_from
from tests.fixtures.driver import Driver
from tests.fixtures.notifier import Notifier, Notifiers, recv
from tests.fixtures.notifier import driver_fixture as driver_fixture  # the `driver` fixture
from tests.fixtures.notifier import notifiers_fixture as notifiers_fixture  # the `notifiers` fixture
from tests.fixtures.stack import Stack, wait_for

pytestmark = pytest.mark.integration


# --- heartbeat ------------------------------------------------------------------------------------------


@dataclass
class RawClient:
    """A WebSocket client on the sans-I/O protocol, so the test decides which pongs, if any, go back."""

    protocol: ClientProtocol
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    app_pong: bool
    pings: int = 0
    close_code: int | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def open(cls, url: str, *, app_pong: bool) -> RawClient:
        uri = parse_uri(url)
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        protocol = ClientProtocol(uri)
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        client = cls(protocol, reader, writer, app_pong)
        return client

    async def run(self, until: float, max_pings: int | None = None) -> None:
        """Read until the server closes, `until` (monotonic) passes or `max_pings` came; answer only what
        this client chose to."""
        while self.close_code is None and time.monotonic() < until:
            if max_pings is not None and self.pings >= max_pings:
                break
            try:
                data = await asyncio.wait_for(self.reader.read(65536), max(0.01, until - time.monotonic()))
            except TimeoutError:
                break
            if not data:
                break
            self.protocol.receive_data(data)
            self.protocol.data_to_send()  # drop the protocol's automatic pongs: this client stays silent
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    message = json.loads(bytes(event.data))
                    self.messages.append(message)
                    if message["type"] == "ping":
                        self.pings += 1
                        if self.app_pong:
                            self.protocol.send_text(b'{"type":"pong"}')
                            self.writer.write(b"".join(self.protocol.data_to_send()))
                elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    self.close_code = Close.parse(bytes(event.data)).code
        self.writer.close()


async def test_heartbeat_keeps_answering_clients_and_closes_a_silent_one(
    driver: Driver, notifiers: Notifiers
) -> None:
    """PING_INTERVAL = PONG_TIMEOUT = 400 ms. A client answering only protocol pings (the websockets
    library does that by itself) and one answering only {"type":"pong"} both stay; one answering nothing is
    closed with 4408 after two missed heartbeats."""
    notifier = notifiers.fast
    order_id = await driver.create()
    url = f"{notifier.ws_url}?orderId={order_id}"
    await wait_for(lambda: _no_connections(notifier), timeout=20, what=f"{notifier.name} to have no clients")
    silent = await RawClient.open(url, app_pong=False)
    app_level = await RawClient.open(url, app_pong=True)
    async with connect(url, open_timeout=10) as protocol_level:
        start = time.monotonic()
        silent_run = asyncio.create_task(silent.run(start + 20))
        app_level_run = asyncio.create_task(app_level.run(start + 20, max_pings=6))
        protocol_pings = 0
        while protocol_pings < 6:  # 6 heartbeats, 2.4 s: twice what it takes to cut a silent client (1.2 s)
            if json.loads(await asyncio.wait_for(protocol_level.recv(), 10))["type"] == "ping":
                protocol_pings += 1
        await asyncio.gather(silent_run, app_level_run)
    assert silent.close_code == 4408, silent.messages
    assert silent.messages[-1]["type"] == "error" and silent.messages[-1]["error"] == "heartbeat_timeout"
    assert silent.pings == 2, "closed after exactly two unanswered heartbeats"
    assert app_level.close_code is None and app_level.pings == 6
    assert protocol_level.close_code == 1000, "closed by the client, not by the server"


async def _no_connections(notifier: Notifier) -> bool:
    return await notifier.metric("ws_connections_open") == 0


# --- limits ----------------------------------------------------------------------------------------------


async def test_the_fourth_connection_per_order_and_ip_is_refused_with_429(
    stack: Stack, driver: Driver
) -> None:
    """Through the proxy, from a loopback address of the test's own (the proxy writes the peer it saw into
    X-Forwarded-For, and the notifier believes it, the proxy being trusted)."""
    order_id = await driver.create()
    ip = loopback_address()
    clients = [await ws_from(stack, order_id, ip) for _ in range(3)]
    try:
        for ws in clients:
            assert (await recv(ws))["type"] == "snapshot"
        with pytest.raises(InvalidStatus) as refused:
            await ws_from(stack, order_id, ip)
        response = refused.value.response
        assert response.status_code == 429
        body = json.loads(response.body or b"{}")
        assert body["error"] == "rate_limited" and body["correlationId"]
        other = await driver.create()  # the limit is per order
        async with await ws_from(stack, other, ip) as ws:
            assert (await recv(ws))["type"] == "snapshot"
    finally:
        for ws in clients:
            await ws.close()

    async def admitted_again() -> bool:  # a slot frees once the server has seen a close
        try:
            async with await ws_from(stack, order_id, ip) as ws:
                return (await recv(ws))["type"] == "snapshot"
        except InvalidStatus:
            return False

    await wait_for(admitted_again, timeout=20, interval=0.1, what="a freed slot")


async def test_the_client_ip_comes_from_x_forwarded_for_of_a_trusted_proxy(
    driver: Driver, notifiers: Notifiers
) -> None:
    """The peer (127.0.0.1) is in TRUSTED_PROXIES, so X-Forwarded-For names the client: three from one
    address use up that address's share, another address still gets in."""
    order_id = await driver.create()
    url = f"{notifiers.plain.ws_url}?orderId={order_id}"

    def as_client(ip: str) -> dict[str, str]:
        return {"X-Forwarded-For": f"{ip}, 127.0.0.1"}

    clients = [await connect(url, additional_headers=as_client("203.0.113.9")) for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, additional_headers=as_client("203.0.113.9"))
        assert refused.value.response.status_code == 429
        async with connect(url, additional_headers=as_client("198.51.100.7")) as ws:
            assert (await recv(ws))["type"] == "snapshot"
    finally:
        for ws in clients:
            await ws.close()


async def test_a_notifier_refuses_connections_beyond_its_maximum(
    driver: Driver, notifiers: Notifiers
) -> None:
    notifier = notifiers.fast  # WS_MAX_CONNECTIONS=3
    await wait_for(lambda: _no_connections(notifier), timeout=20, what=f"{notifier.name} to have no clients")
    orders = [await driver.create() for _ in range(4)]
    clients = [await connect(f"{notifier.ws_url}?orderId={o}", open_timeout=10) for o in orders[:3]]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{notifier.ws_url}?orderId={orders[3]}", open_timeout=10)
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body or b"{}")["error"] == "service_unavailable"
    finally:
        for ws in clients:
            await ws.close()


async def test_a_slow_client_is_cut_off_while_another_keeps_receiving(
    driver: Driver, notifiers: Notifiers
) -> None:
    """16 KiB socket buffers and a 2 s send timeout (the queue, 4096, takes the whole burst). Two clients
    follow one order through 2,000 events of ~2 KB; one reads, the other stops reading at once. The reader
    gets every event in order; the other is dropped once a send has waited 2 s, not buffered."""
    notifier = notifiers.plain
    order_id = await driver.create()
    url = f"{notifier.ws_url}?orderId={order_id}"
    total = 2000
    async with (
        connect(url, open_timeout=10, max_queue=1, sock=small_socket(notifier.port)) as slow,
        connect(url, open_timeout=10, max_size=None) as fast,
    ):
        assert (await recv(fast))["seq"] == 1

        async def read_all() -> list[int]:
            got: list[int] = []
            while len(got) < total:
                got.append((await recv(fast, timeout=30))["seq"])
            return got

        reader = asyncio.create_task(read_all())
        padding = "x" * 2000
        await driver.flood(
            [
                StatusEvent(
                    order_id=uuid.UUID(order_id),
                    seq=seq,
                    status=OrderStatus.SUBMITTED,
                    at=utcnow(),
                    max_attempts=3,
                    attempt=seq,
                    failure_reason=padding,
                )
                for seq in range(2, total + 2)
            ]
        )
        got = await reader
        assert got == list(range(2, total + 2)), "the reading client got every event, in order, once"
        await wait_for(lambda: "ws.closed" in notifier.log() and "too_slow" in notifier.log(), what="a cut")
        received = 0
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.recv(), 20)
                received += 1
    assert received < total / 4, f"the slow client was cut, not buffered ({received} delivered)"


def small_socket(port: int) -> socket.socket:
    """A client socket with a small receive window, so that the kernel does not absorb megabytes on the
    slow client's behalf (with `max_queue=1` the client buffers one message, then stops reading)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock
