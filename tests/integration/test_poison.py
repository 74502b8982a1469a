"""Poison messages against the real processes (I8): a message nobody can read, sent straight to every topic
a process of the engine reads, between real orders placed over HTTP. Every real order still confirms, the
stages count each poison message once under its reason, copy it byte for byte to the topic's quarantine and
commit past it; the notifier counts it and goes on delivering; the analytics example counts and skips it.

A stack of its own: the poison stays on its topics, and the schema test of tests/integration/test_contracts.py
reads every message of the shared stack's topics."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from websockets.asyncio.client import connect

from shared.domain.events import RetryOrder, StatusEvent
from shared.domain.status import OrderStatus
from shared.messaging.kafka import CORRELATION_HEADER, new_producer
from shared.messaging.topics import (
    EXECUTOR_GROUP,
    ORDER_STATUS,
    ORDERS,
    ORDERS_EXECUTE,
    ORDERS_RETRY,
    QUARANTINES,
    ROUTER_GROUP,
    TopicSpec,
)
from shared.runtime.config import Settings
from tests.fixtures.driver import driving
from tests.fixtures.execution import run_analytics
from tests.fixtures.notifier import LIFECYCLE, read_to_close, recv, seqs
from tests.fixtures.orders import order_status, topic_messages, wait_status
from tests.fixtures.stack import Stack, log_events, running_stack, wait_for
from tests.integration.test_order_flow import HAPPY_PATH, place, watch

pytestmark = pytest.mark.integration

STAGE_TOPICS = (ORDERS, ORDERS_EXECUTE, *ORDERS_RETRY)
T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)


BAD_CORRELATION = [(CORRELATION_HEADER, b"\xff\xfe")]


def poisons(spec: TopicSpec) -> list[tuple[str, bytes | None, bytes]]:
    """(reason, key, value) of each kind of poison for `spec`: a key that is not UTF-8, a value that is not
    JSON, JSON that is not the topic's model, and (sent with BAD_CORRELATION) a correlation header that is
    not UTF-8. A retry topic also gets a retry whose due time has no offset: pydantic takes it, and the retry
    agent's wait on it raised TypeError."""
    kinds: list[tuple[str, bytes | None, bytes]] = [
        ("key", b"\xff\xfe", b'{"v": 1}'),
        ("value", str(uuid.uuid4()).encode(), b"\x00\x01 not json"),
        ("schema", str(uuid.uuid4()).encode(), b'{"v": 1, "orderId": 12345}'),
        ("headers", str(uuid.uuid4()).encode(), b"{}"),
    ]
    if spec in ORDERS_RETRY:
        order_id = uuid.uuid4()
        retry = RetryOrder(order_id=order_id, attempt=2, due_at=T0, created_at=T0, error="venue_timeout")
        value = retry.to_json().replace(b'"dueAt":"2026-11-27T12:00:00Z"', b'"dueAt":"2026-11-27T12:00:00"')
        assert value != retry.to_json()
        kinds.append(("schema", str(order_id).encode(), value))
    return kinds


@pytest.fixture(scope="module")
async def poisoned(infrastructure: Settings) -> AsyncIterator[Stack]:
    # No re-drive of stale orders: an order a stage dropped would stay pending until its deadline fails it,
    # instead of being saved by the sweep 10 s later.
    async with running_stack(STALE_STEP_MS="600000") as started:
        yield started


async def rejected(port: int) -> Counter[tuple[str, str]]:
    """messages_rejected_total of the process serving /metrics on `port`, by (topic, reason)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    counts: Counter[tuple[str, str]] = Counter()
    for labels, value in re.findall(r"^messages_rejected_total\{(.*)\} (\S+)$", text, re.MULTILINE):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        counts[(label["topic"], label["reason"])] = int(float(value))
    return counts


async def send(
    producer: AIOKafkaProducer,
    stack: Stack,
    spec: TopicSpec,
    key: bytes | None,
    value: bytes,
    partition: int,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Send raw bytes to a partition of the stack's `spec` topic; returns the offset the broker gave it."""
    metadata = await producer.send_and_wait(
        stack.settings.topic(spec.name), value, key=key, partition=partition, headers=headers
    )
    return int(metadata.offset)


