"""Ingress use cases: accept an order, look one up."""

from __future__ import annotations

import uuid
from uuid import UUID

import asyncpg

from ingress import repository
from ingress.schemas import PlaceOrder
from shared.errors import NotFound
from shared.events import OrderPlaced, OrderStatus, StatusEvent, utcnow
from shared.kafka import Publisher
from shared.logging import get_logger
from shared.metrics import ORDERS_ACCEPTED
from shared.orders import OrderRecord, load_order
from shared.topics import ORDERS

logger = get_logger(__name__)


async def place_order(
    pool: asyncpg.Pool,
    publisher: Publisher,
    request: PlaceOrder,
    *,
    correlation_id: str | None,
    max_attempts: int,
) -> OrderPlaced:
    """Record the order as pending (seq 1), then put it on `orders` and its first event on `order.status`."""
    now = utcnow()
    placed = OrderPlaced(
        order_id=uuid.uuid4(),
        token_in=request.token_in,
        token_out=request.token_out,
        amount_in=request.amount_in,
        slippage=request.slippage,
        created_at=now,
        correlation_id=correlation_id,
    )
    pending = StatusEvent(
        order_id=placed.order_id,
        seq=1,
        status=OrderStatus.PENDING,
        at=now,
        max_attempts=max_attempts,
        correlation_id=correlation_id,
    )
    await repository.insert_order(pool, placed, pending)
    await publisher.send(ORDERS, placed.order_id, placed, correlation_id)
    await publisher.status(pending)
    ORDERS_ACCEPTED.inc()
    logger.info(
        "order.accepted", orderId=str(placed.order_id), token_in=placed.token_in, token_out=placed.token_out
    )
    return placed


async def get_order(pool: asyncpg.Pool, order_id: UUID) -> OrderRecord:
    order = await load_order(pool, order_id)
    if order is None:
        raise NotFound(f"order {order_id}")
    return order
