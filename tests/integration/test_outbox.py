"""The outbox against the session stack's relays: a row Kafka refuses for good is parked, not retried with
its batch forever; the rest of the batch and later batches go out, its order's later rows wait behind it,
and admission does not count it as publishing lag."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from shared.messaging.topics import ORDER_STATUS
from tests.fixtures.orders import fetch, order_body, topic_messages
from tests.fixtures.stack import Stack, wait_for

pytestmark = pytest.mark.integration

TOO_LARGE = 2 * 1024 * 1024  # past the producer's max request (1 MiB): refused before it is sent


async def insert_rows(stack: Stack, rows: list[tuple[str, str]]) -> list[int]:
    """Outbox rows (key, payload) on `order.status`, old enough for the relay to take at once."""
    records = await fetch(
        stack.settings,
        "INSERT INTO outbox (topic, key, payload, created_at)"
        " SELECT $1, k, p, now() - interval '1 minute' FROM unnest($2::text[], $3::text[]) AS r(k, p)"
        " RETURNING id",
        ORDER_STATUS.name,
        [key for key, _ in rows],
        [payload for _, payload in rows],
    )
    return [r["id"] for r in records]


def event(order_id: str, seq: int, padding: int = 0) -> str:
    return orjson.dumps({"orderId": order_id, "seq": seq, "padding": "x" * padding}).decode()


async def test_a_row_kafka_refuses_is_parked_and_holds_back_only_its_own_order(stack: Stack) -> None:
    bad, good, later = (str(uuid.uuid4()) for _ in range(3))
    ids = await insert_rows(
        stack,
        [
            (good, event(good, 1)),
            (bad, event(bad, 1, padding=TOO_LARGE)),
            (bad, event(bad, 2)),  # must not go out before seq 1 of its order
            (good, event(good, 2)),
        ],
    )

    async def parked() -> list[dict[str, object]]:
        rows = await fetch(
            stack.settings, "SELECT id, parked_at, error FROM outbox WHERE id = ANY($1::bigint[])", ids
        )
        return [dict(r) for r in rows] if len(rows) == 2 and any(r["parked_at"] for r in rows) else []

    left = await wait_for(parked, timeout=30, what="the refused row parked, the others sent")
    by_id = {row["id"]: row for row in left}
    assert set(by_id) == {ids[1], ids[2]}, "the good order's rows were sent and deleted"
    assert by_id[ids[1]]["parked_at"] is not None and "MessageSizeTooLarge" in str(by_id[ids[1]]["error"])
    assert by_id[ids[2]]["parked_at"] is None, "held behind its order's parked row, not parked itself"

    # The relay is not stuck behind it: a row written afterwards goes out too.
    (after,) = await insert_rows(stack, [(later, event(later, 1))])
    await wait_for(
        lambda: topic_messages(stack.settings, ORDER_STATUS, key=later), timeout=30, what="a later row"
    )
    assert [
        orjson.loads(m.value)["seq"] for m in await topic_messages(stack.settings, ORDER_STATUS, key=good)
    ] == [
        1,
        2,
    ]
    assert await topic_messages(stack.settings, ORDER_STATUS, key=bad) == []
    assert not await fetch(stack.settings, "SELECT 1 FROM outbox WHERE id = $1", after)

    # Parked rows are an operator's matter, not publishing lag: once the admission samples the outbox
    # without this test's minute-old rows in flight, orders are taken again (a parked row counted as lag
    # would answer 503 for as long as it stays).
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:

        async def accepted() -> bool:
            response = await client.post("/api/orders/execute", json=order_body())
            return response.status_code == 202

        await wait_for(accepted, timeout=20, interval=0.5, what="orders taken beside a parked row")
    await fetch(stack.settings, "DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids[1:3])
