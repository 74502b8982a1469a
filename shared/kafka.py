"""The one way services produce to Kafka: an idempotent, acks=all producer and a publisher that keys every
message by orderId and waits for the broker's acknowledgement."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaProducer, TopicPartition

from shared.config import Settings
from shared.events import StatusEvent, Wire
from shared.topics import ORDER_STATUS, TopicSpec

CORRELATION_HEADER = "x-correlation-id"


def new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=2,
        client_id=f"{settings.topic_prefix}order-engine",
    )


class Publisher:
    """Sends wire models to catalogue topics; `send` returns only once the broker has the message."""

    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self._producer = producer
        self._settings = settings
        self._timeout_s = settings.kafka_request_timeout_ms / 1000 * 2

    async def send(self, spec: TopicSpec, order_id: UUID, payload: Wire, correlation_id: str | None) -> None:
        headers = [(CORRELATION_HEADER, correlation_id.encode())] if correlation_id else []
        await asyncio.wait_for(
            self._producer.send_and_wait(
                self._settings.topic(spec.name),
                value=payload.to_json(),
                key=str(order_id).encode(),
                headers=headers,
            ),
            self._timeout_s,
        )

    async def status(self, event: StatusEvent) -> None:
        await self.send(ORDER_STATUS, event.order_id, event, event.correlation_id)


async def topic_partitions(client: Any, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`, from fresh cluster metadata (a consumer's own cache may not have it)."""
    cluster = await client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
