"""A real Prometheus (Debian's package) scrapes every service of a running stack and answers a query."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures.stack import Process, Stack, free_port, wait_for
from tests.integration.test_order_flow import place, watch

pytestmark = pytest.mark.integration


async def test_prometheus_scrapes_every_service(stack: Stack) -> None:
    binary = shutil.which("prometheus")
    assert binary, "scripts/infra.py installs prometheus"
    s = stack.settings
    targets = {
        "ingress": s.ingress_port,
        "notifier": s.notifier_port,
        "router": s.router_metrics_port,
        "executor": s.executor_metrics_port,
    }
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]}
                        for job, p in targets.items()
                    ],
                }
            )
        )
        prometheus = Process(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stack.env,
            Path(tmp) / "prometheus.log",
        )
        prometheus.start()
        try:
            await watch(stack, await place(stack))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

                async def all_up() -> bool:
                    try:
                        result = (await client.get("/api/v1/query", params={"query": "up"})).json()
                    except httpx.TransportError:
                        return False
                    up = {r["metric"]["job"]: r["value"][1] for r in result["data"]["result"]}
                    return up == dict.fromkeys(targets, "1")

                await wait_for(all_up, timeout=30, interval=0.5, what="every target up in Prometheus")

                async def confirmed_counted() -> bool:
                    query = 'sum(orders_finished_total{status="confirmed"})'
                    result = (await client.get("/api/v1/query", params={"query": query})).json()["data"][
                        "result"
                    ]
                    return bool(result) and float(result[0]["value"][1]) >= 1

                await wait_for(
                    confirmed_counted, timeout=30, interval=0.5, what="a confirmed order in Prometheus"
                )
        finally:
            prometheus.stop()
