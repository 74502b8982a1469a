"""The stages' guard against poison messages: each message of a batch is read on its own; one that cannot be
read is counted under its reason, logged once, copied byte for byte to its topic's quarantine, and left
out, while the good ones go on in their order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import faust
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerClosed,
    UnknownTopicOrPartitionError,
)
from faust.events import Event
from faust.types import Message
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from shared.domain.events import OrderPlaced, RetryOrder, StatusEvent
from shared.domain.status import OrderStatus
from shared.messaging import quarantine as quarantine_module
from shared.messaging.kafka import CORRELATION_HEADER
from shared.messaging.quarantine import Quarantine, Rejected, read
from shared.runtime.config import Settings

PREFIX = "test-poison."
SETTINGS = Settings(topic_prefix=PREFIX)
T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)


def placed(order_id: uuid.UUID | None = None) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id or uuid.uuid4(),
        token_in="SOL",
        token_out="USDC",
        amount_in=Decimal("1.5"),
        slippage=Decimal("0.01"),
        created_at=T0,
        correlation_id="req-1",
    )


def keyed(message: OrderPlaced) -> tuple[bytes, bytes]:
    return str(message.order_id).encode(), message.to_json()


def received(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None = None,
    *,
    topic: str = "orders",
    partition: int = 2,
    offset: int = 0,
) -> faust.EventT[Any]:
    """An event as a stage's agent gets it off a bytes topic (the raw codec: key and value as received)."""
    raw = cast(Any, headers)  # aiokafka hands over a header without a value as None; faust's types omit it
    message = Message(f"{PREFIX}{topic}", partition, offset, 0.0, 0, raw, key, value, None)
    return Event(cast(Any, None), key, value, raw, message)


class Sent:
    def __init__(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes | None]]
    ) -> None:
        self.topic, self.value, self.key, self.headers = topic, value, key, dict(headers)


