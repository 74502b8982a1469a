"""Backpressure (seed §6): how far behind the pipeline is, sampled at most every BACKLOG_SAMPLE_INTERVAL_MS.

The backlog is the router group's lag on `orders` (end offsets minus committed offsets, summed over the
partitions) plus the orders whose OrderPlaced is still in the outbox. Above QUEUE_MAX_LAG new orders get
429 queue_full. A sample that cannot be taken within DEPENDENCY_TIMEOUT_MS (Kafka or Postgres unreachable)
makes new orders 503 service_unavailable until a later sample succeeds. One sample at a time; concurrent
requests share it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorForGroupError,
)

from ingress import repository
from shared.config import Settings
from shared.errors import QueueFull, ServiceUnavailable
from shared.logging import get_logger
from shared.metrics import CONSUMER_LAG
from shared.topics import ORDERS

logger = get_logger(__name__)
ROUTER_GROUP = "order-engine-router"
COORDINATOR_ERRORS = (
    GroupCoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorForGroupError,
)


@dataclass(frozen=True)
class Sample:
    at: float
    backlog: int | None  # None: the sample failed
    error: str | None = None


class BacklogProbe:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._topic = settings.topic(ORDERS.name)
        self._group = settings.topic(ROUTER_GROUP)
        self._timeout_s = settings.dependency_timeout_ms / 1000
        self._interval_s = settings.backlog_sample_interval_ms / 1000
        self._limit = settings.queue_max_lag
        timeout_ms = settings.dependency_timeout_ms
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_servers, request_timeout_ms=timeout_ms
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_servers,
            enable_auto_commit=False,
            request_timeout_ms=timeout_ms,
            metadata_max_age_ms=30_000,
        )
        self._lock = asyncio.Lock()
        self._sample: Sample | None = None
        self._last_lag = 0

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def check(self) -> int:
        """The current backlog; raises QueueFull above the limit, ServiceUnavailable if unmeasurable."""
        sample = await self._current()
        if sample.backlog is None:
            raise ServiceUnavailable(f"the order pipeline is unreachable ({sample.error})")
        if sample.backlog > self._limit:
            raise QueueFull(sample.backlog, self._limit, retry_after=1)
        return sample.backlog

    async def _current(self) -> Sample:
        sample = self._sample
        if sample is not None and time.monotonic() - sample.at < self._interval_s:
            return sample
        async with self._lock:
            sample = self._sample
            if sample is not None and time.monotonic() - sample.at < self._interval_s:
                return sample
            try:
                backlog = await asyncio.wait_for(self._measure(), self._timeout_s)
                self._sample = Sample(time.monotonic(), backlog)
            except (KafkaError, TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("backlog.sample_failed", error=repr(exc))
                self._sample = Sample(time.monotonic(), None, type(exc).__name__)
            return self._sample

    async def _measure(self) -> int:
        # A metadata round trip: proves the broker answers right now, and lists the topic's partitions.
        described = await self._admin.describe_topics([self._topic])
        partitions = [p["partition"] for d in described if d["topic"] == self._topic for p in d["partitions"]]
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        lag = 0
        if tps:
            ends = await self._consumer.end_offsets(tps)
            try:
                committed = await self._admin.list_consumer_group_offsets(self._group, partitions=tps)
            except COORDINATOR_ERRORS as exc:
                # The broker answers but its group coordinator is not ready (a fresh or restarted broker
                # loading __consumer_offsets): keep the last known lag rather than refuse orders.
                logger.info("backlog.coordinator_unavailable", error=repr(exc))
                lag = self._last_lag
            else:
                for tp in tps:
                    done = committed[tp].offset if tp in committed else -1
                    lag += max(0, ends[tp] - max(done, 0))
        self._last_lag = lag
        CONSUMER_LAG.labels(self._topic, self._group).set(lag)
        return lag + await repository.count_unpublished(self._pool, ORDERS.name)
