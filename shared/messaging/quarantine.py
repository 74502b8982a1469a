"""Poison messages: what a consumer does with a message it cannot read (docs/reliability.md).

A message whose key, headers or value cannot be decoded, or decodes to something the topic's model refuses,
is rejected for good: reading it again would fail again. It is counted (`messages_rejected_total`, by topic
and reason), logged once with its topic, partition and offset, and skipped, so one bad message never stops
a consumer, and the other messages of its batch are handed on as usual. A stage that reads a topic under
its consumer group (router, executor) first copies it, byte for byte, to the topic's quarantine
(`<topic>.quarantine`, shared/messaging/topics.py); only then is its offset committed past. A reader that
owns no part of its topic (the notifier, the analytics example) counts, logs and skips.

What a message of ours must be (docs/events.md):
- its key: the orderId as UTF-8, naming its value's order (the key picks the partition, and an order's
  messages keep their order only within one);
- its `x-correlation-id` header, when present: UTF-8 text;
- its value: JSON (else the reason is `value`) that the topic's model accepts (else `schema`); the models
  refuse a timestamp without its UTC offset (shared/domain/events.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self, TypeVar
from uuid import UUID

import faust
from aiokafka.errors import (
    KafkaError,
)
from pydantic import ValidationError

from shared.messaging.kafka import CORRELATION_HEADER
from shared.messaging.producer import ROW_ERRORS
from shared.messaging.topics import QUARANTINES
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger
from shared.runtime.metrics import MESSAGES_REJECTED

logger = get_logger(__name__)

Reason = Literal["key", "headers", "value", "schema"]
Headers = Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None]  # faust hands over either

# Headers of a quarantined copy, after the original message's own (minus any x-quarantine-* among them).
HEADER_PREFIX = "x-quarantine-"
SOURCE_TOPIC_HEADER = "x-quarantine-topic"
SOURCE_PARTITION_HEADER = "x-quarantine-partition"
SOURCE_OFFSET_HEADER = "x-quarantine-offset"
REASON_HEADER = "x-quarantine-reason"
ERROR_HEADER = "x-quarantine-error"
ERROR_MAX_CHARS = 500

# A copy the broker cannot take now (no leader, a restart, a producer being replaced) is sent again, for
# SEND_GIVE_UP_S at most: the stage's partition waits meanwhile, and an outage of the quarantine alone (its
# topic missing, say) must not stop the orders behind the poison for longer. A copy Kafka refuses for the
# record itself (too large) is not tried again. Either way an error log says where the original is: on its
# topic, for that topic's retention.
SEND_RETRY_FIRST_S = 0.2
SEND_RETRY_MAX_S = 5.0
SEND_GIVE_UP_S = 30.0


class OrderMessage(Protocol):
    """A wire model keyed by its order (OrderPlaced, ExecuteOrder, RetryOrder, StatusEvent)."""

    @property
    def order_id(self) -> UUID: ...

    @classmethod
    def from_json(cls, data: bytes | str) -> Self: ...


MessageT = TypeVar("MessageT", bound=OrderMessage)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message cannot be read: a reason of a small fixed set (a metric label) and a short error."""

    reason: Reason
    error: str


def read(
    model: type[MessageT], key: bytes | None, value: bytes | None, headers: Headers = ()
) -> MessageT | Rejected:
    """One message as `model`, or why it cannot be. Catches exactly what decoding raises: ValueError from
    the key (UnicodeDecodeError is one, and so is UUID's), UnicodeDecodeError from a header, pydantic's
    ValidationError from the value (bytes that are not UTF-8 or not JSON included)."""
    if key is None:
        return Rejected("key", "no key (the orderId)")
    try:
        key_order = UUID(key.decode())
    except ValueError:
        return Rejected("key", "the key is not an orderId in UTF-8")
    for name, data in headers.items() if isinstance(headers, Mapping) else headers:
        if name != CORRELATION_HEADER:
            continue
        if data is None:
            return Rejected("headers", f"{name} has no value")
        try:
            data.decode()
        except UnicodeDecodeError:
            return Rejected("headers", f"{name} is not UTF-8")
    if value is None:
        return Rejected("value", "no value")
    try:
        message = model.from_json(value)
    except ValidationError as exc:
        return Rejected(_value_reason(exc), _describe(exc))
    if message.order_id != key_order:
        return Rejected("key", f"the key names order {key_order}, the value order {message.order_id}")
    return message


