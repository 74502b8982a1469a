"""The notifier's WebSocket contract against real processes, Kafka and Postgres.

Most tests drive a test-owned order exactly the way the stages do (`shared.store.steps.OrderSteps`: the
conditional UPDATE with its outbox row, then the event on the run's `order.status`), so that
"mid-stream" is a fact of the test, not a timing accident. Extra notifier processes run next to the stack's
own one with their own settings (fast heartbeat, small queues, the test-only snapshot hold).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from shared.domain.events import StatusEvent
from shared.domain.status import OrderStatus
from shared.runtime.clock import utcnow
from tests.fixtures.driver import Driver, driving
from tests.fixtures.orders import metric_value
from tests.fixtures.stack import Process, Stack, free_port, wait_for

pytestmark = pytest.mark.integration

LIFECYCLE = [OrderStatus.ROUTING, OrderStatus.BUILDING, OrderStatus.SUBMITTED, OrderStatus.CONFIRMED]


# --- driving test-owned orders ------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def driver(stack: Stack) -> AsyncIterator[Driver]:
    async with driving(stack) as test_orders:
        yield test_orders


# --- extra notifier processes -------------------------------------------------------------------------


@dataclass
class Notifier:
    name: str
    port: int
    env: dict[str, str]
    proc: Process | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/orders/execute"

    def start(self, stack: Stack) -> None:
        self.proc = stack.start_service(
            self.name, module="notifier", ready_port=self.port, NOTIFIER_PORT=str(self.port), **self.env
        )

    def log(self) -> str:
        assert self.proc is not None
        return self.proc.log_path.read_text(errors="replace") if self.proc.log_path.exists() else ""

    async def metric(self, name: str) -> float:
        return await metric_value(self.port, name)


@dataclass
class Notifiers:
    plain: Notifier  # defaults, small socket buffers: the slow-client cut, the second notifier, the SIGKILL
    fast: Notifier  # 400 ms heartbeat, three connections per process at most
    hold: Notifier  # the test-only hold between subscribing and reading the snapshot


@pytest.fixture(scope="module")
async def notifiers(stack: Stack) -> AsyncIterator[Notifiers]:
    started = Notifiers(
        plain=Notifier(
            "notifier-plain",
            free_port(),
            {"WS_SEND_QUEUE": "4096", "WS_WRITE_BUFFER_BYTES": "16384", "WS_SEND_TIMEOUT_MS": "2000"},
        ),
        fast=Notifier(
            "notifier-fast",
            free_port(),
            {"PING_INTERVAL": "400", "PONG_TIMEOUT": "400", "WS_MAX_CONNECTIONS": "3"},
        ),
        hold=Notifier("notifier-hold", free_port(), {"WS_TEST_HOLD_SNAPSHOT": "true"}),
    )
    for notifier in (started.plain, started.fast, started.hold):
        notifier.start(stack)
    await stack.wait_ready([started.plain.name, started.fast.name, started.hold.name])
    yield started
    for notifier in (started.plain, started.fast, started.hold):
        if notifier.proc is not None:
            notifier.proc.stop()


# --- clients --------------------------------------------------------------------------------------------


async def recv(ws: ClientConnection, timeout: float = 20.0) -> dict[str, Any]:
    """The next message that is not a heartbeat."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] != "ping":
            return dict(message)


