"""The one producer configuration of every service: idempotent, acks=all (the outbox sends with it)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from shared.runtime.config import Settings

CORRELATION_HEADER = "x-correlation-id"


def new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=settings.kafka_linger_ms,
        client_id=f"{settings.topic_prefix}order-engine",
    )


async def topic_partitions(client: Any, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`, from fresh cluster metadata (a consumer's own cache may not have it)."""
    cluster = await client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
