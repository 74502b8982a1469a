"""The executor stage's faust app and agent: decode, bind the order's log context, call the service."""

from __future__ import annotations

import faust

from executor.service import ExecutorService
from shared.config import get_settings
from shared.events import ExecuteOrder
from shared.streaming import StageApp, StageContext, message_context
from shared.topics import ORDERS_EXECUTE


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
    "executor", settings, build, capacity=settings.queue_concurrency, sweep=sweep
)
execute_topic = app.bytes_topic(ORDERS_EXECUTE)


@app.agent(execute_topic)
async def execute_orders(stream: faust.StreamT[bytes]) -> None:
    async for payload in stream:
        app.processed += 1
        command = ExecuteOrder.from_json(payload)
        with message_context(stream, command.order_id, command.correlation_id):
            await app.stage_service.accept(command)
