"""Routing and execution against the real pipeline: deterministic prices under MOCK_SEED, the slippage guard,
the retry loop seen over a WebSocket, the DLQ, the deadline, and two executors sharing partitions."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import pytest

from shared.domain.errors import DexError
from shared.domain.events import Dex, Quote, StatusEvent
from shared.domain.order import OrderRecord
from shared.domain.status import OrderStatus
from shared.messaging.kafka import new_producer
from shared.messaging.topics import ORDER_STATUS, ORDERS_DLQ
from shared.runtime.clock import utcnow
from shared.store.db import connect, create_pool
from shared.store.orders import STAGE_COLUMNS, Transition, message, write_transitions
from shared.store.steps import order_steps
from shared.venue.mock import MockDex
from shared.venue.model import FailureRates, Latency
from tests.fixtures.execution import (
    ORDER,
    assert_consistent_with_ledger,
    assert_gapless,
    ledger,
    place_many,
    read_topic,
    wait_terminal,
)
from tests.fixtures.stack import Stack, free_port, running_stack, wait_for
from tests.fixtures.venue import InMemoryLedger
from tests.integration.test_order_flow import place, watch

pytestmark = pytest.mark.integration

SEED = "issue-4"
PRICE_MOVE_BPS = 100


@pytest.fixture(scope="module")
async def seeded(infrastructure: object) -> AsyncIterator[Stack]:
    async with running_stack(
        MOCK_SEED=SEED,
        MOCK_PRICE_MOVE_BPS=str(PRICE_MOVE_BPS),
        RATE_LIMIT="0",
        STALE_STEP_MS="60000",  # so only the sweep for unpublished events can publish a lost one
    ) as stack:
        yield stack


def venue() -> MockDex:
    """The same venue as the stack's, computed here: a pure function of (seed, order, attempt)."""
    return MockDex(
        InMemoryLedger(),
        seed=SEED,
        latency=Latency((0, 0), (0, 0)),
        price_move=Decimal(PRICE_MOVE_BPS) / 10_000,
    )


def expected_quotes(order_id: str, body: dict[str, Any]) -> dict[str, Quote]:
    return {
        dex.value: venue().quote_now(
            dex,
            order_id=UUID(order_id),
            token_in=body["tokenIn"],
            token_out=body["tokenOut"],
            amount_in=Decimal(body["amountIn"]),
        )
        for dex in Dex
    }


async def test_under_a_seed_routing_and_prices_are_the_venues_pure_function(seeded: Stack) -> None:
    ids = [await place(seeded) for _ in range(3)]
    for order_id in ids:
        snapshot, live, _ = await watch(seeded, order_id)
        events = snapshot["logs"] + live
        building, last = events[2], events[-1]
        expected = expected_quotes(order_id, ORDER)
        assert building["quotes"] == {d: q.to_dict() for d, q in expected.items()}
        best = max(expected.values(), key=lambda q: q.amount_out)
        assert building["dex"] == best.dex.value
        assert last["status"] == "confirmed", last
        assert Decimal(last["executedPrice"]) == venue().execution_price(best, order_id=UUID(order_id))
        quoted, got = best.amount_out, Decimal(last["amountOut"])
        assert Decimal(last["slippageBps"]) == ((quoted - got) / quoted * 10_000).quantize(Decimal("0.01"))


async def test_a_swap_beyond_the_slippage_tolerance_fails_and_swaps_nothing(seeded: Stack) -> None:
    """With a 1 bps tolerance and a ±1 % price move, about half the swaps trip; the venue's own draw says
    which, so the test knows each order's fate in advance and places orders until one trips."""
    body = {**ORDER, "slippage": "0.0001"}
    ids: list[str] = []
    predicted: dict[str, bool] = {}
    while not any(predicted.values()) and len(ids) < 40:
        order_id = await place(seeded, body)
        ids.append(order_id)
        best = max(expected_quotes(order_id, body).values(), key=lambda q: q.amount_out)
        executed = venue().execution_price(best, order_id=UUID(order_id))
        got = (Decimal(body["amountIn"]) * executed * (1 - best.fee)).quantize(Decimal("0.000000001"))
        predicted[order_id] = got < best.amount_out * (1 - Decimal(body["slippage"]))
    rows = await wait_terminal(seeded, ids)
    for order_id, trips in predicted.items():
        row = rows[order_id]
        if trips:
            assert (row["status"], row["error"]) == ("failed", "slippage_exceeded"), order_id
            assert row["attempt"] == 1, "a slippage failure is not retried"
        else:
            assert row["status"] == "confirmed", order_id
    assert any(predicted.values())
    assert_consistent_with_ledger(rows, await ledger(seeded, ids))


