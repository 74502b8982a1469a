"""The ingress HTTP app: routes decode, authorize, call one service function, and answer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Query, Request
from starlette.responses import Response

from ingress import service
from ingress.auth import ANONYMOUS, Principal, authenticate, install_auth
from ingress.console import install_console
from ingress.schemas import (
    CLIENT_ORDER_ID,
    OrderAccepted,
    OrderPage,
    OrderSummary,
    OrderView,
    PlaceOrder,
    Readiness,
)
from shared.domain.errors import InvalidBody
from shared.domain.status import OrderStatus
from shared.messaging.kafka import new_producer
from shared.messaging.outbox import Outbox
from shared.runtime.clock import following_postgres
from shared.runtime.config import Settings, get_settings
from shared.runtime.health import check_postgres, check_redis
from shared.runtime.tasks import exit_if_essential_died
from shared.store.db import create_pool, require_migrated
from shared.store.redis import open_redis
from shared.web.apikeys import load_keys
from shared.web.app import NO_OPENTELEMETRY, DirectRoute, install_metrics
from shared.web.edge import CorsPolicy, HttpEdgeMiddleware, client_address
from shared.web.envelope import decode_json_body, error_responses, install_error_handlers, json_response
from shared.web.ratelimit import Bucket, Decision, RateLimiter, bucket_for, limiter

REDIS_CONNECTIONS = 64  # per ingress process: each command holds one for a round trip

IDEMPOTENCY_KEY = r"^[\x20-\x7e]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY)
EXPOSED_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "Idempotent-Replayed",
]
HEALTHY = b'{"status":"ok"}'
PLACE_ORDER_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "1-255 printable ASCII; a repeat within the TTL gets the first answer.",
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PlaceOrder.model_json_schema(by_alias=True)}},
    },
}


def client_of(request: Request, principal: Principal) -> str:
    """Who the request is from: the principal's subject, else the client's IP (canonical; an X-Forwarded-For
    that names no usable address is a 400 from `client_address`). It scopes Idempotency-Keys, rate limits,
    and which orders a caller may list and cancel."""
    return principal.subject or client_address(request, request.app.state.trusted_proxies)


async def rate_limit(request: Request, principal: Principal) -> Decision | None:
    """Scope the request to its client and take a token from its bucket: the read bucket for a GET, the
    write bucket (RATE_LIMIT) for anything else."""
    client = client_of(request, principal)
    request.state.client = client
    state = request.app.state
    chosen: RateLimiter = state.read_limiter if bucket_for(request.method) is Bucket.READ else state.limiter
    return await chosen.take(client)


async def read_token(request: Request, response: Response) -> Principal:
    """The dependency of the read routes: authenticate, then take a token from the caller's read bucket
    (its RateLimit headers go on the answer)."""
    principal = await authenticate(request)
    limit = await rate_limit(request, principal)
    if limit is not None:
        response.raw_headers.extend(limit.raw_headers())
    return principal


async def anonymous_read_token(request: Request) -> None:
    """`/ready` needs no key (health checkers hold none), but each call costs three dependency checks:
    it takes a read token from the caller's address's bucket."""
    await rate_limit(request, ANONYMOUS)


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, or None; a malformed one is the 400 FastAPI would give for it."""
    key = request.headers.get("idempotency-key")
    if key is None or _IDEMPOTENCY_KEY.fullmatch(key):
        return key
    raise InvalidBody(
        "the request is invalid",
        details=[{"field": "Idempotency-Key", "message": f"String should match pattern '{IDEMPOTENCY_KEY}'"}],
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    timeout_s = settings.dependency_timeout_ms / 1000

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as resources:  # whatever started is closed, even if a later start fails
            resources.callback(exit_if_essential_died)  # runs last: see shared/runtime/tasks.py
            pool = await create_pool(settings.database_url, max_size=20)
            resources.push_async_callback(pool.close)
            await require_migrated(pool)
            await resources.enter_async_context(following_postgres(pool))
            redis = open_redis(settings.redis_url, timeout_s=timeout_s, max_connections=REDIS_CONNECTIONS)
            resources.push_async_callback(redis.aclose)
            producer = new_producer(settings)
            await producer.start()
            resources.push_async_callback(producer.stop)
            app.state.intake = await resources.enter_async_context(
                service.open_intake(settings, pool, producer)
            )
            # The outbox replaces its producer if that one fails for good: ask it, not `producer`.
            outbox = app.state.intake.steps.outbox
            app.state.intake.admission.follow(outbox)
            app.state.pool, app.state.redis, app.state.outbox = pool, redis, outbox
            app.state.trusted_proxies = settings.trusted_proxy_networks
            app.state.limiter = limiter(Bucket.WRITE, redis, settings)
            app.state.read_limiter = limiter(Bucket.READ, redis, settings)
            yield

    app = FastAPI(
        title="Order execution engine: ingress",
        version="1",
        lifespan=lifespan,
        telemetry=NO_OPENTELEMETRY,
    )
    cors = settings.cors_origin_list
    app.add_middleware(
        HttpEdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        cors=CorsPolicy(
            allow_origins=cors,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "Idempotency-Key", "X-Request-ID", "Authorization"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
        if cors
        else None,
    )
    install_metrics(app)
    install_error_handlers(app)
    install_auth(app, load_keys(settings.api_keys))
    install_console(app)

    async def execute_order(request: Request) -> Response:
        # Admission first: under overload a refusal costs no Redis call and no parsing. Then the inputs,
        # checked here rather than declared (see PLACE_ORDER_OPENAPI), in the order FastAPI would: the auth
        # hook, the rate limit, the header, then the body.
        request.app.state.intake.admission.precheck()
        limit = await rate_limit(request, await authenticate(request))
        key = idempotency_key(request)
        body = await decode_json_body(request, PlaceOrder)
        accepted = await service.place_order(
            request.app.state.intake,
            body,
            client=request.state.client,
            idempotency_key=key,
            correlation_id=request.scope["state"]["request_id"],
        )
        response = Response(accepted.body.to_json(), accepted.status, media_type="application/json")
        response.raw_headers.append((b"location", f"/api/orders/{accepted.body.order_id}".encode()))
        if accepted.replayed:
            response.raw_headers.append((b"idempotent-replayed", b"true"))
        if limit is not None:
            response.raw_headers.extend(limit.raw_headers())
        return response

    app.router.add_api_route(
        "/api/orders/execute",
        execute_order,
        methods=["POST"],
        route_class_override=DirectRoute,
        status_code=202,
        response_model=OrderAccepted,
        responses=error_responses(400, 401, 403, 409, 413, 415, 429, 431, 500, 503),
        openapi_extra=PLACE_ORDER_OPENAPI,
        summary="Place a market order",
    )

    @app.get(
        "/api/orders/{order_id}",
        response_model=OrderView,
        responses=error_responses(400, 401, 403, 404, 429, 431, 500, 503),
        dependencies=[Depends(read_token)],
        summary="Look an order up",
    )
    async def get_order(order_id: UUID, request: Request) -> OrderView:
        return OrderView.of(await service.get_order(request.app.state.pool, order_id))

    @app.get(
        "/api/orders",
        response_model=OrderPage,
        responses=error_responses(400, 401, 403, 429, 431, 500, 503),
        summary="List the caller's orders, newest first",
    )
    async def list_orders(
        request: Request,
        principal: Annotated[Principal, Depends(read_token)],
        status: Annotated[OrderStatus | None, Query(description="only orders in this status")] = None,
        client_order_id: Annotated[
            str | None,
            Query(
                alias="clientOrderId",
                max_length=64,
                pattern=CLIENT_ORDER_ID.pattern,  # as placed: Postgres refuses text with NUL, say
                description="only orders placed with this clientOrderId",
            ),
        ] = None,
        limit: Annotated[
            int,
            Query(
                ge=1, description=f"orders per page; above {service.LIST_LIMIT_MAX}, {service.LIST_LIMIT_MAX}"
            ),
        ] = 20,
        cursor: Annotated[
            str | None, Query(max_length=512, description="the previous page's nextCursor (opaque)")
        ] = None,
    ) -> OrderPage:
        page = await service.list_orders(
            request.app.state.pool,
            client=client_of(request, principal),
            status=status,
            client_order_id=client_order_id,
            limit=limit,
            cursor=cursor,
        )
        return OrderPage(orders=[OrderSummary.of(o) for o in page.orders], next_cursor=page.next_cursor)

    @app.delete(
        "/api/orders/{order_id}",
        response_model=OrderView,
        responses=error_responses(
            400,
            401,
            403,
            404,
            409,
            429,
            431,
            500,
            503,
            e409="too_late_to_cancel: the order has reached submitted (or finished)",
        ),
        summary="Cancel an order that has not reached submitted",
    )
    async def cancel_order(order_id: UUID, request: Request, response: Response) -> OrderView:
        limit = await rate_limit(request, await authenticate(request))
        if limit is not None:
            response.raw_headers.extend(limit.raw_headers())
        order = await service.cancel_order(request.app.state.intake, order_id, client=request.state.client)
        return OrderView.of(order)

    async def health(request: Request) -> Response:
        return Response(HEALTHY, media_type="application/json")

    app.router.add_api_route(
        "/health",
        health,
        methods=["GET"],
        route_class_override=DirectRoute,
        response_model=dict[str, str],
        responses=error_responses(431),
    )

    @app.get(
        "/ready",
        response_model=Readiness,
        responses={
            503: {"model": Readiness, "description": "an engine orders need is down"},
            **error_responses(429, 431),
        },
        dependencies=[Depends(anonymous_read_token)],
    )
    async def ready(request: Request) -> Response:
        state = request.app.state
        outbox: Outbox = state.outbox
        checks = {
            "postgres": check_postgres(state.pool),
            "redis": check_redis(state.redis),
            "kafka": outbox.kafka_answers(),
        }
        results = await asyncio.gather(
            *(asyncio.wait_for(c, 3.0) for c in checks.values()), return_exceptions=True
        )
        status = {
            name: "ok" if not isinstance(r, BaseException) else "down"
            for name, r in zip(checks, results, strict=True)
        }
        if not outbox.publishing:  # the broker may answer, but nothing reaches it from here
            status["kafka"] = "down"
        optional = {"redis"} if state.limiter.fail_open else set()
        if all(v == "ok" for v in status.values()):
            return json_response({"status": "ready", "checks": status})
        if all(v == "ok" for name, v in status.items() if name not in optional):
            return json_response({"status": "degraded", "checks": status})
        return json_response({"status": "not_ready", "checks": status}, 503)

    return app
