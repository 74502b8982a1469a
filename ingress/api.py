"""The ingress HTTP app: routes decode, call one service function, and answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Request
from prometheus_client import make_asgi_app
from redis.asyncio import Redis
from starlette.responses import Response

from ingress import service
from ingress.schemas import OrderAccepted, OrderView, PlaceOrder
from shared.config import Settings, get_settings
from shared.db import create_pool, migrate
from shared.events import OrderStatus
from shared.health import check_postgres, check_redis
from shared.http import (
    CorrelationMiddleware,
    ErrorBody,
    current_request_id,
    install_error_handlers,
    json_response,
)
from shared.kafka import Publisher, new_producer

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "invalid_body"},
    404: {"model": ErrorBody, "description": "not_found"},
    503: {"model": ErrorBody, "description": "service_unavailable"},
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url)
        app.state.pool = await create_pool(settings.database_url, max_size=20)
        app.state.redis = Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        app.state.producer = new_producer(settings)
        await app.state.producer.start()
        app.state.publisher = Publisher(app.state.producer, settings)
        try:
            yield
        finally:
            await app.state.producer.stop()
            await app.state.redis.aclose()
            await app.state.pool.close()

    app = FastAPI(title="Order execution engine: ingress", version="1", lifespan=lifespan, responses=ERRORS)
    app.add_middleware(CorrelationMiddleware)
    app.mount("/metrics", make_asgi_app())
    install_error_handlers(app)

    @app.post("/api/orders/execute", status_code=202, response_model=OrderAccepted)
    async def execute_order(body: PlaceOrder, request: Request) -> OrderAccepted:
        placed = await service.place_order(
            request.app.state.pool,
            request.app.state.publisher,
            body,
            correlation_id=current_request_id(),
            max_attempts=settings.max_retries,
        )
        return OrderAccepted(order_id=placed.order_id, status=OrderStatus.PENDING)

    @app.get("/api/orders/{order_id}", response_model=OrderView)
    async def get_order(order_id: UUID, request: Request) -> OrderView:
        return OrderView.of(await service.get_order(request.app.state.pool, order_id))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> Response:
        state = request.app.state
        checks = {
            "postgres": check_postgres(state.pool),
            "redis": check_redis(state.redis),
            "kafka": state.producer.client.fetch_all_metadata(),
        }
        results = await asyncio.gather(
            *(asyncio.wait_for(c, 3.0) for c in checks.values()), return_exceptions=True
        )
        status = {
            name: "ok" if not isinstance(r, BaseException) else "down"
            for name, r in zip(checks, results, strict=True)
        }
        ok = all(v == "ok" for v in status.values())
        return json_response({"status": "ready" if ok else "not_ready", "checks": status}, 200 if ok else 503)

    return app
