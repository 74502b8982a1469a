"""Chaos rows whose fault is what others send: undecodable messages on every topic a service consumes, and a
POST with a hostile X-Forwarded-For inside a burst that shares its group commits. The same load, the same
checker and the same bar as tests/chaos/test_chaos.py; on top, no process may have needed a restart (a
consumer that a message killed would exit, and the supervisor would show it)."""

from __future__ import annotations

import secrets
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from shared.messaging.kafka import CORRELATION_HEADER
from shared.messaging.topics import ORDER_STATUS, ORDERS, ORDERS_EXECUTE, ORDERS_RETRY
from tests.chaos.history import Clients
from tests.chaos.test_chaos import Fault, assert_no_violation, run_scenario
from tests.fixtures.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

CONSUMED = (ORDERS, ORDERS_EXECUTE, *ORDERS_RETRY, ORDER_STATUS)


def poison_messages() -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) that no consumer can read: a key that is not UTF-8, a value that is not JSON,
    JSON of no message's shape, and a well-formed message whose correlation header is not UTF-8."""
    order_id = str(uuid.uuid4()).encode()
    return [
        (b"\xff\xfe\xfd", b'{"v":1}', []),
        (order_id, b"\x00\x9fnot json", []),
        (order_id, b'{"v":1,"orderId":"not-a-uuid","seq":"x"}', []),
        (order_id, b'{"v":1,"orderId":"' + order_id + b'"}', [(CORRELATION_HEADER, b"\xff\xfe")]),
    ]


def poison() -> Fault:
    async def inject(stack: Stack) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_servers, acks="all")
        await producer.start()
        try:
            for spec in CONSUMED:
                for key, value, headers in poison_messages():
                    await producer.send_and_wait(
                        stack.settings.topic(spec.name), value=value, key=key, headers=headers
                    )
        finally:
            await producer.stop()

    async def heal(_: Stack) -> None:
        pass

    return Fault(inject, heal, {})


# An IPv6 scope id of random text, which Postgres cannot compress below a btree row's limit (~2.7 KB); the
# scenario raises MAX_HEADER_BYTES so that it reaches the identity check instead of the 431.
HOSTILE_FORWARDED_FOR = "fe80::1%" + secrets.token_urlsafe(6000)[:8000]
BURST = 120


def hostile_burst(clients: list[Clients]) -> Fault:
    """BURST POSTs at once straight to ingress (whose peer, 127.0.0.1, is a trusted proxy: its
    X-Forwarded-For is believed), one of them naming HOSTILE_FORWARDED_FOR. They share group commits."""

    async def inject(stack: Stack) -> None:
        await clients[0].burst(
            BURST,
            f"http://127.0.0.1:{stack.settings.ingress_port}",
            {BURST // 2: {"X-Forwarded-For": HOSTILE_FORWARDED_FOR}},
        )

    async def heal(_: Stack) -> None:
        pass

    return Fault(inject, heal, {"MAX_HEADER_BYTES": "32768"}, clients=clients)


async def test_poison_on_every_consumed_topic_breaks_no_invariant(infrastructure: object) -> None:
    findings = await run_scenario("poison on each topic", poison())
    assert_no_violation(findings)
    assert findings.restarted == "", "an undecodable message must not stop any consumer"


async def test_a_hostile_header_in_a_burst_fails_only_its_own_post(infrastructure: object) -> None:
    clients: list[Clients] = []
    findings = await run_scenario("hostile header burst", hostile_burst(clients))
    assert_no_violation(findings)
    burst = clients[0].bursts
    answers = sorted(str(post.answers[-1]) for post in burst)
    assert len(burst) == BURST
    assert answers.count("202") == BURST - 1, answers
    assert [post.answers for post in burst if post.answers[-1] != 202] == [[400]]
