"""The ingress HTTP contract on the session stack: validation, the one error envelope, size limits,
security headers, CORS, and the correlation id carried from the request to Kafka and to the other stages."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.messaging.kafka import CORRELATION_HEADER
from shared.messaging.topics import ORDER_STATUS, ORDERS
from tests.fixtures.orders import fetch, order_body, topic_messages, wait_status
from tests.fixtures.stack import Stack, wait_for

pytestmark = pytest.mark.integration

EXECUTE = "/api/orders/execute"
MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"  # USDC's mint: 44 base58 characters
ENVELOPE_KEYS = {"error", "message", "details", "retryAfter", "correlationId"}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) <= ENVELOPE_KEYS and body["error"] == code and body["message"], body
    assert body["correlationId"] == response.headers["x-request-id"]
    return body


async def post(stack: Stack, body: Any = None, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        if body is not None:
            kw["json"] = body
        return await client.post(EXECUTE, **kw)


async def test_an_order_with_client_order_id_and_slippage_bps_is_stored_and_returned(stack: Stack) -> None:
    ref = f"ref-{uuid.uuid4().hex[:8]}"
    response = await post(stack, order_body(slippage=None, slippageBps=150, clientOrderId=ref, tokenOut=MINT))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "pending" and accepted["clientOrderId"] == ref
    assert await wait_status(stack, accepted["orderId"]) in ("confirmed", "failed")
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        view = (await client.get(f"/api/orders/{accepted['orderId']}")).json()
    assert view["clientOrderId"] == ref and view["tokenOut"] == MINT
    assert Decimal(view["slippage"]) == Decimal("0.015")


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"type": "limit"}, "type"),
        ({"tokenIn": "DOGE"}, "tokenIn"),
        ({"tokenIn": "0OIl" * 8}, "tokenIn"),  # 32 characters, none of them base58
        ({"tokenOut": "SOL"}, "tokenOut"),  # the same as tokenIn
        ({"amountIn": "0"}, "amountIn"),
        ({"amountIn": "-1"}, "amountIn"),
        ({"amountIn": "1e5"}, "amountIn"),
        ({"amountIn": "0." + "1" * 19}, "amountIn"),
        ({"amountIn": "1000000000001"}, "amountIn"),
        ({"amountIn": True}, "amountIn"),
        ({"amountIn": "NaN"}, "amountIn"),
        ({"slippage": "0.51"}, "slippage"),
        ({"slippage": 0}, "slippage"),
        ({"slippage": None, "slippageBps": 0}, "slippageBps"),
        ({"slippage": None, "slippageBps": 5001}, "slippageBps"),
        ({"slippage": None, "slippageBps": 1.5}, "slippageBps"),
        ({"slippageBps": 100}, "slippageBps"),  # both given
        ({"slippage": None}, "slippage"),  # neither given
        ({"clientOrderId": "x" * 65}, "clientOrderId"),
        ({"clientOrderId": "has space"}, "clientOrderId"),
        ({"token_in": "SOL"}, "token_in"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_each_invalid_field_is_a_400_naming_it(
    stack: Stack, changes: dict[str, Any], field: str
) -> None:
    response = await post(stack, order_body(**changes))
    body = assert_envelope(response, 400, "invalid_body")
    assert field in {d["field"] for d in body["details"]}, body
    assert all(d["message"] for d in body["details"])


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'"market"', b"null"])
async def test_a_body_that_is_not_a_json_object_is_a_400(stack: Stack, content: bytes) -> None:
    response = await post(stack, content=content, headers={"content-type": "application/json"})
    body = assert_envelope(response, 400, "invalid_body")
    assert body["details"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_another_media_type_is_a_415(stack: Stack, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await post(stack, content=b'{"type":"market"}', headers=headers)
    assert_envelope(response, 415, "unsupported_media_type")


async def test_bodies_over_16_kib_are_a_413_whether_announced_or_streamed(stack: Stack) -> None:
    padded = order_body(clientOrderId="x", extra="y" * 17_000)
    assert_envelope(await post(stack, padded), 413, "payload_too_large")

    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 1024

    direct = f"http://127.0.0.1:{stack.settings.ingress_port}"  # nginx would buffer and announce a length
    async with httpx.AsyncClient(base_url=direct) as client:
        streamed = await client.post(EXECUTE, content=chunks(), headers={"content-type": "application/json"})
    assert_envelope(streamed, 413, "payload_too_large")

    async with httpx.AsyncClient(base_url=stack.base_url) as client:  # over the proxy's own 64 KiB bound
        huge = await client.post(EXECUTE, content=b" " * 70_000, headers={"content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"] == "payload_too_large"


async def test_oversized_headers_are_a_431(stack: Stack) -> None:
    many = {f"x-pad-{i}": "v" * 1000 for i in range(10)}  # 10 KiB in all, each line under nginx's 8 KiB
    assert_envelope(await post(stack, order_body(), headers=many), 431, "headers_too_large")
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        one = await client.get("/health", headers={"x-pad": "v" * 9000})
    assert one.status_code == 431 and one.json()["error"] == "headers_too_large"


@pytest.mark.parametrize("key", ["k" * 256, "tab\there"])
async def test_a_malformed_idempotency_key_is_a_400(stack: Stack, key: str) -> None:
    response = await post(stack, order_body(), headers={"Idempotency-Key": key})
    body = assert_envelope(response, 400, "invalid_body")
    assert body["details"][0]["field"].lower() == "idempotency-key"


async def test_lookups_and_methods_answer_in_the_envelope(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        assert_envelope(await client.get("/api/orders/not-a-uuid"), 400, "invalid_body")
        assert_envelope(await client.get(f"/api/orders/{uuid.uuid4()}"), 404, "not_found")
        assert_envelope(await client.get("/nowhere"), 404, "not_found")
        wrong = await client.put(EXECUTE, json=order_body())
    assert_envelope(wrong, 405, "method_not_allowed")


async def test_responses_carry_security_headers(stack: Stack) -> None:
    response = await post(stack, order_body())
    assert response.status_code == 202
    for header, value in {
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }.items():
        assert response.headers[header] == value
    assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_cors_admits_only_listed_origins(stack: Stack) -> None:
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "idempotency-key"}
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        allowed = await client.options(EXECUTE, headers={"origin": "http://app.example", **preflight})
        other = await client.options(EXECUTE, headers={"origin": "http://evil.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    assert "access-control-allow-origin" not in other.headers


async def test_the_request_id_travels_to_kafka_and_to_every_stage_log(stack: Stack) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    response = await post(stack, order_body(), headers={"X-Request-ID": request_id})
    assert response.status_code == 202 and response.headers["x-request-id"] == request_id
    order_id = response.json()["orderId"]
    await wait_status(stack, order_id)

    for spec in (ORDERS, ORDER_STATUS):
        messages = await topic_messages(stack.settings, spec, key=order_id)
        assert messages and all(dict(m.headers)[CORRELATION_HEADER] == request_id.encode() for m in messages)
    rows = await fetch(stack.settings, "SELECT correlation_id FROM orders WHERE id = $1", uuid.UUID(order_id))
    assert rows[0]["correlation_id"] == request_id

    def logged_everywhere() -> bool:
        return all(
            any(
                request_id in line and order_id in line
                for line in stack.processes[name].log_path.read_text(errors="replace").splitlines()
            )
            for name in ("ingress", "router", "executor")
        )

    await wait_for(logged_everywhere, timeout=20, what="log lines with the request id in every stage")


async def test_an_invalid_request_id_is_replaced(stack: Stack) -> None:
    response = await post(stack, order_body(type="limit"), headers={"X-Request-ID": "bad id with spaces"})
    body = assert_envelope(response, 400, "invalid_body")
    assert body["correlationId"] != "bad id with spaces"
