"""The router stage's faust app and agents: decode a batch, hand it to the service. Routing waits 100-300 ms
on quotes, so the service quotes on the stage's bounded task pool (one serial agent per partition would do
~4 orders/s). The retry agents wait for the head of their fixed-delay topic to fall due (later messages in
the same topic are due later), then route it like a new order. A message that cannot be read is set aside
on its topic's quarantine and skipped (shared/messaging/quarantine.py), before anything waits on it."""

from __future__ import annotations

import faust

from router.service import RouteJob, RouterService
from shared.domain.events import OrderPlaced, RetryOrder
from shared.messaging.batches import job_id
from shared.messaging.quarantine import Quarantine
from shared.messaging.streaming import StageApp, StageContext
from shared.messaging.topics import ORDERS, ORDERS_RETRY, ROUTER_GROUP
from shared.runtime.clock import sleep_until
from shared.runtime.config import get_settings
from shared.store.steps import RETRY_DELAYS


def build(ctx: StageContext) -> RouterService:
    return RouterService(ctx.steps, ctx.dex, ctx.tasks, quote_timeout_s=ctx.settings.quote_timeout_ms / 1000)


settings = get_settings()
app: StageApp[RouterService] = StageApp(
    "router",
    settings,
    build,
    group=ROUTER_GROUP,
    capacity=settings.router_concurrency,
    expected_job_s=settings.mock_quote_latency_max_ms / 1000,
)
orders_topic = app.bytes_topic(ORDERS)
RETRY_WAIT_CAP_S = max(delay for delay, _ in RETRY_DELAYS) + 1.0


@app.agent(orders_topic)
async def route_orders(stream: faust.StreamT[bytes]) -> None:
    quarantine = Quarantine(lambda: app.stage_producer, settings)
    async for events in app.batches(stream):
        jobs = [
            RouteJob(placed.order_id, placed.correlation_id, job_id(event))
            for event, placed in await quarantine.decode(events, OrderPlaced)
        ]
        if jobs:
            await app.stage_service.route(jobs)


async def _retry(stream: faust.StreamT[bytes]) -> None:
    quarantine = Quarantine(lambda: app.stage_producer, settings)
    async for _ in stream:
        app.processed += 1
        event = stream.current_event
        assert event is not None, "a stream's current event is the one it just gave"
        retry = await quarantine.decode_one(event, RetryOrder)
        if retry is None:
            continue
        # Only this topic's head waits: the rest of it is due later. A retry due further out than the
        # longest delay was timed by a clock ahead of ours: it is routed then, and the router's own check
        # and the sweep decide (see RouterService.route).
        await sleep_until(retry.due_at, cap_s=RETRY_WAIT_CAP_S)
        await app.stage_service.route([RouteJob(retry.order_id, retry.correlation_id, job_id(event))])


for spec in ORDERS_RETRY:
    app.agent(app.bytes_topic(spec), name=f"retry_{spec.name.rsplit('.', 1)[-1]}")(_retry)
