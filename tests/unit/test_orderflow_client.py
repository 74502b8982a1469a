"""The orderflow HTTP client against a scripted server (httpx's MockTransport): the POST retry that keeps one
Idempotency-Key within its time budget, the list and cancel routes, and error envelopes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from orderflow.client import NewOrder
from orderflow.errors import ServerRefused, Unreachable, envelope_of
from orderflow.output import error_lines
from tests.unit.orderflow_helpers import ACCEPTED, ORDER_ID, FakeServer, FakeTime, refusal

ORDER = NewOrder("SOL", "USDC", "1.50", "0.01", client_order_id="mine-1")


async def test_a_refused_or_lost_post_is_retried_with_the_same_idempotency_key() -> None:
    server = FakeServer(
        refusal(503, "service_unavailable"),
        refusal(429, "rate_limited", headers={"Retry-After": "2"}, retryAfter=2),
        httpx.ConnectError("connection refused"),
        refusal(409, "idempotency_in_progress", retryAfter=1),
        ACCEPTED,
    )
    time = FakeTime()
    key = str(uuid.uuid4())

    accepted = await server.client(time).place(ORDER, key)

    assert accepted["orderId"] == ORDER_ID
    assert [r.headers["Idempotency-Key"] for r in server.requests] == [key] * 5
    assert [json.loads(r.content) for r in server.requests] == [
        {
            "type": "market",
            "tokenIn": "SOL",
            "tokenOut": "USDC",
            "amountIn": "1.50",
            "slippage": "0.01",
            "clientOrderId": "mine-1",
        }
    ] * 5
    # backoff 0.5 s, then the server's Retry-After (header), backoff of the 3rd attempt, the envelope's
    assert time.waits == [0.5, 2.0, 2.0, 1.0]


async def test_a_request_the_server_refuses_for_good_is_not_retried() -> None:
    details = [{"field": "amountIn", "message": "must be greater than 0"}]
    server = FakeServer(refusal(400, "invalid_body", details=details))

    with pytest.raises(ServerRefused) as refused:
        await server.client().place(ORDER, "k")

    assert len(server.requests) == 1
    assert (refused.value.status, refused.value.code, refused.value.details) == (400, "invalid_body", details)
    assert error_lines(refused.value) == [
        "error: invalid_body (HTTP 400): invalid_body happened",
        "  amountIn: must be greater than 0",
        "  correlation id: c-1",
    ]


async def test_retries_stop_within_thirty_seconds_with_the_last_refusal() -> None:
    server = FakeServer(forever=refusal(503, "service_unavailable"))
    time = FakeTime()

    with pytest.raises(ServerRefused) as refused:
        await server.client(time).place(ORDER, "key-1")

    assert time.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]  # a 7th wait of 8 s would end past 30 s
    assert len(server.requests) == 7
    assert (refused.value.status, refused.value.code, refused.value.exit_code) == (
        503,
        "service_unavailable",
        4,
    )
    assert refused.value.hint is not None and "--idempotency-key key-1" in refused.value.hint


async def test_a_retry_after_beyond_the_budget_is_not_waited_for() -> None:
    server = FakeServer(forever=refusal(429, "queue_full", headers={"Retry-After": "45"}))
    time = FakeTime()
    with pytest.raises(ServerRefused):
        await server.client(time).place(ORDER, "k")
    assert (len(server.requests), time.waits) == (1, [])


async def test_a_server_that_never_answers_is_unreachable() -> None:
    server = FakeServer(forever=httpx.ConnectError("connection refused"))
    time = FakeTime()
    with pytest.raises(Unreachable) as unreachable:
        await server.client(time).place(ORDER, "k")
    assert unreachable.value.exit_code == 5 and sum(time.waits) <= 30
    assert unreachable.value.envelope()["error"] == "unreachable"
    assert "ConnectError: connection refused" in unreachable.value.message


async def test_list_and_cancel_call_their_routes() -> None:
    page: dict[str, Any] = {"orders": [], "nextCursor": None}
    server = FakeServer(
        httpx.Response(200, json=page),
        refusal(409, "too_late_to_cancel"),
    )
    client = server.client()

    assert await client.list(status="failed", limit=5) == page
    with pytest.raises(ServerRefused) as refused:
        await client.cancel(ORDER_ID)

    listed, cancelled = server.requests
    assert (listed.method, listed.url.path, dict(listed.url.params)) == (
        "GET",
        "/api/orders",
        {"status": "failed", "limit": "5"},
    )
    assert (cancelled.method, cancelled.url.path) == ("DELETE", f"/api/orders/{ORDER_ID}")
    assert (refused.value.code, len(server.requests)) == ("too_late_to_cancel", 2)


def test_an_error_page_that_is_not_an_envelope_still_reads_as_one() -> None:
    assert envelope_of(502, b"<html><body>502 Bad Gateway</body></html>") == {
        "error": "http_502",
        "message": "Bad Gateway",
    }
    assert envelope_of(404, b'{"error":"not_found","message":"order x not found"}')["error"] == "not_found"