async def committed(stack: Stack, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(stack.settings.topic(group))
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


@contextmanager
def paused(stack: Stack, name: str) -> Iterator[None]:
    """The stack's process `name` stopped (SIGSTOP) for the block, so that what is sent to it meanwhile
    reaches it at once, in one batch; continued however the block ends. Kept to a few seconds: a stage
    stopped longer than its session timeout (10 s) would be dropped from its group."""
    popen = stack.processes[name].popen
    assert popen is not None
    popen.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        popen.send_signal(signal.SIGCONT)


async def test_the_stages_set_aside_poison_and_finish_every_order_around_it(poisoned: Stack) -> None:
    stack = poisoned
    partitions = range(stack.settings.topic_partitions)
    producer = new_producer(stack.settings)
    await producer.start()
    sent: dict[TopicSpec, list[tuple[int, int, str, bytes | None, bytes]]] = {
        spec: [] for spec in STAGE_TOPICS
    }
    markers: list[str] = []

    async def poison(*specs: TopicSpec) -> None:
        for spec in specs:
            for partition in partitions:
                for reason, key, value in poisons(spec):
                    headers = BAD_CORRELATION if reason == "headers" else None
                    offset = await send(producer, stack, spec, key, value, partition, headers)
                    sent[spec].append((partition, offset, reason, key, value))

    try:
        # Given real orders placed over HTTP between poison messages on every partition of every topic
        # the stages read, while the stages are stopped: each stage's first batch holds both (a stage whose
        # agent raised on the poison lost the rest of its batch, and the orders in it stayed pending)
        with paused(stack, "executor"):
            with paused(stack, "router"):
                orders = [await place(stack) for _ in range(2)]
                await poison(*STAGE_TOPICS)
                orders += [await place(stack) for _ in range(2)]
                await poison(ORDERS)
                orders += [await place(stack) for _ in range(2)]
                # and, behind the poison on each retry partition, a retry of an order nobody knows (due now)
                for spec in ORDERS_RETRY:
                    for partition in partitions:
                        marker = uuid.uuid4()
                        now = datetime.now(UTC)
                        retry = RetryOrder(
                            order_id=marker, attempt=2, due_at=now, created_at=now, error="venue_timeout"
                        )
                        await send(producer, stack, spec, str(marker).encode(), retry.to_json(), partition)
                        markers.append(str(marker))

            # (the router routes them: their commands queue for the executor behind the first poison)
            async def all_routed() -> bool:
                return all([await order_status(stack, order_id) == "building" for order_id in orders])

            await wait_for(all_routed, timeout=8, interval=0.1, what="the router to route every order")
            await poison(ORDERS_EXECUTE)
    finally:
        await producer.stop()

    # Then every real order confirms
    for order_id in orders:
        assert await wait_status(stack, order_id) == "confirmed", stack.diagnostics()

    # and each retry agent read on past its poison: the router looked up every marker (and found no order)
    async def markers_routed() -> bool:
        seen = {line.get("orderId") for line in log_events(stack, "order.unknown", "router")}
        return seen >= set(markers)

    await wait_for(
        markers_routed, timeout=30, interval=0.5, what="the retries behind the poison to be routed"
    )

    # and each stage counted each poison message once, under its topic and reason
    expected = {
        "router": Counter(
            (spec.name, reason) for spec in (ORDERS, *ORDERS_RETRY) for _, _, reason, _, _ in sent[spec]
        ),
        "executor": Counter((ORDERS_EXECUTE.name, reason) for _, _, reason, _, _ in sent[ORDERS_EXECUTE]),
    }
    ports = {"router": stack.settings.router_metrics_port, "executor": stack.settings.executor_metrics_port}
    for stage, counts in expected.items():

        async def counted(port: int = ports[stage], counts: Counter[tuple[str, str]] = counts) -> bool:
            return only(await rejected(port), counts) == counts

        await wait_for(counted, timeout=30, interval=0.5, what=f"{stage} to count {dict(counts)}")
    assert expected["router"][(ORDERS.name, "key")] == 2 * len(partitions)

    # and logged each one once, with its topic, partition and offset
    wanted = Counter(
        (spec.name, partition, offset) for spec in STAGE_TOPICS for partition, offset, *_ in sent[spec]
    )

    def logged_once() -> bool:
        lines = log_events(stack, "message.rejected", "router", "executor")
        return Counter((line["topic"], line["partition"], line["offset"]) for line in lines) == wanted

    await wait_for(logged_once, timeout=10, interval=0.2, what="one message.rejected line per poison message")

    # and copied each one, as received, to its topic's quarantine, saying where it came from and why
    for spec in STAGE_TOPICS:
        records = await topic_messages(stack.settings, QUARANTINES[spec.name])
        copies = []
        for record in records:
            headers = dict(record.headers)
            assert headers["x-quarantine-topic"] == stack.settings.topic(spec.name).encode()
            if headers["x-quarantine-reason"] == b"headers":
                assert headers[CORRELATION_HEADER] == b"\xff\xfe", "the original's headers come with it"
            copies.append(
                (
                    int(headers["x-quarantine-partition"]),
                    int(headers["x-quarantine-offset"]),
                    headers["x-quarantine-reason"].decode(),
                    record.key,
                    record.value,
                )
            )
        assert sorted(copies) == sorted(sent[spec]), f"{spec.name}: one copy of each poison message"

    # and committed past it: nothing is read again
    for group, specs in ((ROUTER_GROUP, (ORDERS, *ORDERS_RETRY)), (EXECUTOR_GROUP, (ORDERS_EXECUTE,))):

        async def past_the_poison(group: str = group, specs: tuple[TopicSpec, ...] = specs) -> bool:
            offsets = await committed(stack, group)
            return all(
                offsets.get(TopicPartition(stack.settings.topic(spec.name), partition), -1) > offset
                for spec in specs
                for partition, offset, *_ in sent[spec]
            )

        await wait_for(past_the_poison, timeout=30, interval=0.5, what=f"{group} to commit past the poison")
    # (the counts are still exact: no message was read twice)
    for stage, counts in expected.items():
        assert only(await rejected(ports[stage]), counts) == counts


def only(counts: Counter[tuple[str, str]], wanted: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """The series of `counts` on the topics of `wanted`, zeros left out."""
    topics = {topic for topic, _ in wanted}
    return Counter({k: v for k, v in counts.items() if k[0] in topics and v})


async def test_the_notifier_counts_poison_and_keeps_delivering(poisoned: Stack) -> None:
    stack = poisoned
    port = stack.settings.notifier_port
    before = await rejected(port)
    async with driving(stack) as driver:
        order_id = await driver.create()
        async with connect(f"{stack.ws_url}?orderId={order_id}", open_timeout=10) as ws:
            assert (await recv(ws))["seq"] == 1  # the snapshot
            # Given poison on order.status: keys that are not UTF-8 on every partition, and, keyed by the
            # order this client follows (so the notifier decodes them), a value that is not JSON, JSON that
            # is not a StatusEvent, and another order's event at the next seq.
            foreign = StatusEvent(
                order_id=uuid.uuid4(),
                seq=2,
                status=OrderStatus.CONFIRMED,
                at=datetime.now(UTC),
                max_attempts=3,
            )
            key = order_id.encode()
            poison = [(b"\xff\xfe", b"{}") for _ in range(stack.settings.topic_partitions)]
            poison += [(key, b"][ not json"), (key, b'{"v": 1, "seq": "two"}'), (key, foreign.to_json())]
            for partition, (k, v) in enumerate(poison):
                await send(
                    driver.producer, stack, ORDER_STATUS, k, v, partition % stack.settings.topic_partitions
                )
            wanted = Counter({"key": stack.settings.topic_partitions + 1, "value": 1, "schema": 1})

            async def counted() -> bool:
                after = await rejected(port)
                return (
                    Counter(
                        {r: after[(ORDER_STATUS.name, r)] - before[(ORDER_STATUS.name, r)] for r in wanted}
                    )
                    == wanted
                )

            await wait_for(counted, timeout=20, interval=0.2, what="the notifier to count the poison")

            # When the order then moves on
            for status in LIFECYCLE:
                await driver.advance(order_id, status)
            live = await asyncio.wait_for(read_to_close(ws), 30)

        # Then the client got its own order's events, every one once, and nothing of the other order
        assert [m["status"] for m in live] == [s.value for s in LIFECYCLE]
        assert seqs(live) == [2, 3, 4, 5] and {m["orderId"] for m in live} == {order_id}
        assert ws.close_code == 1000

    # and a real order placed after the poison is followed to its end as usual
    snapshot, events, close_code = await asyncio.wait_for(watch(stack, await place(stack)), 60)
    assert [e["status"] for e in snapshot["logs"] + events] == HAPPY_PATH and close_code == 1000


async def test_the_analytics_example_counts_and_skips_poison(poisoned: Stack) -> None:
    stack = poisoned
    producer = new_producer(stack.settings)
    await producer.start()
    try:
        await send(producer, stack, ORDER_STATUS, b"\xff", b"{}", 0)
        await send(producer, stack, ORDER_STATUS, str(uuid.uuid4()).encode(), b"not json", 1)
    finally:
        await producer.stop()
    await wait_status(stack, await place(stack))

    summary, err = await run_analytics(stack)  # the log lines go to stderr
    rejections = [json.loads(line) for line in err.splitlines() if b'"message.rejected"' in line]
    assert summary["unreadableMessages"] == len(rejections) >= 2
    assert {line["topic"] for line in rejections} == {ORDER_STATUS.name}
    assert summary["confirmed"] >= 1
