"""The executor stage's faust app and agent: decode, bind the order's log context, call the service."""

from __future__ import annotations

import faust
import structlog

from executor.service import ExecutorService
from shared.config import get_settings
from shared.events import ExecuteOrder
from shared.streaming import StageApp, StageContext
from shared.topics import ORDERS_EXECUTE


def build(ctx: StageContext) -> ExecutorService:
    return ExecutorService(ctx.steps, ctx.dex)


app: StageApp[ExecutorService] = StageApp("executor", get_settings(), build)
execute_topic = app.bytes_topic(ORDERS_EXECUTE)


@app.agent(execute_topic)
async def execute_orders(stream: faust.StreamT[bytes]) -> None:
    async for payload in stream:
        command = ExecuteOrder.from_json(payload)
        with structlog.contextvars.bound_contextvars(
            orderId=str(command.order_id), correlationId=command.correlation_id
        ):
            await app.stage_service.execute(command)
