"""The walking skeleton end to end: HTTP in through the proxy, four separate processes over real Kafka,
Postgres and Redis, and a real WebSocket client watching the order to its terminal state."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.domain.events import OrderPlaced
from shared.domain.status import OrderStatus
from shared.messaging.kafka import new_producer
from shared.messaging.topics import ORDERS
from shared.store import db
from tests.fixtures.orders import Publisher, order_body
from tests.fixtures.stack import Stack, wait_for

pytestmark = pytest.mark.integration

ORDER = order_body()
HAPPY_PATH = ["pending", "routing", "building", "submitted", "confirmed"]


async def place(stack: Stack, body: dict[str, Any] | None = None) -> str:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        response = await client.post("/api/orders/execute", json=body or ORDER)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "pending"
    return str(accepted["orderId"])


async def watch(
    stack: Stack, order_id: str, query: str = ""
) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """Connect, read the snapshot and every later message until the server closes; returns them and the
    close code."""
    async with connect(f"{stack.ws_url}?orderId={order_id}{query}", open_timeout=10) as ws:
        snapshot = json.loads(await ws.recv())
        live: list[dict[str, Any]] = []
        try:
            while True:
                live.append(json.loads(await ws.recv()))
        except ConnectionClosed:
            pass
        assert ws.close_code is not None
        return snapshot, live, ws.close_code


async def get_order(stack: Stack, order_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        return await client.get(f"/api/orders/{order_id}")


async def test_an_order_reaches_confirmed_as_seen_by_a_websocket_client(stack: Stack) -> None:
    order_id = await place(stack)
    snapshot, live, close_code = await watch(stack, order_id)

    assert snapshot["type"] == "snapshot" and snapshot["orderId"] == order_id
    assert [e["seq"] for e in snapshot["logs"]] == list(range(1, snapshot["seq"] + 1))
    assert all(m.pop("type") == "status" for m in live)
    events = snapshot["logs"] + live
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq 1..n, no gap, no repeat"
    assert [e["status"] for e in events] == HAPPY_PATH
    assert close_code == 1000

    building, confirmed = events[2], events[-1]
    assert set(building["quotes"]) == {"raydium", "meteora"}
    chosen = max(building["quotes"].values(), key=lambda q: Decimal(q["amountOut"]))
    assert building["dex"] == chosen["dex"]
    assert confirmed["txHash"] and 87 <= len(confirmed["txHash"]) <= 88
    assert Decimal(confirmed["amountOut"]) >= Decimal(chosen["amountOut"]) * (1 - Decimal(ORDER["slippage"]))

    response = await get_order(stack, order_id)
    assert response.status_code == 200
    row = response.json()
    assert row["status"] == "confirmed" and row["seq"] == 5
    assert (row["txHash"], row["executedPrice"], row["amountOut"], row["dex"]) == (
        confirmed["txHash"],
        confirmed["executedPrice"],
        confirmed["amountOut"],
        confirmed["dex"],
    )
    assert row["logs"] == events
    assert (row["amountIn"], row["slippage"]) == ("1.5", "0.01")


async def test_a_client_that_connects_late_gets_the_whole_story_in_the_snapshot(stack: Stack) -> None:
    order_id = await place(stack)

    async def confirmed() -> bool:
        return (await get_order(stack, order_id)).json()["status"] == "confirmed"

    await wait_for(confirmed, timeout=30, interval=0.1, what="the order to confirm")
    snapshot, live, close_code = await watch(stack, order_id)
    assert [e["status"] for e in snapshot["logs"]] == HAPPY_PATH
    assert (snapshot["status"], snapshot["seq"], live, close_code) == ("confirmed", 5, [], 1000)


async def test_last_seq_resumes_after_what_the_client_has(stack: Stack) -> None:
    order_id = await place(stack)
    await watch(stack, order_id)  # to the end
    snapshot, _, _ = await watch(stack, order_id, "&lastSeq=3")
    assert [e["seq"] for e in snapshot["logs"]] == [4, 5]


async def test_a_redelivered_order_is_a_no_op(stack: Stack) -> None:
    """Kafka delivers at least once: the same OrderPlaced again must not add events or swap twice."""
    order_id = await place(stack)
    first = await watch(stack, order_id)
    assert first[1] or first[0]["status"] == "confirmed"
    row = (await get_order(stack, order_id)).json()

    producer = new_producer(stack.settings)
    await producer.start()
    try:
        placed = OrderPlaced(
            order_id=order_id,
            token_in="SOL",
            token_out="USDC",
            amount_in=Decimal("1.5"),
            slippage=Decimal("0.01"),
            created_at=row["createdAt"],
        )
        await Publisher(producer, stack.settings).send(ORDERS, placed.order_id, placed, None)
        # A marker order placed after the duplicate travels the same partitions; once it is confirmed the
        # router has certainly seen the duplicate too (same topic, processed in order per partition).
        marker = await place(stack)
        await watch(stack, marker)
    finally:
        await producer.stop()

    again = (await get_order(stack, order_id)).json()
    assert again["seq"] == 5 and again["logs"] == row["logs"]
    conn = await db.connect(stack.settings.database_url, jsonb=False)
    try:
        swaps = await conn.fetchval(
            "SELECT count(*) FROM mock_dex_swaps WHERE order_id = $1 AND kind = 'swap'", placed.order_id
        )
    finally:
        await conn.close()
    assert swaps == 1


async def test_every_swap_is_in_the_venue_ledger_once(stack: Stack) -> None:
    orders = [await place(stack) for _ in range(5)]
    for order_id in orders:
        await watch(stack, order_id)
    conn = await db.connect(stack.settings.database_url, jsonb=False)
    try:
        rows = await conn.fetch(
            "SELECT order_id, tx_hash FROM mock_dex_swaps WHERE order_id = ANY($1::uuid[]) AND kind = 'swap'",
            orders,
        )
    finally:
        await conn.close()
    assert sorted(str(r["order_id"]) for r in rows) == sorted(orders)
    for order_id in orders:
        row = (await get_order(stack, order_id)).json()
        assert row["status"] == OrderStatus.CONFIRMED
        assert row["txHash"] == next(r["tx_hash"] for r in rows if str(r["order_id"]) == order_id)
