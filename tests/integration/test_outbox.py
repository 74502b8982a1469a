"""The outbox against real Kafka. On the session stack's relays: a row Kafka refuses for good is parked,
not retried with its batch forever; the rest of the batch and later batches go out, its order's later rows
wait behind it, and admission does not count it as publishing lag. On a stack of its own whose ingress and
router carry a producer fault (tests/fixtures/faultinject): a producer that fails as a producer parks
nothing, is replaced while its process says it is not ready, and every accepted order finishes; a
replacement that fails too ends the process, and a restarted one finishes its orders."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from shared.messaging.topics import ORDER_STATUS
from shared.runtime.config import Settings
from shared.runtime.tasks import EXIT_STATUS
from tests.fixtures.execution import assert_gapless, read_topic, wait_terminal
from tests.fixtures.faultinject import exit_status, inject, restart_hooked
from tests.fixtures.orders import fetch, order_body, topic_messages
from tests.fixtures.stack import Stack, log_events, running_stack, wait_for

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


# --- a producer that fails as a producer ---------------------------------------------------------------

REPLACEMENT_DELAY_S = 4.0  # how long a replacement producer takes to start: the window the tests look into


@pytest.fixture(scope="module")
async def faulty(infrastructure: Settings) -> AsyncIterator[Stack]:
    """A stack whose ingress and router go fatal at their next produce request each time they are told to
    (`inject`), and whose replacement producers take REPLACEMENT_DELAY_S to start."""
    async with running_stack() as stack:
        for name in ("ingress", "router"):
            await restart_hooked(stack, name, "producer", replacement_delay_s=REPLACEMENT_DELAY_S)
        yield stack


async def place(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/orders/execute", json=order_body())
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


async def ready(port: int) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/ready")
    return response.status_code, response.json()


async def all_published(stack: Stack, ids: list[str]) -> None:
    """Every order finished, none of its rows parked or left in the outbox, and `order.status` holds each of
    its events once: nothing was lost to the failed producer."""
    rows = await wait_terminal(stack, ids)

    async def drained() -> bool:
        left = await fetch(stack.settings, "SELECT parked_at FROM outbox WHERE key = ANY($1::text[])", ids)
        assert not any(r["parked_at"] for r in left), "a producer's failure parked a row"
        return not left

    await wait_for(drained, timeout=30, what="every row sent")
    assert_gapless(rows, await read_topic(stack, ORDER_STATUS))
    assert not await fetch(stack.settings, "SELECT 1 FROM outbox WHERE parked_at IS NOT NULL")


@pytest.mark.slow
@pytest.mark.serial
async def test_a_fatal_producer_in_ingress_is_replaced_and_every_order_goes_out(faulty: Stack) -> None:
    stack = faulty
    ingress = stack.processes["ingress"]
    assert ingress.popen is not None
    pid, port = ingress.popen.pid, stack.settings.ingress_port
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        placed = [await place(client) for _ in range(5)]
        inject(ingress)
        placed.append(await place(client))  # committed, answered 202; its rows meet the fault

        # While the new producer starts, nothing leaves this ingress: it says so, and takes no order.
        async def not_ready() -> dict[str, Any] | None:
            status, body = await ready(port)
            return body if status == 503 else None

        body = await wait_for(not_ready, timeout=REPLACEMENT_DELAY_S, interval=0.05, what="/ready 503")
        assert body["checks"]["kafka"] == "down", body
        refused = await client.post("/api/orders/execute", json=order_body())
        assert refused.status_code == 503 and refused.json()["error"] == "service_unavailable", refused.text

        async def ready_again() -> bool:
            return (await ready(port))[0] == 200

        await wait_for(ready_again, timeout=30, interval=0.2, what="ingress ready with its new producer")
        placed += [await place(client) for _ in range(5)]
    await all_published(stack, placed)
    assert ingress.popen.poll() is None and ingress.popen.pid == pid, "replaced in place, not restarted"
    assert len(log_events(stack, "outbox.producer_replaced", "ingress")) == 1


@pytest.mark.slow
@pytest.mark.serial
async def test_a_fatal_producer_in_a_stage_is_replaced_and_every_order_goes_out(faulty: Stack) -> None:
    stack = faulty
    router = stack.processes["router"]
    assert router.popen is not None
    pid, port = router.popen.pid, stack.settings.router_metrics_port
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        inject(router)
        placed = [await place(client) for _ in range(5)]  # the router's first send meets the fault

        async def not_publishing() -> bool:
            status, body = await ready(port)
            return status == 503 and body["status"] == "not_publishing"

        await wait_for(not_publishing, timeout=15, interval=0.05, what="the router's /ready 503")
        placed += [await place(client) for _ in range(5)]
    await all_published(stack, placed)

    async def ready_again() -> bool:
        return (await ready(port))[0] == 200

    await wait_for(ready_again, timeout=30, interval=0.2, what="the router ready with its new producer")
    assert router.popen.poll() is None and router.popen.pid == pid, "replaced in place, not restarted"
    assert len(log_events(stack, "outbox.producer_replaced", "router")) == 1


@pytest.mark.slow
@pytest.mark.serial
async def test_a_replacement_that_fails_too_ends_the_process_and_its_orders_still_go_out(
    faulty: Stack,
) -> None:
    """Last in this module: it ends the stack's ingress (and starts it again)."""
    stack = faulty
    ingress = stack.processes["ingress"]
    ingress.stop()  # a process that has replaced no producer yet (the first test's did)
    ingress.start()
    await stack.wait_ready(["ingress"])
    assert ingress.popen is not None
    replaced = len(log_events(stack, "outbox.producer_replaced", "ingress"))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        inject(ingress)
        placed = [await place(client)]
        await wait_for(
            lambda: len(log_events(stack, "outbox.producer_replaced", "ingress")) > replaced,
            timeout=30,
            what="a first replacement",
        )
        await stack.wait_ready(["ingress"])
        inject(ingress)  # the replacement fails within PRODUCER_RETRY_WINDOW_S: the process gives up
        last = await client.post("/api/orders/execute", json=order_body())
        if last.status_code == 202:  # else the fault met a relayed row first, and this POST a 503
            placed.append(str(last.json()["orderId"]))
        assert await exit_status(ingress, timeout=60) == EXIT_STATUS, ingress.tail()
        died = log_events(stack, "task.essential_died", "ingress")
        assert died and {line["task"] for line in died} <= {"outbox-sender", "outbox-relay"}, died
        assert log_events(stack, "outbox.producer_lost", "ingress")

        ingress.start()  # as its supervisor would; without a signal the fault stays disarmed
        await stack.wait_ready(["ingress"])
        placed.append(await place(client))
    await all_published(stack, placed)
