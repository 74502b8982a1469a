"""Every producer's partitioner (shared/messaging/kafka.py): Kafka's default choice, remembered per key."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging.kafka import partition_for


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
def test_a_key_lands_where_kafkas_default_partitioner_puts_it(key: bytes, count: int) -> None:
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert partition_for(key, partitions, partitions) == expected
    assert partition_for(key, partitions, partitions) == expected, "a remembered hash picks the same"


def test_order_ids_land_where_kafka_puts_them_whether_remembered_or_evicted() -> None:
    partitions = list(range(6))
    keys = [str(uuid.uuid4()).encode() for _ in range(20_000)]  # more than the cache holds
    kafka = [DefaultPartitioner()(k, partitions, partitions) for k in keys]
    assert [partition_for(k, partitions, partitions) for k in keys] == kafka
    # Read back newest first: the last keys are remembered, the first ones were evicted and are hashed again.
    assert [partition_for(k, partitions, partitions) for k in reversed(keys)] == kafka[::-1]
    assert len(set(kafka)) == len(partitions), "ids spread over every partition"


def test_an_unkeyed_message_goes_to_an_available_partition() -> None:
    assert partition_for(None, [0, 1, 2], [2]) == 2
