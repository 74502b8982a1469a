"""The faust application shape shared by the stream stages (router, executor): `StageApp`.

Faust consumes with at-least-once delivery; the stages are idempotent (conditional UPDATEs), so a message
processed twice is harmless. Agents take messages in batches (`StageApp.batches`, over
shared/messaging/batches.py), through faust's transport as adjusted in shared/messaging/faust_transport.py.
Topics carry raw bytes and are decoded by our pydantic models at the agent edge. A stage's clients are built
once when the app starts, before its agents run (`on_start` runs before mode starts the children), and
closed after the agents stop (`on_shutdown`).

Concurrency without faust's agent `concurrency` (faust #606: it can commit an offset past a message still in
flight): each agent is serial, records what it is about to do durably in Postgres, and hands the slow part to
a bounded `TaskPool`. The agent awaits a free slot (backpressure: at most `capacity` jobs in flight, and the
partition is not read further meanwhile) and then moves on, so Kafka's offset may pass a job that has not
finished; the stage's sweeper finds such orders in Postgres and finishes them (see docs/architecture.md).

Every HEARTBEAT_INTERVAL_MS a stage writes its slots, jobs in flight, job time and finish rate to
`stage_members`: ingress admits new orders against the slowest stage (ingress/admission.py).

Each stage serves `/metrics` (Prometheus), `/health` and `/ready` on its metrics port. `/health` turns 503
when the watchdog sees messages waiting on the stage's partitions but nothing processed for
WATCHDOG_STALL_MS; `/ready` is 503 until the stage has joined its consumer group, while it rebalances, and
while its outbox cannot publish (its producer failed and is being replaced: shared/messaging/outbox.py).

The watchdog, the heartbeat and the sweeper are essential (shared/runtime/tasks.py): each loop handles what
it expects to fail (Postgres away, a sweep that raises), and should one die anyway the process exits, to be
started again by its supervisor, rather than go on without it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import asyncpg
import faust
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.messaging.batches import take_batches
from shared.messaging.faust_transport import PromptTransport
from shared.messaging.kafka import new_producer
from shared.messaging.outbox import Outbox
from shared.messaging.topics import TopicSpec
from shared.runtime.clock import following_postgres
from shared.runtime.config import Settings
from shared.runtime.gc_tuning import tune_gc
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.metrics import (
    CONSUMER_LAG,
    STAGE_BATCH_MESSAGES,
    STAGE_BATCH_SECONDS,
    STAGE_RECEIVE_DELAY_SECONDS,
)
from shared.runtime.priority import lower_priority
from shared.runtime.tasks import TaskPool, essential
from shared.store.db import FAILED, UNREACHABLE, create_pool, require_migrated
from shared.store.steps import OrderSteps, order_steps
from shared.venue.mock import MockDex
from shared.venue.protocol import Venue

logger = get_logger(__name__)

ServiceT = TypeVar("ServiceT")

RATE_WEIGHT = 0.3  # each heartbeat moves the finish rate by 30 % of its difference


@dataclass(frozen=True)
class StageContext:
    """What a stage's service is built from."""

    settings: Settings
    pool: asyncpg.Pool
    steps: OrderSteps
    dex: Venue
    tasks: TaskPool


