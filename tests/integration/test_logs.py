"""One order's story in the logs: every service writes JSON lines that carry the order, the request's
correlation id, and for the stream stages the Kafka message (jobId) and the step's fields."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.fixtures.orders import order_body, wait_status
from tests.fixtures.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def lines_about(stack: Stack, service: str, correlation_id: str) -> list[dict[str, Any]]:
    text = stack.processes[service].log_path.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if correlation_id in line and line.startswith("{")]


async def test_every_stage_logs_the_order_with_its_correlation_and_job(stack: Stack) -> None:
    correlation_id = f"trace-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        response = await client.post(
            "/api/orders/execute", json=order_body(), headers={"X-Request-ID": correlation_id}
        )
    assert response.status_code == 202
    order_id = response.json()["orderId"]
    await wait_status(stack, order_id)

    def steps_logged() -> bool:
        logged = lines_about(stack, "router", correlation_id) + lines_about(stack, "executor", correlation_id)
        return {"confirmed", "building"} <= {
            line.get("status") for line in logged if line["event"] == "order.step"
        }

    await wait_for(steps_logged, timeout=20, what="the stages' step lines")
    ingress = lines_about(stack, "ingress", correlation_id)
    assert any(line["event"] == "order.accepted" and line["orderId"] == order_id for line in ingress)
    assert all(line["service"] == "ingress" and "ts" in line and "level" in line for line in ingress)

    prefix = re.escape(stack.settings.topic_prefix)
    for service, topic in (("router", "orders"), ("executor", "orders.execute")):
        steps = [
            line for line in lines_about(stack, service, correlation_id) if line["event"] == "order.step"
        ]
        assert steps, f"{service} logged no step"
        for line in steps:
            assert line["service"] == service and line["orderId"] == order_id
            assert re.fullmatch(rf"{prefix}{re.escape(topic)}/\d+/\d+", line["jobId"]), line["jobId"]
            assert line["duration_ms"] >= 0 and line["attempt"] >= 0 and "dex" in line and "error" in line
    confirmed = next(
        line for line in lines_about(stack, "executor", correlation_id) if line.get("status") == "confirmed"
    )
    assert confirmed["dex"] in ("raydium", "meteora") and confirmed["error"] is None
