"""The router stage's faust app and agent: decode, bind the order's log context, call the service."""

from __future__ import annotations

import faust
import structlog

from router.service import RouterService
from shared.config import get_settings
from shared.events import OrderPlaced
from shared.streaming import StageApp, StageContext
from shared.topics import ORDERS


def build(ctx: StageContext) -> RouterService:
    quote_timeout_s = ctx.settings.mock_quote_latency_max_ms / 1000 + 2.0
    return RouterService(ctx.steps, ctx.dex, ctx.publisher, quote_timeout_s=quote_timeout_s)


app: StageApp[RouterService] = StageApp("router", get_settings(), build)
orders_topic = app.bytes_topic(ORDERS)


@app.agent(orders_topic)
async def route_orders(stream: faust.StreamT[bytes]) -> None:
    async for payload in stream:
        placed = OrderPlaced.from_json(payload)
        with structlog.contextvars.bound_contextvars(
            orderId=str(placed.order_id), correlationId=placed.correlation_id
        ):
            await app.stage_service.route(placed)
