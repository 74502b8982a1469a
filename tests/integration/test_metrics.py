"""Every service exports its metrics; after an order has gone through, the pipeline's series exist."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.fixtures.stack import ROOT, Stack, wait_for
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
    async with httpx.AsyncClient(timeout=5) as client:
        for name, (url, series) in endpoints.items():

            async def exported(url: str = url, series: list[str] = series) -> bool:
                text = (await client.get(url)).text
                return all(item in text for item in series)

            await wait_for(exported, timeout=15, interval=0.2, what=f"{name} metrics {series}")


PROMQL_FUNCTIONS = {"sum", "rate", "histogram_quantile", "by", "le", "max", "min", "avg", "increase", "irate"}


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((ROOT / "infra/grafana/dashboards/order-engine.json").read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\([^()]*\bby\b|\"[^\"]*\"", " ", target["expr"])
            names |= {
                n for n in re.findall(r"[a-z_][a-z0-9_]*", expr) if n not in PROMQL_FUNCTIONS and "_" in n
            }
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


async def test_the_dashboard_queries_only_metrics_that_services_export(stack: Stack) -> None:
    await watch(stack, await place(stack))
    s = stack.settings
    ports = [s.ingress_port, s.notifier_port, s.router_metrics_port, s.executor_metrics_port]
    exported: set[str] = set()
    async with httpx.AsyncClient(timeout=5) as client:
        for port in ports:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            exported |= set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    exported |= {name.removesuffix("_total") for name in exported} | {f"{n}_total" for n in exported}
    wanted = dashboard_metrics()
    assert {"orders_finished_total", "kafka_consumer_lag_messages", "ws_connections_open"} <= wanted
    assert wanted <= exported, (
        f"the dashboard queries metrics no service exports: {sorted(wanted - exported)}"
    )


async def test_every_service_follows_postgres_clock(stack: Stack) -> None:
    """Each process has measured its offset to Postgres's clock (one host here: it is next to nothing)."""
    s = stack.settings
    ports = (s.ingress_port, s.router_metrics_port, s.executor_metrics_port, s.notifier_port)
    async with httpx.AsyncClient(timeout=5) as client:
        for port in ports:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            values = dict(row.split() for row in text.splitlines() if row.startswith("clock_"))
            assert float(values["clock_syncs_total"]) >= 1, (port, values)
            assert abs(float(values["clock_offset_seconds"])) < 0.5, (port, values)
