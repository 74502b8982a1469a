"""Faults on a stack of its own, pointed at a throwaway Redis and a throwaway Kafka broker that these tests
stop and start (the shared engines are never touched): Redis down, Kafka down, Postgres cut off (through a
forwarder the test controls), and an ingress killed between its commit and the relay's publish."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest

from shared.messaging.topics import ORDERS
from tests.fixtures.clients import http_from, loopback_address
from tests.fixtures.orders import (
    TERMINAL,
    fetch,
    open_orders,
    order_body,
    order_status,
    topic_messages,
    wait_status,
)
from tests.fixtures.stack import Stack, running_stack, wait_for
from tests.fixtures.throwaway import CuttableLink, ThrowawayKafka, ThrowawayRedis

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

EXECUTE = "/api/orders/execute"
DEPENDENCY_TIMEOUT_S = 2.0


@dataclass
class Faults:
    stack: Stack
    redis: ThrowawayRedis
    kafka: ThrowawayKafka


@pytest.fixture(scope="module")
async def faults(infrastructure: object) -> AsyncIterator[Faults]:
    redis, kafka = ThrowawayRedis(), ThrowawayKafka()
    await redis.start()
    await kafka.start()
    try:
        async with running_stack(
            REDIS_URL=redis.url,
            KAFKA_BOOTSTRAP_SERVERS=kafka.servers,
            RATE_LIMIT="1000",  # on, so that its fail-open behaviour is what the Redis test sees
            DEPENDENCY_TIMEOUT_MS=str(int(DEPENDENCY_TIMEOUT_S * 1000)),
        ) as stack:
            yield Faults(stack, redis, kafka)
    finally:
        redis.stop()
        kafka.remove()


async def post(stack: Stack, key: str | None = None, ip: str | None = None) -> httpx.Response:
    """POST an order from loopback address `ip` (a fresh one by default: its own rate-limit bucket)."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    async with http_from(stack, ip or loopback_address(), timeout=30) as client:
        return await client.post(EXECUTE, json=order_body(), headers=headers)


async def test_redis_down_still_takes_orders_and_keeps_their_keys(faults: Faults) -> None:
    """Redis holds only the rate limit, which fails open (documented): without it, orders with and without
    an Idempotency-Key are taken, and a repeated key still replays its order (keys live in Postgres)."""
    stack = faults.stack
    faults.redis.stop()
    try:
        key, ip = str(uuid.uuid4()), loopback_address()
        started = time.monotonic()
        keyed = await post(stack, key=key, ip=ip)
        assert time.monotonic() - started < DEPENDENCY_TIMEOUT_S + 3
        assert keyed.status_code == 202, keyed.text
        repeat = await post(stack, key=key, ip=ip)
        assert repeat.status_code == 202 and repeat.headers["idempotent-replayed"] == "true", repeat.text
        assert repeat.json()["orderId"] == keyed.json()["orderId"]
        admitted = await post(stack)
        assert admitted.status_code == 202, admitted.text
        async with httpx.AsyncClient(base_url=stack.base_url) as client:
            ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text  # a load balancer keeps sending orders here
        assert ready.json() == {
            "status": "degraded",
            "checks": {"postgres": "ok", "redis": "down", "kafka": "ok"},
        }
    finally:
        await faults.redis.start()
    for order_id in (keyed.json()["orderId"], admitted.json()["orderId"]):
        assert await wait_status(stack, order_id) in TERMINAL


async def test_kafka_down_is_503_and_no_accepted_order_stays_pending(faults: Faults) -> None:
    stack = faults.stack
    accepted = [(await post(stack)).json()["orderId"]]
    faults.kafka.kill()
    try:

        async def refused() -> httpx.Response | None:
            started = time.monotonic()
            response = await post(stack)
            assert time.monotonic() - started < DEPENDENCY_TIMEOUT_S + 3, "bounded time"
            assert response.status_code in (202, 503), response.text
            if response.status_code == 202:  # accepted in the last backlog sample's second: kept, delayed
                accepted.append(response.json()["orderId"])
                return None
            return response

        response = await wait_for(refused, timeout=30, interval=0.1, what="503 with Kafka down")
        assert response.json()["error"] == "service_unavailable"
    finally:
        await faults.kafka.start()

    # What ingress guarantees: every accepted order's OrderPlaced reaches `orders` once Kafka is back.
    await wait_for(lambda: outbox_drained(stack), timeout=60, what="the outbox to drain after the outage")
    for order_id in accepted:
        assert await topic_messages(stack.settings, ORDERS, key=order_id), order_id

    # What the pipeline guarantees: each of them finishes and none stays open. A stage whose faust worker
    # gave up while the broker was away has exited; like its supervisor (compose's restart policy), the
    # test starts it again. A stage that stayed up is never restarted: if it rejoined its group while the
    # restarted broker's metadata still lacked a topic, it gets its partitions at the next metadata refresh
    # (KAFKA_METADATA_MAX_AGE_MS) rather than after faust's default of 5 minutes.
    restarted: list[str] = []

    def supervise() -> None:
        for name in ("router", "executor"):
            popen = stack.processes[name].popen
            if popen is not None and popen.poll() is not None:
                restarted.append(name)
                stack.start_service(name)

    assert await all_finished(stack, accepted, timeout=90, between=supervise), (
        f"accepted orders left unfinished (stages restarted after exiting: {restarted})"
    )
    await wait_for(lambda: open_orders_is_zero(stack), timeout=60, what="no order left open")

    async def accepting() -> bool:
        return (await post(stack)).status_code == 202

    await wait_for(accepting, timeout=30, interval=0.2, what="orders accepted again")


