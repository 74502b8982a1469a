"""Ingress use cases: accept an order (idempotently, if the pipeline can finish it in time, through the
outbox), look one up."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer

from ingress import repository
from ingress.admission import Admission
from ingress.repository import KeyClaim, KeyHolder, NewOrder, Placement
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

KEY_PRUNE_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Intake:
    """What accepting an order needs; built once in the app's lifespan."""

    pool: asyncpg.Pool
    writer: GroupCommit[NewOrder, Placement]
    admission: Admission
    max_attempts: int


@asynccontextmanager
async def open_intake(
    settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> AsyncIterator[Intake]:
    """Admission sampling, the outbox, the group-committed order writer and the pruning of expired
    Idempotency-Keys, running; stopped on exit."""
    async with AsyncExitStack() as running:
        outbox = Outbox(pool, producer, settings)
        outbox.start()
        running.push_async_callback(outbox.stop)
        writer: GroupCommit[NewOrder, Placement] = GroupCommit(
            pool,
            outbox,
            functools.partial(repository.insert_orders, key_ttl_s=settings.idempotency_ttl_s),
            name="orders",
        )
        writer.start()
        running.push_async_callback(writer.stop)
        admission = Admission(settings, pool)
        await admission.start()
        running.push_async_callback(admission.stop)
        pruning = asyncio.create_task(
            _prune_keys_forever(pool, settings.idempotency_ttl_s), name="key-pruning"
        )
        running.callback(pruning.cancel)
        yield Intake(pool=pool, writer=writer, admission=admission, max_attempts=settings.max_retries)


async def _prune_keys_forever(pool: asyncpg.Pool, key_ttl_s: int) -> None:
    """Expired keys would only be taken over in place; pruning (a bounded batch a minute, plenty for keys that
    arrive at a few thousand a second) keeps the table the size of the TTL's traffic. Any ingress process
    may prune: the deletes do not conflict."""
    while True:
        await asyncio.sleep(KEY_PRUNE_INTERVAL_S)
        try:
            await repository.prune_keys(pool, key_ttl_s=key_ttl_s)
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            logger.warning("idempotency.prune_failed", error=repr(exc))


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
    the other orders arriving meanwhile, and answer only after the commit.

    With an Idempotency-Key, the key is written in that same statement, so it exists exactly when its order
    does: a repeat (same client, key and body) gets the first answer instead, and a request whose answer was
    lost (even in an ambiguous COMMIT) can always be retried with its key."""
    with intake.admission.in_progress():  # past ADMISSION_MAX_IN_FLIGHT: 429 at once, before any I/O
        intake.admission.check()
        key = None if idempotency_key is None else key_claim(client, idempotency_key, request)
        order = new_order(request, correlation_id, key, max_attempts=intake.max_attempts)
        order_id = order.placed.order_id
        try:
            placement = await intake.writer.submit(order)
        except UNREACHABLE as exc:
            raise ServiceUnavailable("the order store is unreachable") from exc
        if not placement.placed:
            assert key is not None, "only an order with a key can be turned away"
            return _replay(placement.holder, key)
        ORDERS_ACCEPTED.inc()
        logger.info(
            "order.accepted", orderId=str(order_id), token_in=request.token_in, token_out=request.token_out
        )
        return Accepted(
            OrderAccepted(
                order_id=order_id, status=OrderStatus.PENDING, client_order_id=request.client_order_id
            )
        )


def key_claim(client: str, idempotency_key: str, request: PlaceOrder) -> KeyClaim:
    """An Idempotency-Key as stored: scoped to its client, hashed, with the body's fingerprint."""
    return KeyClaim(client, hashlib.sha256(idempotency_key.encode()).digest(), request.fingerprint())


def new_order(
    request: PlaceOrder, correlation_id: str | None, key: KeyClaim | None, *, max_attempts: int
) -> NewOrder:
    """A new order at seq 1 (pending), with its key if it has one, as the intake writes it."""
    order_id, now = uuid.uuid4(), utcnow()
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
        max_attempts=max_attempts,
        correlation_id=correlation_id,
    )
    return NewOrder(placed, pending, request.client_order_id, key)


def _replay(holder: KeyHolder | None, mine: KeyClaim) -> Accepted:
    """The first answer again, from the order the key names (the key's body must be this one)."""
    if holder is None:  # the key expired and changed hands between the write and the lookup
        raise IdempotencyInProgress(retry_after=1)
    if holder.fingerprint != mine.fingerprint:
        raise IdempotencyConflict()
    body = OrderAccepted(
        order_id=holder.order_id, status=OrderStatus.PENDING, client_order_id=holder.client_order_id
    )
    return Accepted(body, replayed=True)


async def get_order(pool: asyncpg.Pool, order_id: UUID) -> OrderRecord:
    try:
        order = await load_order(pool, order_id)
    except UNREACHABLE as exc:
        raise ServiceUnavailable("the order store is unreachable") from exc
    if order is None:
        raise NotFound(f"order {order_id}")
    return order
