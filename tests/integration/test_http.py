"""The HTTP surface of the skeleton: health, readiness, errors in the one envelope."""

from __future__ import annotations

import uuid

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.stack import Stack, running_stack

pytestmark = pytest.mark.integration

UNKNOWN_ORDER = uuid.UUID("6f1c0b9e-8a51-4a5e-9a63-0d1f6b2f8c44")  # never placed: ids are uuid4


async def test_health_and_readiness(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok", "kafka": "ok"}}


async def test_an_unknown_order_is_not_found_in_the_envelope(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        response = await client.get(f"/api/orders/{uuid.uuid4()}", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "message": response.json()["message"],
        "correlationId": "req-42",
    }
    assert response.headers["x-request-id"] == "req-42"


async def test_a_bad_body_is_a_400_invalid_body_never_a_422(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        response = await client.post("/api/orders/execute", json={"type": "limit", "tokenIn": "SOL"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_body"
    assert {d["field"] for d in body["details"]} >= {"type", "tokenOut", "amountIn", "slippage"}
    assert body["correlationId"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "query,code,close",
    # a fixed unknown id: every xdist worker must collect the same test ids
    [("orderId=not-a-uuid", "invalid_body", 4400), (f"orderId={UNKNOWN_ORDER}", "not_found", 4404)],
)
async def test_websocket_refuses_bad_and_unknown_orders(
    stack: Stack, query: str, code: str, close: int
) -> None:
    async with connect(f"{stack.ws_url}?{query}") as ws:
        message = await ws.recv()
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert '"type":"error"' in str(message) and f'"error":"{code}"' in str(message)
    assert ws.close_code == close


async def test_the_proxy_answers_in_the_envelope_when_no_service_is_behind_it(infrastructure: object) -> None:
    """nginx's own failures (ingress down or restarting) are a 503 with a retry hint, never an HTML page."""
    async with running_stack(services=()) as lonely, httpx.AsyncClient(base_url=lonely.base_url) as client:
        response = await client.post("/api/orders/execute", json={"type": "market"})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert (body["error"], body["retryAfter"]) == ("service_unavailable", 1)
    assert body["correlationId"] == response.headers["x-request-id"]
