"""Ingress use cases: accept an order (idempotently, within the backlog limit, through the outbox), look
one up."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from uuid import UUID

import asyncpg

from ingress import repository
from ingress.backlog import BacklogProbe
from ingress.idempotency import Claim, IdempotencyStore
from ingress.outbox import OutboxRelay
from ingress.schemas import OrderAccepted, PlaceOrder
from shared.errors import IdempotencyConflict, IdempotencyInProgress, NotFound, ServiceUnavailable
from shared.events import OrderPlaced, OrderStatus, StatusEvent, utcnow
from shared.logging import get_logger
from shared.metrics import ORDERS_ACCEPTED
from shared.orders import OrderRecord, load_order
from shared.topics import ORDER_STATUS, ORDERS

logger = get_logger(__name__)


@dataclass(frozen=True)
class Intake:
    """What accepting an order needs; built once in the app's lifespan."""

    pool: asyncpg.Pool
    relay: OutboxRelay
    idempotency: IdempotencyStore
    backlog: BacklogProbe
    max_attempts: int


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
    """Record the order as pending (seq 1) with its two messages in the outbox, in one transaction, and
    answer only after the commit. With an Idempotency-Key, a repeat gets the first answer instead."""
    claim: Claim | None = None
    if idempotency_key is not None:
        claim = Claim(uuid.uuid4(), request.fingerprint())
        held = await intake.idempotency.claim(client, idempotency_key, claim)
        if held is not None:
            return await _replay(intake.pool, held, claim, request)
    order_id = claim.order_id if claim is not None else uuid.uuid4()
    try:
        await intake.backlog.check()
        await _record(intake, request, order_id, correlation_id)
    except Exception:
        if claim is not None and idempotency_key is not None:
            await intake.idempotency.release(client, idempotency_key, claim)
        raise
    intake.relay.wake()
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
        async with intake.pool.acquire() as conn, conn.transaction():
            await repository.insert_order(conn, placed, pending, client_order_id=request.client_order_id)
            # The pending event first: the relay publishes in id order, so seq 1 is on `order.status`
            # before the router can see the order and publish seq 2.
            for topic, payload in ((ORDER_STATUS, pending), (ORDERS, placed)):
                await repository.add_to_outbox(conn, topic.name, order_id, payload.to_dict(), correlation_id)
    except repository.UNREACHABLE as exc:
        raise ServiceUnavailable("the order store is unreachable") from exc


async def _replay(pool: asyncpg.Pool, held: Claim, mine: Claim, request: PlaceOrder) -> Accepted:
    if held.fingerprint != mine.fingerprint:
        raise IdempotencyConflict()
    if held.status is not None and held.body is not None:
        return Accepted(OrderAccepted.model_validate(held.body), held.status, replayed=True)
    try:
        committed = await repository.order_exists(pool, held.order_id)
    except repository.UNREACHABLE as exc:
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
    except repository.UNREACHABLE as exc:
        raise ServiceUnavailable("the order store is unreachable") from exc
    if order is None:
        raise NotFound(f"order {order_id}")
    return order
