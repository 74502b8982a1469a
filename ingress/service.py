"""Ingress use cases: accept an order (idempotently, if the pipeline can finish it in time, through the
outbox), look one up."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from ingress import repository
from ingress.admission import Admission
from ingress.idempotency import Claim, IdempotencyStore
from ingress.repository import NewOrder
from ingress.schemas import OrderAccepted, PlaceOrder
from shared.batching import GroupCommit
from shared.config import Settings
from shared.db import UNREACHABLE
from shared.errors import IdempotencyConflict, IdempotencyInProgress, NotFound, ServiceUnavailable
from shared.events import OrderPlaced, OrderStatus, StatusEvent, utcnow
from shared.logging import get_logger
from shared.metrics import ORDERS_ACCEPTED
from shared.orders import OrderRecord, load_order
from shared.outbox import Outbox

logger = get_logger(__name__)


@dataclass(frozen=True)
class Intake:
    """What accepting an order needs; built once in the app's lifespan."""

    pool: asyncpg.Pool
    writer: GroupCommit[NewOrder, None]
    idempotency: IdempotencyStore
    admission: Admission
    max_attempts: int


@asynccontextmanager
async def open_intake(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, producer: AIOKafkaProducer
) -> AsyncIterator[Intake]:
    """Admission sampling, the outbox and the group-committed order writer, running; stopped on exit."""
    async with AsyncExitStack() as running:
        outbox = Outbox(pool, producer, settings)
        outbox.start()
        running.push_async_callback(outbox.stop)
        writer: GroupCommit[NewOrder, None] = GroupCommit(
            pool, outbox, repository.insert_orders, name="orders"
        )
        writer.start()
        running.push_async_callback(writer.stop)
        admission = Admission(settings, pool)
        await admission.start()
        running.push_async_callback(admission.stop)
        yield Intake(
            pool=pool,
            writer=writer,
            idempotency=IdempotencyStore(
                redis, key_prefix=settings.redis_key_prefix, ttl_s=settings.idempotency_ttl_s
            ),
            admission=admission,
            max_attempts=settings.max_retries,
        )


@dataclass(frozen=True)
class Accepted:
    body: OrderAccepted
    status: int = 202
    replayed: bool = False


async def place_order(
    intake: Intake,
    request: PlaceOrder,
    *,
    client: str,
    idempotency_key: str | None,
    correlation_id: str | None,
) -> Accepted:
    """Record the order as pending (seq 1) with its two messages in the outbox, in one statement shared with
    the other orders arriving meanwhile, and answer only after the commit. With an Idempotency-Key, a repeat
    gets the first answer instead."""
    with intake.admission.in_progress():  # past ADMISSION_MAX_IN_FLIGHT: 429 at once, before any I/O
        claim: Claim | None = None
        if idempotency_key is not None:
            claim = Claim(uuid.uuid4(), request.fingerprint())
            held = await intake.idempotency.claim(client, idempotency_key, claim)
            if held is not None:
                return await _replay(intake.pool, held, claim, request)
        order_id = claim.order_id if claim is not None else uuid.uuid4()
        try:
            intake.admission.check()
            await _record(intake, request, order_id, correlation_id)
        except Exception:
            if claim is not None and idempotency_key is not None:
                await intake.idempotency.release(client, idempotency_key, claim)
            raise
        body = OrderAccepted(
            order_id=order_id, status=OrderStatus.PENDING, client_order_id=request.client_order_id
        )
        if claim is not None and idempotency_key is not None:
            await intake.idempotency.record(
                client, idempotency_key, replace(claim, status=202, body=body.to_dict())
            )
        ORDERS_ACCEPTED.inc()
        logger.info(
            "order.accepted", orderId=str(order_id), token_in=request.token_in, token_out=request.token_out
        )
        return Accepted(body)


async def _record(intake: Intake, request: PlaceOrder, order_id: UUID, correlation_id: str | None) -> None:
    now = utcnow()
    placed = OrderPlaced(
        order_id=order_id,
        token_in=request.token_in,
        token_out=request.token_out,
        amount_in=request.amount_in,
        slippage=request.slippage_fraction,
        created_at=now,
        correlation_id=correlation_id,
    )
    pending = StatusEvent(
        order_id=order_id,
        seq=1,
        status=OrderStatus.PENDING,
        at=now,
        max_attempts=intake.max_attempts,
        correlation_id=correlation_id,
    )
    try:
        await intake.writer.submit(NewOrder(placed, pending, request.client_order_id))
    except UNREACHABLE as exc:
        raise ServiceUnavailable("the order store is unreachable") from exc


async def _replay(pool: asyncpg.Pool, held: Claim, mine: Claim, request: PlaceOrder) -> Accepted:
    if held.fingerprint != mine.fingerprint:
        raise IdempotencyConflict()
    if held.status is not None and held.body is not None:
        return Accepted(OrderAccepted.model_validate(held.body), held.status, replayed=True)
    try:
        committed = await repository.order_exists(pool, held.order_id)
    except UNREACHABLE as exc:
        raise ServiceUnavailable("the order store is unreachable") from exc
    if committed:  # the first request committed but its answer was never recorded (it crashed, or Redis did)
        body = OrderAccepted(
            order_id=held.order_id, status=OrderStatus.PENDING, client_order_id=request.client_order_id
        )
        return Accepted(body, replayed=True)
    raise IdempotencyInProgress(retry_after=1)


async def get_order(pool: asyncpg.Pool, order_id: UUID) -> OrderRecord:
    try:
        order = await load_order(pool, order_id)
    except UNREACHABLE as exc:
        raise ServiceUnavailable("the order store is unreachable") from exc
    if order is None:
        raise NotFound(f"order {order_id}")
    return order
