"""Push N orders through the real pipeline (every service a process, real Kafka/Postgres/Redis) and print
end-to-end throughput, p50/p99 latency and the most swaps in flight seen on the executor. Figures are printed,
never asserted.

    .venv/bin/python -m benchmarks.pipeline --orders 1000 --concurrency 1000 --exec-ms 2000-3000

Needs the infrastructure of `make infra-up`. Uses its own database and topic prefix (the test stack).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

import httpx

from tests.fixtures.execution import place_many, wait_terminal
from tests.fixtures.orders import fetch
from tests.fixtures.stack import create_stack, destroy_stack


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sample_in_flight(url: str, peak: list[float], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            try:
                text = (await client.get(url)).text
                found = re.search(r"^executor_swaps_in_flight (\S+)$", text, re.M)
                if found:
                    peak[0] = max(peak[0], float(found.group(1)))
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> None:
    low, high = args.exec_ms.split("-")
    qlow, qhigh = args.quote_ms.split("-")
    stack = await create_stack(
        RATE_LIMIT="0",
        LOG_LEVEL="warning",
        QUEUE_CONCURRENCY=str(args.concurrency),
        ROUTER_CONCURRENCY=str(args.router_concurrency),
        MOCK_EXECUTION_LATENCY_MIN_MS=low,
        MOCK_EXECUTION_LATENCY_MAX_MS=high,
        MOCK_QUOTE_LATENCY_MIN_MS=qlow,
        MOCK_QUOTE_LATENCY_MAX_MS=qhigh,
        SWAP_WINDOW_MS=str(int(high) + 5000),
        ORDER_DEADLINE_MS="600000",
        TOPIC_PARTITIONS=str(args.partitions),
    )
    peak = [0.0]
    stop = asyncio.Event()
    metrics = f"http://127.0.0.1:{stack.settings.executor_metrics_port}/metrics"
    sampler = asyncio.create_task(sample_in_flight(metrics, peak, stop))
    try:
        started = time.monotonic()
        ids = await place_many(stack, args.orders, parallel=50)
        placed = time.monotonic() - started
        await wait_terminal(stack, ids, timeout=args.timeout)
        rows = await fetch(
            stack.settings,
            "SELECT status, extract(epoch FROM updated_at - created_at) AS e2e,"
            " extract(epoch FROM created_at) AS created, extract(epoch FROM updated_at) AS done"
            " FROM orders WHERE id = ANY($1::uuid[])",
            ids,
        )
    finally:
        stop.set()
        await sampler
        await destroy_stack(stack)
    latencies = [float(r["e2e"]) for r in rows]
    span = max(float(r["done"]) for r in rows) - min(float(r["created"]) for r in rows)
    confirmed = sum(r["status"] == "confirmed" for r in rows)
    sys.stdout.write(
        f"orders {len(rows)} (confirmed {confirmed}), placed in {placed:.1f} s\n"
        f"throughput {len(rows) / span:.1f} orders/s end to end"
        f" (first accepted to last finished: {span:.1f} s)\n"
        f"latency p50 {percentile(latencies, 0.5):.2f} s, p99 {percentile(latencies, 0.99):.2f} s\n"
        f"swaps in flight: peak {peak[0]:.0f} (QUEUE_CONCURRENCY {args.concurrency})\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline")
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=1000, help="QUEUE_CONCURRENCY")
    parser.add_argument("--router-concurrency", type=int, default=200)
    parser.add_argument("--exec-ms", default="2000-3000", help="mock swap latency, min-max ms")
    parser.add_argument("--quote-ms", default="100-300", help="mock quote latency, min-max ms")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=300)
    asyncio.run(main(parser.parse_args()))