class FakeProducer:
    """The quarantine's producer: records what reaches the broker; `failures` are raised first, in turn."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.sent: list[Sent] = []
        self.attempts = 0

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(Sent(topic, value, key, headers or []))


def rejected_count(topic: str, reason: str) -> float:
    return REGISTRY.get_sample_value("messages_rejected_total", {"topic": topic, "reason": reason}) or 0.0


# --- reading one message --------------------------------------------------------------------------------

ORDER = placed()
KEY, VALUE = keyed(ORDER)


@pytest.mark.parametrize(
    ("key", "value", "headers", "reason"),
    [
        (b"\xff\xfe", VALUE, [], "key"),
        (None, VALUE, [], "key"),
        (b"not-an-order-id", VALUE, [], "key"),
        (str(uuid.uuid4()).encode(), VALUE, [], "key"),  # names another order than its value
        (KEY, VALUE, [(CORRELATION_HEADER, b"\xc3\x28")], "headers"),
        (KEY, VALUE, [(CORRELATION_HEADER, None)], "headers"),
        (KEY, None, [], "value"),
        (KEY, b"not json at all", [], "value"),
        (KEY, b"\xff\xfe{}", [], "value"),
        (KEY, b'{"orderId": "' + KEY, [], "value"),
        (KEY, b"[1, 2, 3]", [], "schema"),
        (KEY, b"{}", [], "schema"),
        (KEY, VALUE.replace(b'"SOL"', b"42"), [], "schema"),
        (KEY, VALUE.replace(b'"1.5"', b'"lots"'), [], "schema"),
        (KEY, VALUE.replace(b'"2026-11-27T12:00:00Z"', b'"2026-11-27T12:00:00"'), [], "schema"),
    ],
    ids=[
        "key-not-utf8",
        "key-missing",
        "key-not-a-uuid",
        "key-of-another-order",
        "correlation-header-not-utf8",
        "correlation-header-null",
        "value-missing",
        "value-not-json",
        "value-not-utf8",
        "value-truncated-json",
        "value-json-array",
        "value-json-missing-fields",
        "value-json-wrong-type",
        "value-json-bad-amount",
        "value-naive-timestamp",
    ],
)
def test_a_message_that_cannot_be_read_says_why(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]], reason: str
) -> None:
    outcome = read(OrderPlaced, key, value, headers)
    assert isinstance(outcome, Rejected) and outcome.reason == reason, outcome
    assert len(outcome.error) < 300 and "lots" not in outcome.error, "a short error, never the input"


def test_a_good_message_reads_whatever_headers_it_carries_besides() -> None:
    headers = [
        (CORRELATION_HEADER, b"req-1"),
        ("x-trace", b"\xff\x00 binary is fine here"),
        ("x-empty", None),
    ]
    assert read(OrderPlaced, KEY, VALUE, headers) == ORDER
    assert read(OrderPlaced, KEY, VALUE, dict(headers)) == ORDER  # faust may hand over a mapping


def test_a_retry_whose_due_time_has_no_offset_is_refused_before_anything_waits_on_it() -> None:
    """`sleep_until(retry.due_at)` compares it with an aware clock: a naive one raised TypeError there."""
    retry = RetryOrder(order_id=ORDER.order_id, attempt=2, due_at=T0, created_at=T0, error="venue_timeout")
    naive = retry.to_json().replace(b'"dueAt":"2026-11-27T12:00:00Z"', b'"dueAt":"2026-11-27T12:00:00"')
    assert naive != retry.to_json()
    outcome = read(RetryOrder, KEY, naive)
    assert isinstance(outcome, Rejected) and outcome.reason == "schema", outcome
    assert outcome.error.startswith("timezone_aware at dueAt"), outcome.error
    assert read(RetryOrder, KEY, retry.to_json()) == retry


def test_a_status_event_is_read_with_its_nested_quotes() -> None:
    event = StatusEvent(order_id=ORDER.order_id, seq=2, status=OrderStatus.ROUTING, at=T0, max_attempts=3)
    assert read(StatusEvent, KEY, event.to_json()) == event


# --- a stage's batch ------------------------------------------------------------------------------------


async def test_a_batch_hands_on_its_good_messages_in_order_and_sets_aside_each_bad_one() -> None:
    good = [placed() for _ in range(3)]
    bad_key = received(b"\xff\xfe", good[0].to_json(), offset=11)
    not_json = received(keyed(good[1])[0], b"\x00not json", [(CORRELATION_HEADER, b"req-9")], offset=13)
    wrong_shape = received(keyed(good[2])[0], b'{"orderId": 5}', offset=14)
    bad_header = received(*keyed(good[2]), [(CORRELATION_HEADER, b"\xff")], offset=16)
    batch = [
        received(*keyed(good[0]), offset=10),
        bad_key,
        received(*keyed(good[1]), offset=12),
        not_json,
        wrong_shape,
        received(*keyed(good[2]), offset=15),
        bad_header,
    ]
    before = {reason: rejected_count("orders", reason) for reason in ("key", "value", "schema", "headers")}
    producer = FakeProducer()

    with capture_logs() as logs:
        readable = await Quarantine(lambda: producer, SETTINGS).decode(batch, OrderPlaced)

    assert [message for _, message in readable] == good
    assert [event.message.offset for event, _ in readable] == [10, 12, 15]
    assert {reason: rejected_count("orders", reason) - before[reason] for reason in before} == {
        "key": 1,
        "value": 1,
        "schema": 1,
        "headers": 1,
    }
    rejections = [line for line in logs if line["event"] == "message.rejected"]
    assert [(r["topic"], r["partition"], r["offset"], r["reason"]) for r in rejections] == [
        ("orders", 2, 11, "key"),
        ("orders", 2, 13, "value"),
        ("orders", 2, 14, "schema"),
        ("orders", 2, 16, "headers"),
    ]
    assert [(s.topic, s.key, s.value) for s in producer.sent] == [
        (f"{PREFIX}orders.quarantine", e.message.key, e.message.value)
        for e in (bad_key, not_json, wrong_shape, bad_header)
    ]
    copy = producer.sent[1]
    assert copy.headers == {
        CORRELATION_HEADER: b"req-9",  # the original's headers travel with it
        "x-quarantine-topic": f"{PREFIX}orders".encode(),
        "x-quarantine-partition": b"2",
        "x-quarantine-offset": b"13",
        "x-quarantine-reason": b"value",
        "x-quarantine-error": copy.headers["x-quarantine-error"],
    }
    assert (copy.headers["x-quarantine-error"] or b"").startswith(b"json_invalid")
    assert producer.sent[3].headers[CORRELATION_HEADER] == b"\xff", "a bad header is copied as it came"


async def test_each_retry_topic_quarantines_to_its_own_quarantine() -> None:
    producer = FakeProducer()
    event = received(b"\xff", b"{}", topic="orders.retry.4s", offset=3)
    before = rejected_count("orders.retry.4s", "key")
    assert await Quarantine(lambda: producer, SETTINGS).decode_one(event, RetryOrder) is None
    assert rejected_count("orders.retry.4s", "key") == before + 1
    assert [s.topic for s in producer.sent] == [f"{PREFIX}orders.retry.4s.quarantine"]


async def test_a_copy_the_broker_cannot_take_now_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quarantine_module, "SEND_RETRY_FIRST_S", 0.001)
    producer = FakeProducer(KafkaConnectionError(), KafkaTimeoutError())
    order = placed()
    events = [received(b"\xff", b"x", offset=1), received(*keyed(order), offset=2)]
    readable = await Quarantine(lambda: producer, SETTINGS).decode(events, OrderPlaced)
    assert [message for _, message in readable] == [order]
    assert producer.attempts == 3 and len(producer.sent) == 1


async def test_a_copy_goes_out_through_the_producer_that_replaced_a_failed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stage's outbox replaces a producer that failed for good (and stops it): the next try uses the new
    one, not the one the agent started with."""
    monkeypatch.setattr(quarantine_module, "SEND_RETRY_FIRST_S", 0.001)
    failed, replacement = FakeProducer(ProducerClosed()), FakeProducer()
    guard = Quarantine(lambda: replacement if failed.attempts else failed, SETTINGS)
    await guard.decode([received(b"\xff", b"x")], OrderPlaced)
    assert (failed.attempts, len(failed.sent), len(replacement.sent)) == (1, 0, 1)


