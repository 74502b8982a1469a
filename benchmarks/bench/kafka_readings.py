"""What the bench reads from Kafka itself: each consumer group's lag as the broker knows it (`GroupLag`), how
many records a run's topic holds (`published`) and when each key was first produced to it (`sent_times`).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.messaging.topics import GROUP_PREFIX


class GroupLag:
    """Lag of every consumer group under `prefix`, from the broker: end offsets minus committed offsets,
    over every partition of each topic the group has committed on (a partition it has not committed on
    yet counts from 0, as auto.offset.reset=earliest would)."""

    def __init__(self, servers: list[str], prefix: str) -> None:
        self.prefix = prefix
        self.admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
        self.partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    def _all_partitions(self, topic: str) -> list[TopicPartition]:
        if topic not in self.partitions:
            found = self.consumer.partitions_for_topic(topic) or set()
            self.partitions[topic] = [TopicPartition(topic, p) for p in sorted(found)]
        return self.partitions[topic]

    async def sample(self) -> dict[str, dict[str, float]]:
        """{group (without the prefix): {'topic=<name>': lag}}."""
        out: dict[str, dict[str, float]] = {}
        groups = [g[0] for g in await self.admin.list_consumer_groups() if str(g[0]).startswith(self.prefix)]
        for group in groups:
            committed = await self.admin.list_consumer_group_offsets(group)
            topics = sorted({tp.topic for tp in committed})
            for topic in topics:
                if topic not in self.partitions:
                    await self.consumer.topics()  # refreshes metadata so the topic's partitions are known
            tps = [tp for topic in topics for tp in self._all_partitions(topic)] or list(committed)
            if not tps:
                continue
            ends = await self.consumer.end_offsets(tps)
            lag: dict[str, float] = {}
            for tp in tps:
                done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
                key = f"topic={tp.topic.removeprefix(self.prefix)}"
                lag[key] = lag.get(key, 0.0) + max(0, ends[tp] - done)
            out[str(group).removeprefix(self.prefix).removeprefix(GROUP_PREFIX)] = lag
        return out


async def published(servers: list[str], topic: str, partitions: int) -> int:
    """Records on `topic` (a run's own, so its offsets start at 0): the sum of its partitions' end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def sent_times(servers: list[str], topic: str, partitions: int) -> dict[str, float]:
    """When each key was first produced to `topic` (the record's CreateTime, set by the producer's send, in
    epoch seconds): read from the beginning to the end offsets as they stand now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        first: dict[str, float] = {}
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                for record in records:
                    if record.key is not None:
                        first.setdefault(record.key.decode(), record.timestamp / 1000)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return first
    finally:
        await consumer.stop()
