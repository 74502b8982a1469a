"""The load generator: several worker processes, each a uvloop loop with a lean HTTP/1.1 keep-alive client
(asyncio.Protocol + httptools), POSTing orders on a fixed schedule.

Open loop: request i of the run is due at start + i / rate whatever happened to the ones before it; the
workers take every W-th request. A due request takes an idle connection, or opens one while the worker has
fewer than `connections` requests in flight, or waits for one. Its latency is counted from when it was DUE,
so time spent waiting in the generator (because the server answers slowly) counts as latency, as it does for
a real client. `lag` (actual send - due) says how late the generator itself was; a large lag with a fast
server would mean the generator is the ceiling, and the self-check (`selfcheck.py`) measures that ceiling.

Closed loop (rate 0) is only for placing orders as fast as the server takes them (scenario d's setup).

A sample of accepted orders (1 in `ws_every`) is followed over a real WebSocket until its terminal status,
for the end-to-end latency a client observes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast

import httptools
import orjson
import uvloop
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from benchmarks.bench.stats import TERMINAL, error_code

ORDER_PATH = "/api/orders/execute"


def raise_nofile(wanted: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it): to `wanted` where allowed (root), else
    to the hard limit. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((max(wanted, hard), max(wanted, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
        except (ValueError, OSError):
            continue
    return soft


@dataclass(frozen=True)
class LoadPlan:
    host: str
    port: int
    body: bytes
    count: int  # requests over all workers
    rate: float  # requests/s over all workers; 0 = closed loop (`connections` back-to-back lanes)
    workers: int = 2
    connections: int = 256  # per worker: the most requests in flight
    timeout: float = 30.0  # per request, from its due time; past it the request counts as `client_timeout`
    path: str = ORDER_PATH
    ws_every: int = 0  # follow 1 in N accepted orders over WebSocket; 0: none
    ws_max: int = 0  # at most this many followers per worker
    ws_timeout: float = 60.0  # a follower gives up this long after its POST was due


@dataclass(frozen=True)
class Sent:
    """One request. `at` is its due time on the wall clock; `latency` (s, from due to the whole answer) and
    `lag` (s, from due to the send) are None when it got no answer or was never sent."""

    at: float
    latency: float | None
    lag: float | None
    status: int  # 0: no HTTP answer (see `code`)
    code: str  # the refusal's error code, or the transport error; "" for a 2xx
    order_id: str | None = None
    retry_after: bool = False


@dataclass(frozen=True)
class Followed:
    """One order followed over WebSocket: `done` is the wall time its terminal status reached the client."""

    order_id: str
    at: float
    done: float | None
    status: str | None
    error: str | None
    note: str = ""  # why it stopped without a terminal status


@dataclass
class LoadResult:
    plan: LoadPlan
    start: float  # wall time of request 0's due time
    sent: list[Sent] = field(default_factory=list)
    followed: list[Followed] = field(default_factory=list)
    cpu_s: float = 0.0  # the generator processes' own CPU (user + system)


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes, bool, bool]] | None = None
        self.body = bytearray()
        self.retry_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = bytearray()
        self.retry_after = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            answer = (self.parser.get_status_code(), bytes(self.body), self.parser.should_keep_alive())
            self.waiter.set_result((*answer, self.retry_after))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes, bool, bool]]:
        assert self.transport is not None
        self.waiter = self.loop.create_future()
        self.transport.write(data)
        return self.waiter

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Worker:
    """One generator process's share of the plan: requests index, index + W, index + 2W, ..."""

    def __init__(self, plan: LoadPlan, index: int) -> None:
        self.plan = plan
        self.index = index
        self.loop = asyncio.get_running_loop()
        self.idle: list[HttpConnection] = []
        self.gate = asyncio.Semaphore(plan.connections)
        self.sent: list[Sent] = []
        self.followed: list[Followed] = []
        self.followers: set[asyncio.Task[None]] = set()
        self.accepted = 0
        head = (
            f"POST {plan.path} HTTP/1.1\r\nHost: {plan.host}:{plan.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(plan.body)}\r\nIdempotency-Key: "
        )
        self.head = head.encode()
        self.tail = b"\r\n\r\n" + plan.body
        self.offset = time.time() - self.loop.time()  # wall = loop time + offset

    async def _connection(self) -> HttpConnection:
        while self.idle:
            conn = self.idle.pop()
            if conn.usable:
                return conn
        _, conn = await self.loop.create_connection(
            lambda: HttpConnection(self.loop), self.plan.host, self.plan.port
        )
        return conn

    async def one(self, due: float) -> None:
        """Send one POST that was due at loop time `due`, with a fresh Idempotency-Key, and record it."""
        request = self.head + uuid.uuid4().hex.encode() + self.tail
        lag: float | None = None
        try:
            async with asyncio.timeout_at(due + self.plan.timeout), self.gate:
                conn = await self._connection()
                lag = self.loop.time() - due
                try:
                    status, body, keep_alive, retry_after = await conn.request(request)
                except BaseException:
                    conn.close()
                    raise
                if keep_alive:
                    self.idle.append(conn)
                else:
                    conn.close()
        except TimeoutError:
            self.sent.append(Sent(due + self.offset, None, lag, 0, "client_timeout"))
            return
        except (OSError, httptools.HttpParserError) as exc:
            self.sent.append(Sent(due + self.offset, None, lag, 0, type(exc).__name__))
            return
        latency = self.loop.time() - due
        order_id: str | None = None
        code = ""
        if 200 <= status < 300:
            try:
                order_id = str(orjson.loads(body)["orderId"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                code = "no_order_id"
        else:
            code = error_code(body)
        self.sent.append(Sent(due + self.offset, latency, lag, status, code, order_id, retry_after))
        if order_id is not None:
            self._maybe_follow(order_id, due)

    def _maybe_follow(self, order_id: str, due: float) -> None:
        self.accepted += 1
        plan = self.plan
        if (
            not plan.ws_every
            or self.accepted % plan.ws_every
            or len(self.followed) + len(self.followers) >= (plan.ws_max or 1 << 30)
        ):
            return
        task = self.loop.create_task(self.follow(order_id, due))
        self.followers.add(task)
        task.add_done_callback(self.followers.discard)

    async def follow(self, order_id: str, due: float) -> None:
        """Follow one order over WebSocket (through the same proxy) until its terminal status arrives."""
        url = f"ws://{self.plan.host}:{self.plan.port}{self.plan.path}?orderId={order_id}"
        done: float | None = None
        status: str | None = None
        error: str | None = None
        note = ""
        try:
            async with (
                asyncio.timeout_at(due + self.plan.ws_timeout),
                connect(url, ping_interval=None, open_timeout=None, close_timeout=2) as ws,
            ):
                async for raw in ws:
                    message: dict[str, Any] = orjson.loads(raw)
                    kind = message.get("type")
                    if kind == "snapshot" and message.get("status") in TERMINAL:
                        logs = message.get("logs") or [{}]
                        done, status, error = time.time(), str(message["status"]), logs[-1].get("error")
                    elif kind == "status" and message.get("status") in TERMINAL:
                        done, status, error = time.time(), str(message["status"]), message.get("error")
                    if done is not None:
                        break
                else:
                    note = f"closed {ws.close_code}"
        except TimeoutError:
            note = note or "ws_timeout"
        except (OSError, WebSocketException) as exc:
            note = type(exc).__name__
        self.followed.append(Followed(order_id, due + self.offset, done, status, error, note))

    async def run(self, start_wall: float) -> None:
        plan = self.plan
        t0 = start_wall - self.offset
        mine = range(self.index, plan.count, plan.workers)
        tasks: set[asyncio.Task[None]] = set()
        if plan.rate > 0:
            for i in mine:
                due = t0 + i / plan.rate
                delay = due - self.loop.time()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                task = self.loop.create_task(self.one(due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*tasks)
        else:
            await asyncio.sleep(max(0.0, t0 - self.loop.time()))
            todo = iter(mine)

            async def lane() -> None:
                for _ in todo:
                    await self.one(self.loop.time())

            await asyncio.gather(*(lane() for _ in range(plan.connections)))
        for conn in self.idle:
            conn.close()

    async def drain_followers(self) -> None:
        while self.followers:
            await asyncio.gather(*self.followers)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _work(plan: LoadPlan, index: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(plan, index)
    pipe.send("ready")
    start_wall: float = await loop.run_in_executor(None, pipe.recv)
    await worker.run(start_wall)
    pipe.send((worker.sent, _cpu_s()))
    await worker.drain_followers()
    pipe.send((worker.followed, _cpu_s()))


def _worker_main(plan: LoadPlan, index: int, pipe: Connection) -> None:
    raise_nofile()
    uvloop.run(_work(plan, index, pipe))


class Load:
    """A running load: `async with Load(plan) as load:` spawns the workers and starts them together;
    `await load.requests()` returns every request once all are answered or timed out (followers may still
    be running), `await load.follows()` the WebSocket samples."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.pipes: list[Connection] = []
        self.procs: list[BaseProcess] = []
        self.result = LoadResult(plan, start=0.0)
        self._cpu = [0.0] * plan.workers

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    async def _recv_all(self) -> list[Any]:
        loop = asyncio.get_running_loop()
        try:
            return list(await asyncio.gather(*(loop.run_in_executor(None, p.recv) for p in self.pipes)))
        except EOFError:
            raise RuntimeError("a load generator worker died (its traceback is on stderr)") from None

    async def __aenter__(self) -> Load:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
        for index in range(self.plan.workers):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(self.plan, index, theirs), daemon=True)
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)
        await asyncio.wait_for(self._recv_all(), 60)
        self.result.start = time.time() + 0.2
        for pipe in self.pipes:
            pipe.send(self.result.start)
        return self

    async def requests(self) -> list[Sent]:
        for index, (sent, cpu) in enumerate(await self._recv_all()):
            self.result.sent.extend(sent)
            self._cpu[index] = cpu
        self.result.sent.sort(key=lambda s: s.at)
        self.result.cpu_s = sum(self._cpu)
        return self.result.sent

    async def follows(self) -> list[Followed]:
        for index, (followed, cpu) in enumerate(await self._recv_all()):
            self.result.followed.extend(followed)
            self._cpu[index] = cpu
        self.result.cpu_s = sum(self._cpu)
        return self.result.followed

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


async def run_load(plan: LoadPlan) -> LoadResult:
    """The whole load, followers included."""
    async with Load(plan) as load:
        await load.requests()
        await load.follows()
    return load.result
