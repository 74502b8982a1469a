"""The faust application shape shared by the stream stages (router, executor).

Faust consumes with at-least-once delivery; the stages are idempotent (conditional UPDATEs, republish on
redelivery), so a message processed twice is harmless. Topics carry raw bytes and are decoded by our pydantic
models at the agent edge. A stage's clients are built once when the app starts, before its agents run
(`on_start` runs before mode starts the children), and closed after the agents stop (`on_shutdown`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg
import faust
from aiokafka import AIOKafkaProducer

from shared.config import Settings
from shared.db import create_pool
from shared.dex import Latency, MockDex
from shared.kafka import Publisher, new_producer
from shared.logging import configure_logging
from shared.metrics import serve_metrics
from shared.orders import OrderSteps
from shared.topics import TopicSpec

ServiceT = TypeVar("ServiceT")


@dataclass(frozen=True)
class StageContext:
    """What a stage's service is built from."""

    settings: Settings
    pool: asyncpg.Pool
    publisher: Publisher
    steps: OrderSteps
    dex: MockDex


class StageApp(faust.App, Generic[ServiceT]):
    def __init__(self, stage: str, settings: Settings, build: Callable[[StageContext], ServiceT]) -> None:
        super().__init__(
            settings.topic(f"order-engine-{stage}"),
            broker=[f"kafka://{server}" for server in settings.kafka_servers],
            autodiscover=False,
            web_enabled=False,
            store="memory://",
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.topic_replication_factor,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # faust's default is 20 minutes: a broker outage would hang a stage instead of failing it.
            producer_request_timeout=settings.kafka_request_timeout_ms / 1000 * 2,
            broker_commit_every=100,
            broker_commit_interval=1.0,
        )
        self._stage_name = stage
        self._stage_settings = settings
        self._stage_build = build
        self._stage_pool: asyncpg.Pool | None = None
        self._stage_producer: AIOKafkaProducer | None = None
        self._stage_service: ServiceT | None = None

    @property
    def stage_service(self) -> ServiceT:
        assert self._stage_service is not None, "the stage's service exists once the app has started"
        return self._stage_service

    def bytes_topic(self, spec: TopicSpec) -> faust.TopicT:
        return self.topic(
            self._stage_settings.topic(spec.name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self._stage_settings.topic_partitions,
        )

    async def on_start(self) -> None:
        await super().on_start()
        settings = self._stage_settings
        serve_metrics(getattr(settings, f"{self._stage_name}_metrics_port"), settings.metrics_host)
        self._stage_pool = await create_pool(settings.database_url)
        self._stage_producer = new_producer(settings)
        await self._stage_producer.start()
        publisher = Publisher(self._stage_producer, settings)
        steps = OrderSteps(
            self._stage_pool, publisher, max_attempts=settings.max_retries, logs_max=settings.order_logs_max
        )
        dex = MockDex(self._stage_pool, seed=settings.mock_seed, latency=Latency.from_settings(settings))
        self._stage_service = self._stage_build(
            StageContext(settings, self._stage_pool, publisher, steps, dex)
        )

    async def on_shutdown(self) -> None:
        if self._stage_producer is not None:
            await self._stage_producer.stop()
        if self._stage_pool is not None:
            await self._stage_pool.close()
        await super().on_shutdown()

    def run_worker(self) -> None:
        """Run this stage until SIGTERM/SIGINT, logging JSON lines to stdout."""
        # mode's worker replaces the root handlers: hand it ours and an empty config to apply.
        self.conf.loghandlers = [configure_logging(self._stage_name, self._stage_settings.log_level)]
        faust.Worker(
            self,
            loglevel=self._stage_settings.log_level,
            quiet=True,
            logging_config={"version": 1, "disable_existing_loggers": False},
        ).execute_from_commandline()