async def test_two_executors_sharing_partitions_never_swap_twice(seeded: Stack) -> None:
    """A second executor joins while swaps are in flight: partitions move, uncommitted messages are
    delivered again to the newcomer, and still every order swaps at most once."""
    ids = await place_many(seeded, 60)
    second = seeded.start_service("executor-2", module="executor", EXECUTOR_METRICS_PORT=str(free_port()))
    try:

        async def second_swaps() -> bool:
            # keep orders coming until the newcomer has its partitions and swaps some of them
            ids.extend(await place_many(seeded, 10))
            return second.log_path.exists() and "order.confirmed" in second.log_path.read_text()

        await wait_for(second_swaps, timeout=60, interval=0.5, what="executor-2 to take partitions and swap")
        rows = await wait_terminal(seeded, ids, timeout=90)
        assert_consistent_with_ledger(rows, await ledger(seeded, ids))
        assert_gapless(rows, await read_topic(seeded, ORDER_STATUS))
    finally:
        second.stop()


@pytest.fixture(scope="module")
async def flaky(infrastructure: object) -> AsyncIterator[Stack]:
    """Every swap fails with a transient error; four attempts in all, so three waits: 2 s, 4 s, 8 s."""
    async with running_stack(
        MOCK_SWAP_TRANSIENT_ERROR_RATE="1",
        MAX_RETRIES="4",
        MOCK_EXECUTION_LATENCY_MIN_MS="0",
        MOCK_EXECUTION_LATENCY_MAX_MS="50",
    ) as stack:
        yield stack


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_retries_back_off_2_4_8_seconds_then_the_order_fails_into_the_dlq(flaky: Stack) -> None:
    order_id = await place(flaky)
    snapshot, live, close_code = await watch(flaky, order_id)
    events = snapshot["logs"] + live
    assert close_code == 1000
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    one_attempt = ["routing", "building", "submitted"]
    assert [e["status"] for e in events] == [
        "pending",
        *one_attempt,
        "pending",
        *one_attempt,
        "pending",
        *one_attempt,
        "pending",
        *one_attempt,
        "failed",
    ]
    retries = [e for e in events[1:] if e["status"] == "pending"]
    for number, (retry, delay) in enumerate(zip(retries, (2, 4, 8), strict=True), start=2):
        assert (retry["attempt"], retry["maxAttempts"]) == (number, 4)
        assert retry["error"] in ("venue_timeout", "blockhash_expired")
        due = ts(retry["nextRetryAt"])
        assert abs((due - ts(retry["at"])).total_seconds() - delay) < 0.05
        routed = events[events.index(retry) + 1]
        waited = (ts(routed["at"]) - ts(retry["at"])).total_seconds()
        assert delay - 0.2 <= waited <= delay + 3, (number, waited)
        assert routed["attempt"] == number
    submitted = [e["attempt"] for e in events if e["status"] == "submitted"]
    assert submitted == [1, 2, 3, 4]
    failed = events[-1]
    assert failed["attempt"] == 4 and failed["error"] in ("venue_timeout", "blockhash_expired")

    async def dead_letter() -> dict[str, Any] | None:
        letters = [m for m in await read_topic(flaky, ORDERS_DLQ) if m["orderId"] == order_id]
        return letters[0] if letters else None

    letter = await wait_for(dead_letter, timeout=10, interval=0.2, what="the order on orders.dlq")
    assert (letter["attempts"], letter["maxAttempts"], letter["error"]) == (4, 4, failed["error"])
    assert [e["attempt"] for e in letter["errors"]] == [1, 2, 3, 4]
    assert all(e["error"] in ("venue_timeout", "blockhash_expired") for e in letter["errors"])
    assert (letter["tokenIn"], letter["amountIn"]) == ("SOL", "1.5")
    assert not await ledger(flaky, [order_id])


