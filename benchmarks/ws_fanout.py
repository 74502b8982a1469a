"""WebSocket fan-out benchmark: N concurrent clients on one notifier, each following its own order live.

    .venv/bin/python -m benchmarks.ws_fanout [--clients 1000]

Needs the infrastructure of `make infra-up` (Kafka, Postgres, Redis); starts its own stack (fresh database,
topic prefix and ports, like the integration tests) and removes it afterwards.

1. With the router stopped, place N orders (they wait at `pending`, seq 1).
2. Open N WebSockets through the proxy, one per order, and read each snapshot.
3. Start the router: every order goes routing → building → submitted → confirmed, and every event is
   delivered live to its client.
Prints whether every client got its order's complete stream (seq 1..5, once, then close 1000), the delivery
latency (the event's `at` → received by the client, so it includes Kafka, the notifier, the proxy and the
client's own loop), the notifier's RSS, and the machine's load. Figures, not assertions: the machine is
shared, so read them together with the load printed next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import uvloop
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.stack import Stack, create_stack, destroy_stack, wait_for

ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5", "slippage": "0.01"}


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


async def place_orders(stack: Stack, count: int) -> list[str]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=stack.base_url, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(50)

        async def place() -> str:
            async with gate:
                response = await client.post("/api/orders/execute", json=ORDER)
            response.raise_for_status()
            return str(response.json()["orderId"])

        return list(await asyncio.gather(*(place() for _ in range(count))))


class Follower:
    """One client: connects, reads the snapshot, then records each live event's delivery latency. Like a
    real client it reconnects with lastSeq if the connection ends abnormally (counted in `reconnects`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seqs: list[int] = []
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
                at = datetime.fromisoformat(message["at"].replace("Z", "+00:00"))
                self.latencies.append((received - at).total_seconds())
        except (ConnectionClosed, OSError, TimeoutError):
            self.close_code = None
            return
        self.close_code = ws.close_code

    @property
    def complete(self) -> bool:
        return self.seqs == [1, 2, 3, 4, 5] and self.close_code == 1000


async def main(clients: int) -> None:
    out(f"ws_fanout: {clients} clients, one notifier; {load()}")
    stack = await create_stack(
        RATE_LIMIT="0",
        LOG_LEVEL="warning",
        MOCK_QUOTE_LATENCY_MIN_MS="0",
        MOCK_QUOTE_LATENCY_MAX_MS="5",
        MOCK_EXECUTION_LATENCY_MIN_MS="0",
        MOCK_EXECUTION_LATENCY_MAX_MS="5",
        ORDER_DEADLINE_MS="600000",
    )
    try:
        notifier = stack.processes["notifier"]
        assert notifier.popen is not None
        pid = notifier.popen.pid
        rss_idle = rss_mib(pid)
        stack.processes["router"].stop()

        started = time.monotonic()
        orders = await place_orders(stack, clients)
        out(f"placed {len(orders)} orders in {time.monotonic() - started:.1f}s (router stopped: all pending)")

        started = time.monotonic()
        followers = [Follower(f"{stack.ws_url}?orderId={o}") for o in orders]
        gate = asyncio.Semaphore(100)
        tasks = [asyncio.create_task(f.run(gate)) for f in followers]
        await asyncio.wait_for(asyncio.gather(*(f.connected.wait() for f in followers)), 300)
        rss_connected = rss_mib(pid)
        out(f"{clients} WebSockets open, snapshots read, in {time.monotonic() - started:.1f}s")

        started = time.monotonic()
        stack.start_service("router")
        peak = rss_connected

        def finished() -> bool:
            nonlocal peak
            peak = max(peak, rss_mib(pid))
            return all(t.done() for t in tasks)

        await wait_for(finished, timeout=600, interval=0.2, what="every stream to end")
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started

        complete = sum(f.complete for f in followers)
        latencies = [x for f in followers for x in f.latencies]
        reconnects = sum(f.reconnects for f in followers)
        out(f"streams complete (seq 1..5 once, close 1000): {complete}/{clients}; reconnects: {reconnects}")
        out(f"live events delivered: {len(latencies)} in {elapsed:.1f}s after the router started")
        if latencies:
            p50, p99 = (percentile(latencies, p) * 1000 for p in (50, 99))
            out(
                "delivery latency (event at → client received): "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies) * 1000:.1f} ms"
            )
        per_client = (rss_connected - rss_idle) * 1024 / clients
        out(
            f"notifier RSS: {rss_idle:.1f} MiB idle, {rss_connected:.1f} MiB with {clients} clients, "
            f"{peak:.1f} MiB peak while streaming ({per_client:.1f} KiB/client)"
        )
        out(f"after: {load()}")
    finally:
        await destroy_stack(stack)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ws_fanout")
    parser.add_argument("--clients", type=int, default=1000)
    uvloop.run(main(parser.parse_args().clients))