def _value_reason(exc: ValidationError) -> Reason:
    """`value` for bytes that are not JSON at all, `schema` for JSON the model refuses."""
    not_json = any(error["type"] == "json_invalid" for error in exc.errors(include_url=False))
    return "value" if not_json else "schema"


def _describe(exc: ValidationError) -> str:
    """The first error, where and what, without the input (which may be anything, of any size)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "the value"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first['type']} at {where}: {first['msg']}{more}"


def reject(topic: str, partition: int | None, offset: int | None, rejected: Rejected) -> None:
    """Count and log, once, a message that cannot be read; `topic` is its catalogue name (no TOPIC_PREFIX)."""
    MESSAGES_REJECTED.labels(topic, rejected.reason).inc()
    logger.warning(
        "message.rejected",
        topic=topic,
        partition=partition,
        offset=offset,
        reason=rejected.reason,
        error=rejected.error,
    )


class Producer(Protocol):
    """What a quarantine needs of a Kafka producer (aiokafka's)."""

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> Any: ...


class Quarantine:
    """A stage's guard at its agents' edge: reads each message of a batch on its own, and sets aside those
    that cannot be read (counted, logged, copied to their topic's quarantine) before the batch is
    acknowledged. `producer` gives the stage's producer as it is at each send (a failed one is replaced)."""

    def __init__(self, producer: Callable[[], Producer], settings: Settings) -> None:
        self._producer = producer
        self._settings = settings

    async def decode(
        self, events: Iterable[faust.EventT[Any]], model: type[MessageT]
    ) -> list[tuple[faust.EventT[Any], MessageT]]:
        """The events that read as `model`, each with its message, in their order; the others set aside."""
        readable = []
        for event in events:
            message = event.message
            outcome = read(model, message.key, message.value, message.headers or ())
            if isinstance(outcome, Rejected):
                await self.set_aside(message, outcome)
            else:
                readable.append((event, outcome))
        return readable

    async def decode_one(self, event: faust.EventT[Any], model: type[MessageT]) -> MessageT | None:
        """The event's message as `model`, or None once it has been set aside."""
        readable = await self.decode([event], model)
        return readable[0][1] if readable else None

    async def set_aside(self, message: faust.types.Message, rejected: Rejected) -> None:
        """Count and log the message, then copy it to its topic's quarantine: its key and value as received,
        its headers, and headers saying where it came from and why it is there."""
        name = message.topic.removeprefix(self._settings.topic_prefix)
        reject(name, message.partition, message.offset, rejected)
        quarantine = QUARANTINES.get(name)
        if quarantine is None:  # a topic no stage owns: nothing to copy it to
            return
        original = message.headers or ()
        headers: list[tuple[str, bytes | None]] = [
            (header, data)
            for header, data in (original.items() if isinstance(original, Mapping) else original)
            if not header.startswith(HEADER_PREFIX)
        ]
        headers += [
            (SOURCE_TOPIC_HEADER, message.topic.encode()),
            (SOURCE_PARTITION_HEADER, str(message.partition).encode()),
            (SOURCE_OFFSET_HEADER, str(message.offset).encode()),
            (REASON_HEADER, rejected.reason.encode()),
            (ERROR_HEADER, rejected.error[:ERROR_MAX_CHARS].encode()),
        ]
        topic = self._settings.topic(quarantine.name)
        give_up = time.monotonic() + SEND_GIVE_UP_S
        delay = SEND_RETRY_FIRST_S
        while True:
            try:
                await self._producer().send_and_wait(
                    topic, value=message.value, key=message.key, headers=headers
                )
                return
            except KafkaError as exc:
                where = {"topic": name, "partition": message.partition, "offset": message.offset}
                if isinstance(exc, ROW_ERRORS) or time.monotonic() + delay > give_up:
                    logger.error("message.quarantine_failed", **where, error=repr(exc))
                    return
                logger.warning("message.quarantine_retry", **where, error=repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, SEND_RETRY_MAX_S)