class StageApp(faust.App, Generic[ServiceT]):
    def __init__(
        self,
        stage: str,
        settings: Settings,
        build: Callable[[StageContext], ServiceT],
        *,
        group: str,
        capacity: int,
        expected_job_s: float,
        sweep: Callable[[ServiceT], Awaitable[None]] | None = None,
    ) -> None:
        # One per user: a folder that root made first (a test run) would be closed to the service user.
        datadir = Path(tempfile.gettempdir()) / f"order-engine-faust-{os.getuid()}"
        datadir.mkdir(exist_ok=True)
        super().__init__(
            settings.topic(group),
            broker=[f"kafka://{server}" for server in settings.kafka_servers],
            autodiscover=False,
            web_enabled=False,
            store="memory://",
            # faust makes a data directory even for in-memory tables; by default `<app id>-data` in the
            # working directory, one per test stack. Nothing in it outlives the process.
            datadir=str(datadir / "{conf.name}"),
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.topic_replication_factor,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # faust's default is 20 minutes: a broker outage would hang a stage instead of failing it.
            producer_request_timeout=settings.kafka_request_timeout_ms / 1000 * 2,
            broker_commit_every=100,
            broker_commit_interval=1.0,
            # faust waits 60 s by default before a dead member's partitions move: a crashed stage's orders
            # would stall that long. Heartbeats every second, dead after 10 s.
            broker_session_timeout=10.0,
            # A stage that rejoins its group while a restarted broker's metadata still lacks a topic gets no
            # partitions of it; the group leader notices the topic (and rebalances) at the next metadata
            # refresh. faust's default waits 5 minutes for that; this makes it seconds.
            consumer_metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
            broker_heartbeat_interval=1.0,
        )
        self.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
        self.batch_wait_s = settings.stage_batch_wait_ms / 1000  # how long an agent's batch waits to fill
        self._stage_name = stage
        self._stage_settings = settings
        self._stage_build = build
        self._stage_sweep = sweep
        self._stage_pool: asyncpg.Pool | None = None
        self._stage_producer: AIOKafkaProducer | None = None
        self._stage_service: ServiceT | None = None
        self._stage_http: web.AppRunner | None = None
        self._stage_background: list[asyncio.Task[None]] = []
        self._stage_outbox: Outbox | None = None
        self.stage_tasks = TaskPool(capacity, f"{stage}-jobs", expected_job_s=expected_job_s)
        self._stage_resources = AsyncExitStack()
        self._member = f"{socket.gethostname()}:{os.getpid()}:{stage}"
        self.processed = 0  # messages the stage's agents have taken; the watchdog's sign of life
        self.healthy = True

    async def batches(self, stream: faust.StreamT[Any]) -> AsyncGenerator[list[faust.EventT[Any]], None]:
        """An agent's batches (`take_batches`, STAGE_BATCH_SIZE and STAGE_BATCH_WAIT_MS), each counted for
        the watchdog and measured: how long its messages waited to reach the agent, then the agent's own
        work on it (until it asks for the next batch)."""
        stage = self._stage_name
        received = STAGE_RECEIVE_DELAY_SECONDS.labels(stage)
        async for events in take_batches(stream, self._stage_settings.stage_batch_size, self.batch_wait_s):
            self.processed += len(events)
            STAGE_BATCH_MESSAGES.labels(stage).observe(len(events))
            now = time.time()
            for event in events:
                if event.message.timestamp is not None:
                    received.observe(max(0.0, now - event.message.timestamp))
            with STAGE_BATCH_SECONDS.labels(stage).time():
                yield events

    def _new_transport(self) -> faust.types.TransportT:
        return PromptTransport(self.conf.broker_consumer, self)

    @property
    def ready(self) -> bool:
        """In its consumer group and not rebalancing: messages on its partitions are being taken (a member
        that joined after the load began would stop every member's consumption while the group rebalances)."""
        return self.rebalancing_count > 0 and not self.rebalancing

    @property
    def stage_service(self) -> ServiceT:
        assert self._stage_service is not None, "the stage's service exists once the app has started"
        return self._stage_service

    @property
    def stage_producer(self) -> AIOKafkaProducer:
        """The producer the stage sends through now, for what its agents send themselves: its outbox's (which
        replaces the first one if that fails for good)."""
        assert self._stage_outbox is not None, "the stage's producer exists once the app has started"
        return self._stage_outbox.producer

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
        await self._serve_http(getattr(settings, f"{self._stage_name}_metrics_port"), settings.metrics_host)
        # Ten connections serve thousands of jobs: a job holds one only for a statement, never while it
        # waits on a venue (and Postgres's connection slots are shared by every process).
        self._stage_pool = await create_pool(settings.database_url)
        await require_migrated(self._stage_pool)
        await self._stage_resources.enter_async_context(following_postgres(self._stage_pool))
        self._stage_producer = new_producer(settings)
        await self._stage_producer.start()
        steps = await self._stage_resources.enter_async_context(
            order_steps(self._stage_pool, self._stage_producer, settings)
        )
        self._stage_outbox = steps.outbox
        dex = MockDex.from_settings(self._stage_pool, settings)
        self._stage_resources.push_async_callback(dex.close)
        self._stage_service = self._stage_build(
            StageContext(settings, self._stage_pool, steps, dex, self.stage_tasks)
        )
        # Not in on_started: that waits for the consumer group, and the sweep must not (after a crash it is
        # what finishes the dead process's orders while the group rebalances).
        self._stage_background.append(essential(asyncio.create_task(self._watchdog(), name="watchdog")))
        self._stage_background.append(essential(asyncio.create_task(self._heartbeat(), name="heartbeat")))
        if self._stage_sweep is not None:
            self._stage_background.append(essential(asyncio.create_task(self._sweeper(), name="sweeper")))

    async def on_stop(self) -> None:
        for task in self._stage_background:
            task.cancel()
        await super().on_stop()

    async def on_shutdown(self) -> None:
        # The agents have stopped taking messages; let the jobs in flight finish before closing what they use.
        cancelled = await self.stage_tasks.drain(self._stage_settings.shutdown_grace_ms / 1000)
        logger.info("stage.drained", stage=self._stage_name, cancelled=cancelled)
        await self._stage_resources.aclose()
        if self._stage_pool is not None:
            try:
                await self._stage_pool.execute("DELETE FROM stage_members WHERE member = $1", self._member)
            except UNREACHABLE as exc:
                logger.warning("stage.unregister_failed", error=repr(exc))
        if self._stage_producer is not None:
            await self._stage_producer.stop()
        if self._stage_pool is not None:
            await self._stage_pool.close()
        if self._stage_http is not None:
            await self._stage_http.cleanup()
        await super().on_shutdown()

    async def _sweeper(self) -> None:
        assert self._stage_sweep is not None
        interval = self._stage_settings.sweep_interval_ms / 1000
        while True:
            try:
                await self._stage_sweep(self.stage_service)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("sweep.failed", stage=self._stage_name)
            await asyncio.sleep(interval)

    async def _heartbeat(self) -> None:
        """Tell admission control what this process can take: slots, jobs running, job time, finish rate."""
        interval = self._stage_settings.heartbeat_interval_ms / 1000
        tasks = self.stage_tasks
        last_finished, last_at, rate = tasks.finished, time.monotonic(), 0.0
        while True:
            now = time.monotonic()
            recent = (tasks.finished - last_finished) / max(now - last_at, 1e-3)
            rate = recent if rate == 0.0 else rate + (recent - rate) * RATE_WEIGHT
            last_finished, last_at = tasks.finished, now
            try:
                assert self._stage_pool is not None
                await self._stage_pool.execute(
                    "INSERT INTO stage_members (member, stage, slots, busy, service_ms, rate, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (member) DO UPDATE SET"
                    " slots = $3, busy = $4, service_ms = $5, rate = $6, updated_at = now()",
                    self._member,
                    self._stage_name,
                    tasks.capacity,
                    tasks.in_flight,
                    tasks.job_s * 1000,
                    rate,
                )
            except FAILED as exc:  # any failed statement: a heartbeat is worth another try, not a death
                logger.warning("stage.heartbeat_failed", error=repr(exc))
            await asyncio.sleep(interval)

    def _lag(self) -> int:
        """Messages on this stage's partitions not yet processed: the log end minus the committed offset
        (faust commits only what its agents have finished)."""
        consumer = self.consumer
        committed: dict[Any, int | None] = getattr(consumer, "_committed_offset", {})
        by_topic: dict[str, int] = {}
        for tp in consumer.assignment():
            try:
                highwater = consumer.highwater(tp)
            except Exception:
                continue
            # nothing committed yet: with auto.offset.reset=earliest, everything on the partition is due
            done = committed.get(tp) or 0
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + max(0, (highwater or 0) - done)
        for topic, lag in by_topic.items():
            CONSUMER_LAG.labels(topic, self.conf.id).set(lag)
        return sum(by_topic.values())

    async def _watchdog(self) -> None:
        stall_s = self._stage_settings.watchdog_stall_ms / 1000
        last_count, last_progress = self.processed, time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, stall_s / 4))
            now = time.monotonic()
            if self.processed != last_count:
                last_count, last_progress = self.processed, now
            lag = self._lag()
            stalled = lag > 0 and now - last_progress > stall_s
            if stalled and self.healthy:
                logger.error("stage.stalled", stage=self._stage_name, lag=lag)
            self.healthy = not stalled
            if lag == 0:
                last_progress = now

    async def _serve_http(self, port: int, host: str) -> None:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def health(_: web.Request) -> web.Response:
            body = {"status": "ok" if self.healthy else "stalled", "inFlight": self.stage_tasks.in_flight}
            return web.json_response(body, status=200 if self.healthy else 503)

        async def ready(_: web.Request) -> web.Response:
            publishing = self._stage_outbox is not None and self._stage_outbox.publishing
            status = "joining" if not self.ready else "ready" if publishing else "not_publishing"
            body = {"status": status, "rebalances": self.rebalancing_count}
            return web.json_response(body, status=200 if status == "ready" else 503)

        http = web.Application()
        http.router.add_get("/metrics", metrics)
        http.router.add_get("/health", health)
        http.router.add_get("/ready", ready)
        self._stage_http = web.AppRunner(http, access_log=None)
        await self._stage_http.setup()
        await web.TCPSite(self._stage_http, host, port).start()

    def run_worker(self) -> None:
        """Run this stage until SIGTERM/SIGINT, logging JSON lines to stdout."""
        # mode's worker replaces the root handlers: hand it ours and an empty config to apply.
        self.conf.loghandlers = [configure_logging(self._stage_name, self._stage_settings.log_level)]
        tune_gc(self._stage_settings.gc_threshold)
        if self._stage_settings.stage_nice > 0:  # before faust starts its consumer thread: it inherits this
            lower_priority(0, os.getpriority(os.PRIO_PROCESS, 0) + self._stage_settings.stage_nice)
        faust.Worker(
            self,
            loglevel=self._stage_settings.log_level,
            quiet=True,
            logging_config={"version": 1, "disable_existing_loggers": False},
        ).execute_from_commandline()
