"""What the orderflow commands print, for people and for scripts (`--json`): the orders table and its cursor,
a placed order's id, error envelopes."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC

import httpx

from orderflow.__main__ import list_orders, place
from orderflow.errors import ServerRefused
from orderflow.output import Output, orders_table
from tests.unit.orderflow_helpers import ACCEPTED, ORDER_ID, FakeServer, parse, text_of


def output(*, json_mode: bool) -> tuple[Output, io.StringIO, io.StringIO]:
    stdout, stderr = io.StringIO(), io.StringIO()
    return Output(stdout, stderr, json_mode=json_mode, tty=False, tz=UTC), stdout, stderr


async def test_orders_all_follows_the_cursors() -> None:
    first, second = ({"orderId": f"o{i}", "status": "confirmed"} for i in (1, 2))
    server = FakeServer(
        httpx.Response(200, json={"orders": [first], "nextCursor": "c1"}),
        httpx.Response(200, json={"orders": [second], "nextCursor": None}),
    )
    out, stdout, _ = output(json_mode=True)

    code = await list_orders(server.client(), parse("--json", "orders", "--limit", "1", "--all"), out)

    assert code == 0
    assert json.loads(stdout.getvalue()) == {"orders": [first, second], "nextCursor": None}
    assert [r.url.params.get("cursor") for r in server.requests] == [None, "c1"]


async def test_orders_prints_a_table_and_the_next_cursor() -> None:
    orders = [
        {"orderId": "o-new", "status": "failed", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5"},
        {"orderId": "o-old", "status": "confirmed", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "2"},
    ]
    server = FakeServer(httpx.Response(200, json={"orders": orders, "nextCursor": "next-page"}))
    out, stdout, _ = output(json_mode=False)

    await list_orders(server.client(), parse("orders", "--status", "failed"), out)

    text = stdout.getvalue()
    assert text.index("o-new") < text.index("o-old")
    assert text.rstrip().endswith("next cursor: next-page")
    assert server.requests[0].url.params["status"] == "failed"
    assert "o-new" in text_of(orders_table(orders))


async def test_order_without_watch_prints_the_order_id_alone() -> None:
    server = FakeServer(ACCEPTED)
    out, stdout, _ = output(json_mode=False)
    args = parse("order", "--in", "SOL", "--out", "USDC", "--amount", "1.5", "--slippage", "0.01")

    assert await place(server.client(), "http://engine.test", args, out) == 0

    assert stdout.getvalue() == f"{ORDER_ID}\n"
    key = server.requests[0].headers["Idempotency-Key"]
    assert uuid.UUID(key).version == 4


def test_errors_print_the_envelope_as_json_for_scripts() -> None:
    out, stdout, stderr = output(json_mode=True)
    envelope = {"error": "not_found", "message": "order x not found", "correlationId": "c-9"}
    out.error(ServerRefused(404, envelope))
    assert (stdout.getvalue(), json.loads(stderr.getvalue())) == ("", envelope)