@pytest.fixture(scope="module")
async def slow_venue(infrastructure: object) -> AsyncIterator[Stack]:
    """Swaps take 2.5-3 s and orders have 1.5 s: each one runs out of time while its swap is under way."""
    async with running_stack(
        ORDER_DEADLINE_MS="1500",
        MOCK_EXECUTION_LATENCY_MIN_MS="2500",
        MOCK_EXECUTION_LATENCY_MAX_MS="3000",
    ) as stack:
        yield stack


async def test_an_order_past_its_deadline_fails_with_timeout_and_nothing_swaps(slow_venue: Stack) -> None:
    order_id = await place(slow_venue)
    snapshot, live, close_code = await watch(slow_venue, order_id)
    events = snapshot["logs"] + live
    assert close_code == 1000
    failed = events[-1]
    assert (failed["status"], failed["failureReason"], failed["error"]) == ("failed", "timeout", "timeout")
    assert (ts(failed["at"]) - ts(events[0]["at"])).total_seconds() >= 1.5
    assert not await ledger(slow_venue, [order_id]), "no swap may land after the deadline"


async def test_the_sweep_fails_an_order_nobody_routes_once_its_deadline_passes(slow_venue: Stack) -> None:
    slow_venue.processes["router"].kill()  # the last test on this stack: nothing routes from now on
    order_id = await place(slow_venue)
    snapshot, live, close_code = await watch(slow_venue, order_id)
    events = snapshot["logs"] + live
    assert [e["status"] for e in events] == ["pending", "failed"]
    assert (events[-1]["failureReason"], close_code) == ("timeout", 1000)


async def test_the_watchdog_reports_a_stage_that_has_work_but_makes_no_progress(
    infrastructure: object,
) -> None:
    """One swap slot and 3 s swaps: the agent waits for the slot with a message queued behind it."""
    async with running_stack(
        RATE_LIMIT="0",
        QUEUE_CONCURRENCY="1",
        MOCK_EXECUTION_LATENCY_MIN_MS="3000",
        MOCK_EXECUTION_LATENCY_MAX_MS="3000",
        SWAP_WINDOW_MS="5000",
        WATCHDOG_STALL_MS="1000",
    ) as stack:
        health = f"http://127.0.0.1:{stack.settings.executor_metrics_port}/health"
        async with httpx.AsyncClient(timeout=5) as client:

            async def status(code: int) -> bool:
                try:
                    return (await client.get(health)).status_code == code
                except httpx.TransportError:
                    return False  # the stage is still starting

            await wait_for(lambda: status(200), timeout=30, interval=0.1, what="the executor's /health")
            ids = await place_many(stack, 2)

            await wait_for(lambda: status(503), timeout=30, interval=0.1, what="/health to report the stall")
            await wait_terminal(stack, ids, timeout=60)
            await wait_for(lambda: status(200), timeout=30, interval=0.1, what="/health to recover")


