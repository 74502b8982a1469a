"""The one producer configuration of every service: idempotent, acks=all (the outbox sends with it)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner, murmur2

from shared.runtime.config import Settings

CORRELATION_HEADER = "x-correlation-id"


@functools.lru_cache(maxsize=8192)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """Kafka's default partition for `key` (murmur2, as the Java client and aiokafka pick it), with each
    key's hash remembered. aiokafka's murmur2 is pure Python, ~10 us a call, and every message of an order
    is keyed by its id: each process sends two or three of them within a second, so most sends hit."""
    if key is None:
        return int(DefaultPartitioner()(key, all_partitions, available))
    return all_partitions[_key_hash(key) % len(all_partitions)]


def new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers,
        partitioner=partition_for,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=settings.kafka_linger_ms,
        client_id=f"{settings.topic_prefix}order-engine",
    )


def sender_alive(producer: AIOKafkaProducer) -> bool:
    """Whether the producer's sender task (the one that sends every batch) is still running. Once it has
    ended, by an error it treats as fatal (ProducerFenced, OutOfOrderSequenceNumber, an authorization
    refusal) or otherwise, nothing this producer holds or is given will reach Kafka: every later `send`
    raises that error again, or waits forever if the task was cancelled. aiokafka has no public word for
    it, so this reads its `_sender`; a producer not started, or shaped otherwise, counts as alive."""
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return not isinstance(task, asyncio.Future) or not task.done()


async def topic_partitions(client: Any, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`, from fresh cluster metadata (a consumer's own cache may not have it)."""
    cluster = await client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
