"""POST throughput of the public endpoint: `python -m benchmarks.http_post [--requests N] [--concurrency C]`.

Fires N order POSTs with C in flight over keep-alive connections at BASE_URL (default the proxy at
http://127.0.0.1:3000) and prints requests/s, latency percentiles and the status codes seen. The load
generator runs on the same machine and its own CPU time is printed too: on a 2-core box it competes with
the server, so read the figures as a floor. Set RATE_LIMIT=0 on the server (or the limiter answers 429).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from collections import Counter

import httpx

ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5", "slippage": "0.01"}


async def run(base_url: str, requests: int, concurrency: int) -> None:
    latencies: list[float] = []
    statuses: Counter[int | str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await client.post("/api/orders/execute", json=ORDER)
                except httpx.TransportError as exc:  # counted, not fatal: a benchmark reports failures
                    statuses[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] += 1

        await client.get("/health")  # warm one connection
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    client_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(f"requests        {requests} with {concurrency} in flight against {base_url}")
    print(f"throughput      {requests / wall:,.0f} requests/s over {wall:.2f}s")
    print(f"latency (ms)    p50 {cuts[49] * 1000:.1f}  p90 {cuts[89] * 1000:.1f}  p99 {cuts[98] * 1000:.1f}")
    print(f"statuses        {dict(sorted(statuses.items(), key=str))}")
    print(f"client CPU      {client_cpu:.2f}s ({client_cpu / wall:.0%} of one core)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine load    {load} (1, 5, 15 min) on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--base-url", default=os.environ.get("BASE_URL", "http://127.0.0.1:3000"))
    args = parser.parse_args()
    asyncio.run(run(args.base_url, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
