"""The executor stage's faust app and agent: decode a batch, hand it to the service. A message that cannot
be read is set aside on the topic's quarantine and skipped (shared/messaging/quarantine.py)."""

from __future__ import annotations

import faust

from executor.service import ExecuteJob, ExecutorService
from shared.domain.events import ExecuteOrder
from shared.messaging.batches import job_id
from shared.messaging.quarantine import Quarantine
from shared.messaging.streaming import StageApp, StageContext
from shared.messaging.topics import EXECUTOR_GROUP, ORDERS_EXECUTE
from shared.runtime.config import get_settings


def build(ctx: StageContext) -> ExecutorService:
    return ExecutorService(
        ctx.steps,
        ctx.dex,
        ctx.pool,
        ctx.tasks,
        swap_window_ms=ctx.settings.swap_window_ms,
        stale_step_ms=ctx.settings.stale_step_ms,
    )


async def sweep(service: ExecutorService) -> None:
    await service.sweep()


settings = get_settings()
app: StageApp[ExecutorService] = StageApp(
    "executor",
    settings,
    build,
    group=EXECUTOR_GROUP,
    capacity=settings.queue_concurrency,
    expected_job_s=settings.mock_execution_latency_max_ms / 1000,
    sweep=sweep,
)
execute_topic = app.bytes_topic(ORDERS_EXECUTE)


@app.agent(execute_topic)
async def execute_orders(stream: faust.StreamT[bytes]) -> None:
    quarantine = Quarantine(lambda: app.stage_producer, settings)
    async for events in app.batches(stream):
        jobs = [
            ExecuteJob(command.order_id, command.correlation_id, job_id(event))
            for event, command in await quarantine.decode(events, ExecuteOrder)
        ]
        if jobs:
            await app.stage_service.accept(jobs)