async def read_to_close(ws: ClientConnection, timeout: float = 20.0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    try:
        while True:
            messages.append(await recv(ws, timeout))
    except ConnectionClosed:
        return messages


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [int(m["seq"]) for m in messages]


# --- 1. refusals of the request itself (invalid and unknown orderId: tests/integration/test_http.py) -------


@pytest.mark.parametrize("query", ["", "orderId=", "orderId=12345", "orderId={order}&lastSeq=three"])
async def test_a_malformed_request_gets_invalid_body_then_4400(
    stack: Stack, driver: Driver, query: str
) -> None:
    order_id = await driver.create()
    async with connect(f"{stack.ws_url}?{query.format(order=order_id)}", open_timeout=10) as ws:
        messages = await read_to_close(ws)
    assert [(m["type"], m["error"]) for m in messages] == [("error", "invalid_body")]
    assert ws.close_code == 4400


# --- 2. the snapshot-then-live race ----------------------------------------------------------------------


async def test_an_event_landing_between_subscribe_and_snapshot_is_sent_once(
    driver: Driver, notifiers: Notifiers
) -> None:
    """Given a notifier that holds each connection after subscribing until an event has landed, when the
    order advances in that window, the snapshot already has the event (stages commit before publishing)
    and the queued copy must be dropped; the later events follow without a gap."""
    order_id = await driver.create()
    async with connect(f"{notifiers.hold.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        # The handshake completed, so the subscription exists; the snapshot is not read yet.
        await driver.advance(order_id, OrderStatus.ROUTING)
        snapshot = await recv(ws)
        assert (snapshot["type"], snapshot["seq"], seqs(snapshot["logs"])) == ("snapshot", 2, [1, 2])
        for status in LIFECYCLE[1:]:
            await driver.advance(order_id, status)
        live = await read_to_close(ws)
    assert [m["type"] for m in live] == ["status"] * 3
    assert seqs(live) == [3, 4, 5], "seq 2 was queued and in the snapshot: sent once, then 3..5"
    assert ws.close_code == 1000


# --- 3. resume --------------------------------------------------------------------------------------------


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


# --- 4. terminal ------------------------------------------------------------------------------------------


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


# --- 5. heartbeat ------------------------------------------------------------------------------------------


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


# --- 6. limits ----------------------------------------------------------------------------------------------


async def test_the_fourth_connection_per_order_and_ip_is_refused_with_429(
    stack: Stack, driver: Driver
) -> None:
    """Through the proxy (the notifier reads the client IP from X-Forwarded-For, the proxy being trusted)."""
    order_id = await driver.create()
    url = f"{stack.ws_url}?orderId={order_id}"
    clients = [await connect(url, open_timeout=10) for _ in range(3)]
    try:
        for ws in clients:
            assert (await recv(ws))["type"] == "snapshot"
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, open_timeout=10)
        response = refused.value.response
        assert response.status_code == 429
        body = json.loads(response.body or b"{}")
        assert body["error"] == "rate_limited" and body["correlationId"]
        other = await driver.create()  # the limit is per order
        async with connect(f"{stack.ws_url}?orderId={other}", open_timeout=10) as ws:
            assert (await recv(ws))["type"] == "snapshot"
    finally:
        for ws in clients:
            await ws.close()

    async def admitted_again() -> bool:  # a slot frees once the server has seen a close
        try:
            async with connect(url, open_timeout=10) as ws:
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


# --- 7. more than one notifier -----------------------------------------------------------------------------


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


# --- 8. metrics ---------------------------------------------------------------------------------------


async def test_the_notifier_counts_connections_deliveries_and_their_latency(
    driver: Driver, notifiers: Notifiers
) -> None:
    notifier = notifiers.hold  # only this test's clients are delivered to on it from here on
    order_id = await driver.create()
    before = {
        name: await notifier.metric(name)
        for name in ("ws_events_delivered_total", "ws_delivery_seconds_count", "ws_connections_open")
    }
    async with connect(f"{notifier.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        assert await notifier.metric("ws_connections_open") == before["ws_connections_open"] + 1
        await driver.advance(order_id, OrderStatus.ROUTING)  # releases the hold; in the snapshot
        await recv(ws)
        for status in LIFECYCLE[1:]:
            await driver.advance(order_id, status)
        live = await read_to_close(ws)
    assert len(live) == 3

    async def settled() -> bool:
        return await notifier.metric("ws_connections_open") == before["ws_connections_open"]

    await wait_for(settled, timeout=20, what="the connection gauge to drop back")
    assert await notifier.metric("ws_events_delivered_total") == before["ws_events_delivered_total"] + 3
    assert await notifier.metric("ws_delivery_seconds_count") == before["ws_delivery_seconds_count"] + 3


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