async def test_routing_uses_the_venue_that_answers_and_fails_when_none_does(infrastructure: object) -> None:
    """Half the quotes time out (seeded, so the test knows which): one venue down routes on the other; both
    down is retriable, and with a single attempt allowed the order fails with quote_unavailable."""
    async with running_stack(
        MOCK_SEED=SEED, MOCK_QUOTE_TRANSIENT_ERROR_RATE="0.5", MAX_RETRIES="1", RATE_LIMIT="0"
    ) as stack:
        flaky_venue = MockDex(
            InMemoryLedger(),
            seed=SEED,
            latency=Latency((0, 0), (0, 0)),
            failures=FailureRates(quote_transient=0.5),
        )
        ids = await place_many(stack, 12)
        rows = await wait_terminal(stack, ids)
        answered: dict[str, set[str]] = {}
        for order_id in ids:
            answered[order_id] = set()
            for dex in Dex:
                try:
                    flaky_venue.quote_now(
                        dex,
                        order_id=UUID(order_id),
                        token_in="SOL",
                        token_out="USDC",
                        amount_in=Decimal("1.5"),
                    )
                    answered[order_id].add(dex.value)
                except DexError:
                    pass
            row = rows[order_id]
            building = next((e for e in row["logs"] if e["status"] == "building"), None)
            if answered[order_id]:
                assert building is not None and set(building["quotes"]) == answered[order_id], order_id
                assert row["dex_used"] in answered[order_id]
            else:
                assert (row["status"], row["error"], building) == ("failed", "quote_unavailable", None)
        assert any(len(a) == 1 for a in answered.values()), "no order met a single venue down (1 in 2^12)"


async def commit_routing_unpublished(stack: Stack) -> OrderRecord:
    """An order a router moved to routing in Postgres before dying: its event is committed in the outbox and
    nothing about it is on Kafka. Returns the order as it now stands (seq 2)."""
    order_id = uuid.uuid4()
    pending = StatusEvent(order_id=order_id, seq=1, status=OrderStatus.PENDING, at=utcnow(), max_attempts=3)
    conn = await connect(stack.settings.database_url, jsonb=False)
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
    try:
        await conn.execute(
            "INSERT INTO orders (id, type, token_in, token_out, amount_in, slippage, status, seq, logs)"
            " VALUES ($1, 'market', 'SOL', 'USDC', 1, 0.01, 'pending', 1, jsonb_build_array($2::jsonb))",
            order_id,
            pending.to_dict(),
        )
        row = await conn.fetchrow(f"SELECT {STAGE_COLUMNS} FROM orders WHERE id = $1", order_id)
        order = OrderRecord.from_row(row)
        routing = order.next_event(OrderStatus.ROUTING, max_attempts=3, attempt=1)
        transition = Transition(order, routing, (message(ORDER_STATUS, order, routing),))
        written = await write_transitions(conn, [transition], logs_max=50)  # committed, never published
    finally:
        await conn.close()
    updated = written.results[0]
    assert updated is not None and [r.topic for r in written.rows] == [ORDER_STATUS.name]
    return updated


async def status_seqs(stack: Stack, order_id: UUID) -> list[int]:
    return [e["seq"] for e in await read_topic(stack, ORDER_STATUS) if e["orderId"] == str(order_id)]


async def test_an_event_committed_by_a_stage_that_died_before_publishing_it_still_reaches_the_topic(
    seeded: Stack,
) -> None:
    """The outbox relay of a live process publishes the event a dead writer committed."""
    order = await commit_routing_unpublished(seeded)

    async def published() -> bool:
        return 2 in await status_seqs(seeded, order.id)

    await wait_for(published, timeout=30, interval=0.5, what="the committed routing event on order.status")


async def test_the_next_event_of_an_order_never_reaches_the_topic_before_an_unpublished_one(
    seeded: Stack,
) -> None:
    """Given routing (seq 2) committed and unpublished, a writer that moves the order on to building (seq 3)
    before the relay's grace has passed sends seq 2 first: the topic keeps the order's seq order."""
    order = await commit_routing_unpublished(seeded)
    pool = await create_pool(seeded.settings.database_url, max_size=2)
    producer = new_producer(seeded.settings)
    await producer.start()
    try:
        async with order_steps(pool, producer, seeded.settings) as steps:
            building = order.next_event(OrderStatus.BUILDING, max_attempts=3, dex=Dex.RAYDIUM)
            assert await steps.step(order, building) is not None

            async def both_published() -> list[int] | None:
                seqs = await status_seqs(seeded, order.id)
                return seqs if 3 in seqs else None

            seqs = await wait_for(both_published, timeout=30, interval=0.2, what="seq 3 on order.status")
    finally:
        await producer.stop()
        await pool.close()
    assert seqs[:2] == [2, 3], seqs
