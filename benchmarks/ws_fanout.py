"""WebSocket fan-out benchmark, scenario (d) of `make bench`: N concurrent clients on one notifier, each
following its own order live, the clients spread over several processes.

    .venv/bin/python -m benchmarks.ws_fanout [--clients 10000] [--processes 4]
    (or: .venv/bin/python -m benchmarks.bench --scenario d --clients 10000)

Needs the infrastructure of `make infra-up` (Kafka, Postgres, Redis); starts its own stack (fresh database,
topic prefix and ports, like the integration tests) and removes it afterwards.

1. With the router stopped, place N orders (they wait at `pending`, seq 1), with the bench's load
   generator in closed loop.
2. Open N WebSockets through the proxy, one per order, from several processes, and read each snapshot.
3. Start the router: every order goes routing → building → submitted → confirmed, and every event is
   delivered live to its client. Paced (the default, `--pace 200`): each quote takes a fixed 50 ms and the
   router quotes pace * 0.05 orders at once, so the orders start at about `pace` a second, a flow the
   pipeline sustains, and the delivery latency is the notifier's fan-out to N connected clients. With
   `--pace 0` every order is released at once: then the latency mostly measures the pipeline's backlog.
Reports whether every client got its order's complete stream (seq 1..5, once, then close 1000), the delivery
latency (the event's `at` → received by the client, so it includes Kafka, the notifier, the proxy and the
client's own loop), the notifier's RSS and CPU, and the machine's load. Figures, not assertions: the machine
is shared, so read them together with the load printed next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from datetime import UTC, datetime
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import orjson
import uvloop
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from benchmarks.bench import stats
from benchmarks.bench.loadgen import LoadPlan, raise_nofile, run_load
from benchmarks.bench.observe import Watch
from benchmarks.bench.procs import Group, read_proc, with_children
from benchmarks.bench.report import print_fanout
from tests.fixtures.orders import order_body
from tests.fixtures.stack import Stack, running_stack

HANDSHAKES_IN_FLIGHT = 100  # per client process
# infra/nginx.conf.in: one worker with worker_connections 8192, and a proxied WebSocket holds two of them
# (client side, notifier side). Past that the clients connect straight to the notifier's port.
PROXY_WEBSOCKETS = 4000


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def rss_mib(pid: int) -> float:
    got = read_proc(pid)
    return got.rss_kib / 1024 if got else float("nan")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


class Follower:
    """One client: connects, reads the snapshot, then records each live event's delivery latency. Like a
    real client it reconnects with lastSeq if the connection ends abnormally (counted in `reconnects`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seqs: list[int] = []
        self.last_status = ""
        self.latencies: list[float] = []
        self.close_code: int | None = None
        self.reconnects = 0
        self.connected = asyncio.Event()

    async def run(self, gate: asyncio.Semaphore) -> None:
        try:
            while self.close_code != 1000 and self.reconnects <= 3:
                await self._follow(gate)
                self.reconnects += self.close_code != 1000
        finally:
            self.connected.set()

    async def _follow(self, gate: asyncio.Semaphore) -> None:
        url = f"{self.url}&lastSeq={self.seqs[-1]}" if self.seqs else self.url
        try:
            async with gate:
                ws = await connect(url, open_timeout=60, ping_interval=None)
                snapshot = json.loads(await ws.recv())
                self.seqs += [e["seq"] for e in snapshot["logs"]]
            self.connected.set()
            async for raw in ws:
                received = datetime.now(UTC)
                message: dict[str, Any] = json.loads(raw)
                if message["type"] != "status":
                    continue
                self.seqs.append(message["seq"])
                self.last_status = str(message.get("status"))
                at = datetime.fromisoformat(message["at"].replace("Z", "+00:00"))
                self.latencies.append((received - at).total_seconds())
        except (WebSocketException, OSError, TimeoutError):  # ConnectionClosed, a refused handshake, ...
            self.close_code = None
            return
        self.close_code = ws.close_code

    @property
    def complete(self) -> bool:
        return self.seqs == [1, 2, 3, 4, 5] and self.close_code == 1000


async def _clients(urls: list[str], pipe: Connection, limit_s: float) -> None:
    """One client process: open every socket, report how many read their snapshot, then wait for the
    streams to end (or `limit_s` passes) and report what they got."""
    followers = [Follower(u) for u in urls]
    gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
    tasks = [asyncio.create_task(f.run(gate)) for f in followers]
    await asyncio.wait([asyncio.create_task(f.connected.wait()) for f in followers], timeout=limit_s)
    pipe.send(sum(bool(f.seqs) for f in followers))
    _, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    pipe.send(
        {
            "complete": sum(f.complete for f in followers),
            "failed": sum(f.last_status == "failed" for f in followers),
            "unfinished": len(pending),
            "reconnects": sum(f.reconnects for f in followers),
            "latencies": [x for f in followers for x in f.latencies],
        }
    )


def _clients_main(urls: list[str], pipe: Connection, limit_s: float) -> None:
    raise_nofile()
    uvloop.run(_clients(urls, pipe, limit_s))


async def _recv_all(pipes: list[Connection]) -> list[Any]:
    loop = asyncio.get_running_loop()
    return list(await asyncio.gather(*(loop.run_in_executor(None, p.recv) for p in pipes)))


async def place_pending(stack: Stack, count: int, passes: int = 3) -> list[str]:
    """`count` orders placed as fast as ingress takes them (closed loop, 2 x 25 in flight); what was
    refused (a 503 while the machine is saturated) is offered again, up to `passes` times."""
    placed: list[str] = []
    for _ in range(passes):
        plan = LoadPlan(
            host="127.0.0.1",
            port=stack.settings.port,
            body=orjson.dumps(order_body()),
            count=count - len(placed),
            rate=0,
            workers=2,
            connections=25,
            timeout=120,
        )
        result = await run_load(plan)
        placed += [s.order_id for s in result.sent if s.order_id is not None]
        refused = stats.refusals((s.status, s.code) for s in result.sent)
        if refused:
            out(f"  placing: refused {refused}")
        if len(placed) >= count:
            break
    return placed


PACED_QUOTE_MS = 50


async def fanout(clients: int, processes: int = 4, pace: int = 200, limit_s: float = 900) -> dict[str, Any]:
    """Scenario (d); returns its figures (and prints progress lines). Through the proxy up to
    PROXY_WEBSOCKETS clients, straight to the notifier beyond. `pace`: orders started per second once the
    clients are connected (0: all at once)."""
    raise_nofile()  # the stack's processes (notifier, nginx) inherit it
    quote_ms = PACED_QUOTE_MS if pace else 0
    paced = (
        {"ROUTER_CONCURRENCY": str(max(1, round(pace * PACED_QUOTE_MS / 1000))), "QUEUE_CONCURRENCY": "1000"}
        if pace
        else {}
    )
    async with running_stack(
        RATE_LIMIT="0",
        LOG_LEVEL="warning",
        MOCK_QUOTE_LATENCY_MIN_MS=str(quote_ms),
        MOCK_QUOTE_LATENCY_MAX_MS=str(quote_ms or 5),
        MOCK_EXECUTION_LATENCY_MIN_MS="0",
        MOCK_EXECUTION_LATENCY_MAX_MS="5",
        ORDER_DEADLINE_MS="3600000",  # placing and connecting 10,000 takes minutes: no order may expire
        # The scenario parks 10,000 orders behind a stopped router on purpose: admission would refuse them
        # (with a router that never heartbeated it assumes QUOTE_TIMEOUT_MS per quote).
        ADMISSION_MAX_WAIT_MS="3600000",
        WS_MAX_CONNECTIONS=str(clients + 100),
        WS_MAX_PER_IP="0",  # every client is this host
        TOPIC_PARTITIONS="6",
        **paced,
    ) as stack:
        notifier = stack.processes["notifier"]
        proxy = stack.processes["proxy"]
        assert notifier.popen is not None and proxy.popen is not None
        pid, proxy_pid = notifier.popen.pid, proxy.popen.pid
        rss_idle = rss_mib(pid)
        stack.processes["router"].stop()

        started = time.monotonic()
        orders = await place_pending(stack, clients)
        out(
            f"  placed {len(orders)} of {clients} orders in {time.monotonic() - started:.1f}s"
            " (router stopped)"
        )

        watch = Watch(
            [
                Group("notifier", partial(list, (pid,)), own=True),
                Group("nginx (proxy)", partial(with_children, proxy_pid), own=True),
            ],
            stages={},
        )
        await watch.start()
        started = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        pipes: list[Connection] = []
        procs = []
        via_proxy = clients <= PROXY_WEBSOCKETS
        base = (
            stack.ws_url if via_proxy else f"ws://127.0.0.1:{stack.settings.notifier_port}/api/orders/execute"
        )
        urls = [f"{base}?orderId={o}" for o in orders]
        for index in range(processes):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_clients_main, args=(urls[index::processes], theirs, limit_s), daemon=True
            )
            proc.start()
            pipes.append(ours)
            procs.append(proc)
        connected = sum(await _recv_all(pipes))
        connect_s = time.monotonic() - started
        rss_connected = rss_mib(pid)
        out(f"  {connected} WebSockets open, snapshots read, in {connect_s:.1f}s")

        started = time.monotonic()
        stack.start_service("router")
        results = await _recv_all(pipes)
        streaming_s = time.monotonic() - started
        for proc in procs:
            proc.join(10)
        await watch.stop()
    latencies = [x for r in results for x in r["latencies"]]
    figures = watch.report()["processes"]
    assert isinstance(figures, dict)
    return {
        "scenario": "d",
        "title": f"{clients} WebSocket clients on one notifier, "
        + (f"their orders started at ~{pace}/s" if pace else "their orders all released at once"),
        "pace": pace,
        "clients": clients,
        "client_processes": processes,
        "path": "proxy" if via_proxy else "notifier port (past the proxy's connection limit)",
        "orders_placed": len(orders),
        "connected": connected,
        "connect_s": round(connect_s, 1),
        "complete_streams": sum(r["complete"] for r in results),
        "failed_streams": sum(r["failed"] for r in results),
        "unfinished_streams": sum(r["unfinished"] for r in results),
        "reconnects": sum(r["reconnects"] for r in results),
        "events_delivered": len(latencies),
        "streaming_s": round(streaming_s, 1),
        "delivery_ms": stats.summary(latencies, 1000),
        "notifier_rss_mib": {
            "idle": round(rss_idle, 1),
            "connected": round(rss_connected, 1),
            "peak": figures["notifier"]["peak_rss_mib"],
            "per_client_kib": round((rss_connected - rss_idle) * 1024 / max(connected, 1), 1),
        },
        "processes": figures,
    }


async def main(clients: int, processes: int, pace: int) -> None:
    out(f"ws_fanout: {clients} clients, one notifier; {load()}")
    print_fanout(await fanout(clients, processes, pace))
    out(f"after: {load()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ws_fanout")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--pace", type=int, default=200, help="orders started per second (0: all at once)")
    args = parser.parse_args()
    uvloop.run(main(args.clients, args.processes, args.pace))
