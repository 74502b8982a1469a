"""A real Prometheus (Debian's package), configured as `make run` configures it, scrapes every service of a
running stack and answers the README's queries."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from shared.runtime.cli import ROOT, render_prometheus_config, scrape_targets
from tests.fixtures.stack import Process, Stack, free_port, wait_for
from tests.integration.test_order_flow import place, watch

pytestmark = pytest.mark.integration


async def test_prometheus_scrapes_every_service(stack: Stack) -> None:
    binary = shutil.which("prometheus")
    assert binary, "scripts/infra.py installs prometheus"
    targets = scrape_targets(stack.settings)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = render_prometheus_config(stack.settings, Path(tmp), scrape_interval="1s")
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
                for query in readme_queries():
                    answer = (await client.get("/api/v1/query", params={"query": query})).json()
                    assert answer["status"] == "success", f"the README's {query!r}: {answer}"

                async def finished_by_status() -> bool:  # a rate needs two scrapes of the series
                    answer = await client.get("/api/v1/query", params={"query": readme_queries()[0]})
                    return "confirmed" in {r["metric"]["status"] for r in answer.json()["data"]["result"]}

                await wait_for(finished_by_status, timeout=30, interval=0.5, what="the README's first query")
        finally:
            prometheus.stop()


def readme_queries() -> list[str]:
    """The PromQL lines of the README's ```promql block."""
    text = (ROOT / "README.md").read_text()
    block = text.split("```promql\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]
