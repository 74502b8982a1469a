"""The router stage's faust app and agents: decode, bind the order's log context, hand the order to the
service on the stage's bounded task pool (routing waits 100-300 ms on quotes; one serial agent per
partition would do ~4 orders/s). The retry agents wait for the head of their fixed-delay topic to fall
due (later messages in the same topic are due later), then route it like a new order."""

from __future__ import annotations

import asyncio

import faust

from router.service import RouterService
from shared.config import get_settings
from shared.events import OrderPlaced, RetryOrder, utcnow
from shared.streaming import StageApp, StageContext, message_context
from shared.topics import ORDERS, ORDERS_RETRY


def build(ctx: StageContext) -> RouterService:
    return RouterService(
        ctx.steps, ctx.dex, ctx.publisher, quote_timeout_s=ctx.settings.quote_timeout_ms / 1000
    )


settings = get_settings()
app: StageApp[RouterService] = StageApp("router", settings, build, capacity=settings.router_concurrency)
orders_topic = app.bytes_topic(ORDERS)


@app.agent(orders_topic)
async def route_orders(stream: faust.StreamT[bytes]) -> None:
    async for payload in stream:
        app.processed += 1
        placed = OrderPlaced.from_json(payload)
        with message_context(stream, placed.order_id, placed.correlation_id):
            await app.stage_tasks.spawn(app.stage_service.route(placed.order_id))


async def _retry(stream: faust.StreamT[bytes]) -> None:
    async for payload in stream:
        app.processed += 1
        retry = RetryOrder.from_json(payload)
        wait_s = (retry.due_at - utcnow()).total_seconds()
        if wait_s > 0:
            await asyncio.sleep(wait_s)  # only this topic's head waits: the rest of it is due later
        with message_context(stream, retry.order_id, retry.correlation_id, attempt=retry.attempt):
            await app.stage_tasks.spawn(app.stage_service.route(retry.order_id))


for spec in ORDERS_RETRY:
    app.agent(app.bytes_topic(spec), name=f"retry_{spec.name.rsplit('.', 1)[-1]}")(_retry)
