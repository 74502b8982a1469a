"""Every service exports its metrics; after an order has gone through, the pipeline's series exist."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.stack import Stack, wait_for
from tests.integration.test_order_flow import place, watch

pytestmark = pytest.mark.integration


async def test_each_service_exports_its_metrics(stack: Stack) -> None:
    await watch(stack, await place(stack))
    s = stack.settings
    endpoints = {
        "ingress": (f"http://127.0.0.1:{s.ingress_port}/metrics", ["orders_accepted_total"]),
        "router": (
            f"http://127.0.0.1:{s.router_metrics_port}/metrics",
            ['dex_quote_seconds_count{dex="raydium"}', 'order_queue_wait_seconds_count{stage="routing"}'],
        ),
        "executor": (
            f"http://127.0.0.1:{s.executor_metrics_port}/metrics",
            [
                "dex_execution_seconds_count{dex=",
                'orders_finished_total{status="confirmed"}',
                'order_end_to_end_seconds_count{status="confirmed"}',
                "executor_swaps_in_flight",
            ],
        ),
        "notifier": (f"http://127.0.0.1:{s.notifier_port}/metrics", ["ws_connections_open"]),
    }
    async with httpx.AsyncClient(timeout=5, follow_redirects=True) as client:
        for name, (url, series) in endpoints.items():

            async def exported(url: str = url, series: list[str] = series) -> bool:
                text = (await client.get(url)).text
                return all(item in text for item in series)

            await wait_for(exported, timeout=15, interval=0.2, what=f"{name} metrics {series}")
