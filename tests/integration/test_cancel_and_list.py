"""DELETE /api/orders/{id} (cancel before `submitted`, and never a swap after it), GET /api/orders (a caller's
own orders, newest first, by cursor) and the 202's Location, over the whole running pipeline."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.messaging.topics import ORDER_STATUS
from tests.fixtures.clients import http_from, loopback_address
from tests.fixtures.execution import read_topic
from tests.fixtures.orders import fetch, order_body, wait_status
from tests.fixtures.stack import Stack, cancellable, log_events, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.serial]

RACES = 200
# DELETEs fall within this long after the 202: about half before the step to `submitted` (quotes take
# 0.9-1.8 s) and half after, with room for a request that waits a few hundred ms on a busy machine.
RACE_WINDOW_S = 2.7


@pytest.fixture(scope="module")
async def slow_quotes(infrastructure: object) -> AsyncIterator[Stack]:
    """Quotes slow enough that an order waits in `routing` for a cancel, with a margin for a loaded machine
    (`make test` runs two workers); no price move, so an order that is not cancelled confirms."""
    async with running_stack(**cancellable(900, 1800)) as stack:
        yield stack


async def place(client: httpx.AsyncClient, **overrides: Any) -> str:
    """Place an order as `client` (an `http_from` client: its source address is the client's identity)."""
    response = await client.post("/api/orders/execute", json=order_body(**overrides))
    assert response.status_code == 202, response.text
    order_id = str(response.json()["orderId"])
    assert response.headers["location"] == f"/api/orders/{order_id}"
    return order_id


async def cancel(client: httpx.AsyncClient, order_id: str) -> httpx.Response:
    return await client.delete(f"/api/orders/{order_id}")


async def events_until_closed(stack: Stack, order_id: str) -> tuple[list[dict[str, Any]], int | None]:
    """The snapshot's events and every later one, until the server closes; and the close code."""
    async with connect(f"{stack.ws_url}?orderId={order_id}", open_timeout=10) as ws:
        events = list(json.loads(await ws.recv())["logs"])
        try:
            while True:
                events.append(json.loads(await ws.recv()))
        except ConnectionClosed:
            pass
        return events, ws.close_code


async def test_an_order_cancelled_while_routing_ends_cancelled_and_is_never_swapped(
    slow_quotes: Stack,
) -> None:
    async with http_from(slow_quotes, loopback_address(), timeout=10) as client:
        order_id = await place(client)
        await wait_for(
            lambda: _status(slow_quotes, order_id, "routing"), timeout=10, what="the order in routing"
        )
        response = await cancel(client, order_id)
        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["status"] == "cancelled" and cancelled["orderId"] == order_id
        assert [e["status"] for e in cancelled["logs"]] == ["pending", "routing", "cancelled"]

        again = await cancel(client, order_id)
        assert again.status_code == 200 and again.json()["seq"] == cancelled["seq"], (
            "a second cancel changes nothing"
        )

    # The router's quotes come back after the cancel: its step to building must lose to it.
    await wait_for(
        lambda: any(
            e["orderId"] == order_id
            for e in log_events(slow_quotes, "order.step_taken_elsewhere", "router", "executor")
        ),
        timeout=10,
        what="the router's step after the cancel, refused",
    )
    events, close_code = await events_until_closed(slow_quotes, order_id)
    assert [e["status"] for e in events] == ["pending", "routing", "cancelled"] and close_code == 1000
    on_topic = [e for e in await read_topic(slow_quotes, ORDER_STATUS) if e["orderId"] == order_id]
    assert [e["status"] for e in on_topic] == ["pending", "routing", "cancelled"]
    assert (
        await fetch(
            slow_quotes.settings, "SELECT 1 FROM mock_dex_swaps WHERE order_id = $1", uuid.UUID(order_id)
        )
        == []
    )


async def test_cancel_refuses_a_submitted_order_an_unknown_one_and_another_clients(
    slow_quotes: Stack,
) -> None:
    async with (
        http_from(slow_quotes, loopback_address(), timeout=10) as client,
        http_from(slow_quotes, loopback_address(), timeout=10) as another_client,
    ):
        order_id = await place(client)
        assert await wait_status(slow_quotes, order_id) == "confirmed"
        late = await cancel(client, order_id)
        assert late.status_code == 409 and late.json()["error"] == "too_late_to_cancel", late.text

        unknown = await cancel(client, str(uuid.uuid4()))
        assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"

        theirs = await place(another_client)
        refused = await cancel(client, theirs)
        assert refused.status_code == 404, "another client's order is not found, as if it did not exist"
        assert (await client.get(f"/api/orders/{theirs}")).json()["status"] != "cancelled"

        malformed = await client.delete("/api/orders/not-a-uuid")
        assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_body"


async def test_cancel_raced_against_execution_never_lets_a_cancelled_order_swap(slow_quotes: Stack) -> None:
    """Each of RACES orders gets its DELETE at a random moment of its life, many near the step to
    `submitted`. Whatever each DELETE was told must be what happened: 200 → cancelled, no execute call at
    the venue and no swap; 409 → it was submitted and finished, and the DELETE changed nothing."""
    rng = random.Random(7)

    async def race(client: httpx.AsyncClient) -> tuple[str, int]:
        order_id = await place(client)
        await asyncio.sleep(rng.uniform(0.0, RACE_WINDOW_S))
        response = await cancel(client, order_id)
        assert response.status_code in (200, 409), response.text
        return order_id, response.status_code

    async with http_from(slow_quotes, loopback_address(), timeout=30) as client:
        answers = dict(await asyncio.gather(*(race(client) for _ in range(RACES))))
    counts = Counter(answers.values())
    assert counts[200] >= 10 and counts[409] >= 10, f"the race was not run from both sides: {counts}"

    for order_id in answers:
        await wait_status(slow_quotes, order_id)
    rows = {
        str(r["id"]): r["status"]
        for r in await fetch(
            slow_quotes.settings,
            "SELECT id, status FROM orders WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in answers],
        )
    }
    swapped = {
        str(r["order_id"]) for r in await fetch(slow_quotes.settings, "SELECT order_id FROM mock_dex_swaps")
    }
    executed = {e["orderId"] for e in log_events(slow_quotes, "venue.execute", "executor")}
    for order_id, code in answers.items():
        if code == 200:
            assert rows[order_id] == "cancelled", f"{order_id}: told cancelled, is {rows[order_id]}"
            assert order_id not in executed, f"{order_id}: cancelled, yet sent to the venue"
            assert order_id not in swapped, f"{order_id}: cancelled, yet swapped"
        else:
            assert rows[order_id] in ("confirmed", "failed"), (
                f"{order_id}: told too late, is {rows[order_id]}"
            )
            assert order_id in executed, f"{order_id}: told too late, yet never sent to the venue"


async def test_a_callers_orders_list_newest_first_page_by_page_and_filter(slow_quotes: Stack) -> None:
    ref = f"list-{uuid.uuid4().hex[:8]}"
    async with (
        http_from(slow_quotes, loopback_address(), timeout=10) as client,
        http_from(slow_quotes, loopback_address(), timeout=10) as another_client,
    ):
        placed = [await place(client, clientOrderId=f"{ref}-{n}") for n in range(5)]
        other = await place(another_client)
        cancelled = placed[1]
        assert (await cancel(client, cancelled)).status_code == 200

        seen: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            response = await client.get("/api/orders", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["orders"]) <= 2 and "logs" not in (page["orders"] or [{}])[0]
            seen += page["orders"]
            pages += 1
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert [o["orderId"] for o in seen] == placed[::-1], "newest first, each once, the caller's only"
        assert pages == 3 and other not in {o["orderId"] for o in seen}

        async def listed(**params: str) -> list[str]:
            response = await client.get("/api/orders", params=params)
            assert response.status_code == 200, response.text
            return [o["orderId"] for o in response.json()["orders"]]

        assert await listed(status="cancelled") == [cancelled]
        assert await listed(clientOrderId=f"{ref}-3") == [placed[3]]
        assert await listed(limit="1000") == placed[::-1], "a limit above the cap is capped, not refused"

        for params, field in (
            ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
            ({"status": "lost"}, "status"),
            ({"limit": "0"}, "limit"),
        ):
            bad = await client.get("/api/orders", params=params)
            assert bad.status_code == 400 and bad.json()["error"] == "invalid_body", bad.text
            assert field in json.dumps(bad.json()["details"])


async def _status(stack: Stack, order_id: str, status: str) -> bool:
    rows = await fetch(stack.settings, "SELECT status FROM orders WHERE id = $1", uuid.UUID(order_id))
    return bool(rows) and rows[0]["status"] == status