async def test_a_copy_refused_for_the_record_itself_is_logged_and_the_batch_goes_on() -> None:
    producer = FakeProducer(MessageSizeTooLargeError())
    order = placed()
    events = [received(b"\xff", b"x" * 100, offset=1), received(*keyed(order), offset=2)]
    with capture_logs() as logs:
        readable = await Quarantine(lambda: producer, SETTINGS).decode(events, OrderPlaced)
    assert [message for _, message in readable] == [order]
    assert producer.attempts == 1, "never retried in a loop"
    assert [(line["event"], line["offset"]) for line in logs] == [
        ("message.rejected", 1),
        ("message.quarantine_failed", 1),
    ]


async def test_a_quarantine_that_stays_away_holds_the_partition_for_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A quarantine topic nobody created answers UnknownTopicOrPartition (retriable) for ever: the orders
    behind the poison must not wait for ever too."""
    monkeypatch.setattr(quarantine_module, "SEND_RETRY_FIRST_S", 0.001)
    monkeypatch.setattr(quarantine_module, "SEND_RETRY_MAX_S", 0.005)
    monkeypatch.setattr(quarantine_module, "SEND_GIVE_UP_S", 0.05)
    producer = FakeProducer(*[UnknownTopicOrPartitionError() for _ in range(10_000)])
    order = placed()
    with capture_logs() as logs:
        readable = await asyncio.wait_for(
            Quarantine(lambda: producer, SETTINGS).decode(
                [received(b"\xff", b"x", offset=1), received(*keyed(order), offset=2)], OrderPlaced
            ),
            5,
        )
    assert [message for _, message in readable] == [order]
    assert 1 < producer.attempts < 10_000 and not producer.sent
    assert logs[-1]["event"] == "message.quarantine_failed"