async def outbox_drained(stack: Stack) -> bool:
    rows = await fetch(stack.settings, "SELECT count(*) AS n FROM outbox")
    return bool(rows[0]["n"] == 0)


async def all_finished(
    stack: Stack, order_ids: list[str], timeout: float, between: Callable[[], None] = lambda: None
) -> bool:
    async def finished() -> bool:
        between()
        return all([await order_status(stack, order_id) in TERMINAL for order_id in order_ids])

    try:
        await wait_for(finished, timeout=timeout, interval=0.3, what="accepted orders to finish")
    except AssertionError:
        return False
    return True


async def open_orders_is_zero(stack: Stack) -> bool:
    return await open_orders(stack) == 0


async def test_postgres_unreachable_is_503_in_bounded_time(faults: Faults) -> None:
    """The ingress reaches Postgres through a link the test cuts; the shared Postgres itself stays up."""
    stack = faults.stack
    host, port = stack.settings.database_address
    link = CuttableLink(host, port)
    await link.start()
    proxied = stack.settings.database_url.replace(f"{host}:{port}", f"127.0.0.1:{link.port}")
    stack.processes["ingress"].stop()
    stack.start_service("ingress", DATABASE_URL=proxied)
    try:
        await stack.wait_ready(["ingress"])
        accepted = await post(stack)
        assert accepted.status_code == 202
        await link.cut()
        for attempt in range(2):  # the first finds its pooled connection dead, the second cannot connect
            started = time.monotonic()
            refused = await post(stack)
            assert time.monotonic() - started < 10, "bounded by the pool's connect and command timeouts"
            assert refused.status_code == 503, (attempt, refused.text)
            assert refused.json()["error"] == "service_unavailable"
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            lookup = await client.get(f"/api/orders/{accepted.json()['orderId']}")
        assert lookup.status_code == 503 and lookup.json()["error"] == "service_unavailable"
    finally:
        await link.cut()
        stack.processes["ingress"].stop()
        stack.start_service("ingress")
        await stack.wait_ready(["ingress"])
    assert await wait_status(stack, accepted.json()["orderId"]) in TERMINAL


async def test_an_order_committed_by_an_ingress_killed_before_publishing_still_completes(
    faults: Faults,
) -> None:
    """Given an ingress whose relay only polls (every 10 minutes), an accepted order sits committed in the
    outbox; the process is SIGKILLed; a relay publishes that committed row and the order completes. The
    executor's sweep would also finish it (it re-drives a stalled order with a new `orders` message): that
    the topic holds exactly one message for the order, and the committed rows are gone, shows the relay
    did it."""
    stack = faults.stack
    stack.processes["ingress"].stop()
    stack.start_service("ingress", OUTBOX_FAST_PATH="false", OUTBOX_POLL_INTERVAL_MS="600000")
    await stack.wait_ready(["ingress"])
    response = await post(stack)
    assert response.status_code == 202
    order_id = uuid.UUID(response.json()["orderId"])
    rows = await fetch(
        stack.settings,
        "SELECT count(*) AS n FROM outbox WHERE key = $1",
        str(order_id),
    )
    assert rows[0]["n"] == 2, "the pending event and OrderPlaced, committed but not published"

    stack.processes["ingress"].kill()
    rows = await fetch(stack.settings, "SELECT status FROM orders WHERE id = $1", order_id)
    assert [r["status"] for r in rows] == ["pending"]
    stack.start_service("ingress")
    await stack.wait_ready(["ingress"])
    assert await wait_status(stack, str(order_id)) in TERMINAL
    assert len(await topic_messages(stack.settings, ORDERS, key=str(order_id))) == 1, "not a re-drive"
    rows = await fetch(stack.settings, "SELECT count(*) AS n FROM outbox WHERE key = $1", str(order_id))
    assert rows[0]["n"] == 0
