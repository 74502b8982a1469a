"""Ingress use cases: accept an order (idempotently, if the pipeline can finish it in time, through the
outbox), look one up, list a caller's own, cancel one."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from ingress import repository
from ingress.admission import Admission
from ingress.repository import KeyClaim, KeyHolder, NewOrder, Placement, Position
from ingress.schemas import OrderAccepted, PlaceOrder
from shared.domain.errors import (
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidBody,
    NotFound,
    ServiceUnavailable,
    TooLateToCancel,
)
from shared.domain.events import OrderPlaced, StatusEvent
from shared.domain.order import OrderRecord
from shared.domain.status import BEFORE_SUBMISSION, OrderStatus
from shared.messaging.outbox import Outbox
from shared.runtime.clock import utcnow
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger
from shared.runtime.metrics import ORDERS_ACCEPTED
from shared.store.batching import GroupCommit
from shared.store.db import FAILED, answering_unavailable
from shared.store.orders import load_order
from shared.store.steps import OrderSteps, steps_through

logger = get_logger(__name__)

KEY_PRUNE_INTERVAL_S = 60.0
LIST_LIMIT_MAX = 100
# A cancel reads the order, then writes its step conditionally; each time a stage moved the order in between,
# it reads again. An order takes at most a few steps before `submitted`, so a few rounds always settle it.
CANCEL_ROUNDS = 5


@dataclass(frozen=True)
class Intake:
    """What accepting an order needs; built once in the app's lifespan."""

    pool: asyncpg.Pool
    writer: GroupCommit[NewOrder, Placement]
    steps: OrderSteps  # for cancels: the same conditional step every stage takes
    admission: Admission
    max_attempts: int


@asynccontextmanager
async def open_intake(
    settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> AsyncIterator[Intake]:
    """Admission sampling, the outbox, the group-committed order writer, the transition writer (cancels)
    and the pruning of expired Idempotency-Keys, running; stopped on exit."""
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
        steps = await running.enter_async_context(steps_through(pool, outbox, settings))
        admission = Admission(settings, pool, kafka_probe=producer.client.fetch_all_metadata)
        await admission.start()
        running.push_async_callback(admission.stop)
        pruning = asyncio.create_task(
            _prune_keys_forever(pool, settings.idempotency_ttl_s), name="key-pruning"
        )
        running.callback(pruning.cancel)
        yield Intake(
            pool=pool, writer=writer, steps=steps, admission=admission, max_attempts=settings.max_retries
        )


async def _prune_keys_forever(pool: asyncpg.Pool, key_ttl_s: int) -> None:
    """Expired keys would only be taken over in place; pruning (a bounded batch a minute, plenty for keys that
    arrive at a few thousand a second) keeps the table the size of the TTL's traffic. Any ingress process
    may prune: the deletes do not conflict."""
    while True:
        await asyncio.sleep(KEY_PRUNE_INTERVAL_S)
        try:
            await repository.prune_keys(pool, key_ttl_s=key_ttl_s)
        except FAILED as exc:
            logger.warning("idempotency.prune_failed", error=repr(exc))


@dataclass(frozen=True)
class PlaceOutcome:
    """What placing an order comes to: the 202 body (or the first request's, replayed under its key)."""

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
) -> PlaceOutcome:
    """Record the order as pending (seq 1) with its two messages in the outbox, in one statement shared with
    the other orders arriving meanwhile, and answer only after the commit.

    With an Idempotency-Key, the key is written in that same statement, so it exists exactly when its order
    does: a repeat (same client, key and body) gets the first answer instead, and a request whose answer was
    lost (even in an ambiguous COMMIT) can always be retried with its key."""
    with intake.admission.in_progress():  # past ADMISSION_MAX_IN_FLIGHT: 429 at once, before any I/O
        intake.admission.check()
        key = None if idempotency_key is None else key_claim(client, idempotency_key, request)
        order = new_order(request, correlation_id, key, client=client, max_attempts=intake.max_attempts)
        order_id = order.placed.order_id
        with answering_unavailable():
            placement = await intake.writer.submit(order)
        if not placement.placed:
            assert key is not None, "only an order with a key can be turned away"
            return _replay(placement.holder, key)
        ORDERS_ACCEPTED.inc()
        logger.info(
            "order.accepted", orderId=str(order_id), token_in=request.token_in, token_out=request.token_out
        )
        return PlaceOutcome(
            OrderAccepted(
                order_id=order_id, status=OrderStatus.PENDING, client_order_id=request.client_order_id
            )
        )


def key_claim(client: str, idempotency_key: str, request: PlaceOrder) -> KeyClaim:
    """An Idempotency-Key as stored: scoped to its client, hashed, with the body's fingerprint."""
    return KeyClaim(client, hashlib.sha256(idempotency_key.encode()).digest(), request.fingerprint())


def new_order(
    request: PlaceOrder, correlation_id: str | None, key: KeyClaim | None, *, client: str, max_attempts: int
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
    return NewOrder(placed, pending, request.client_order_id, client, key)


def _replay(holder: KeyHolder | None, mine: KeyClaim) -> PlaceOutcome:
    """The first answer again, from the order the key names (the key's body must be this one)."""
    if holder is None:  # the key expired and changed hands between the write and the lookup
        raise IdempotencyInProgress(retry_after=1)
    if holder.fingerprint != mine.fingerprint:
        raise IdempotencyConflict()
    body = OrderAccepted(
        order_id=holder.order_id, status=OrderStatus.PENDING, client_order_id=holder.client_order_id
    )
    return PlaceOutcome(body, replayed=True)


async def get_order(pool: asyncpg.Pool, order_id: UUID) -> OrderRecord:
    with answering_unavailable():
        order = await load_order(pool, order_id)
    if order is None:
        raise NotFound(f"order {order_id}")
    return order


async def cancel_order(intake: Intake, order_id: UUID, *, client: str) -> OrderRecord:
    """Cancel `client`'s order if it has not reached `submitted`: the step to `cancelled` is the same
    conditional UPDATE on (id, seq) that every stage takes, so of a cancel and the executor's step to
    `submitted`, exactly one commits, and the swap starts only after the latter. Cancelling a cancelled
    order answers it again."""
    with answering_unavailable():
        for _ in range(CANCEL_ROUNDS):
            order = await repository.own_order(intake.pool, order_id, client)
            if order is None:
                raise NotFound(f"order {order_id}")
            if order.status is OrderStatus.CANCELLED:
                return order
            if order.status not in BEFORE_SUBMISSION:
                raise TooLateToCancel(order.status.value)
            if await intake.steps.cancel(order) is not None:
                logger.info("order.cancelled", orderId=str(order_id), was=order.status.value)
                cancelled = await load_order(intake.pool, order_id)
                assert cancelled is not None, "an order is never deleted"
                return cancelled
    raise ServiceUnavailable("the order kept moving while being cancelled; try again")


@dataclass(frozen=True)
class OrderPage:
    orders: list[OrderRecord]
    next_cursor: str | None


async def list_orders(
    pool: asyncpg.Pool,
    *,
    client: str,
    status: OrderStatus | None,
    client_order_id: str | None,
    limit: int,
    cursor: str | None,
) -> OrderPage:
    """`client`'s orders, newest first, `limit` (at most LIST_LIMIT_MAX) at a time; the cursor of a page
    leads to the next one."""
    limit = min(limit, LIST_LIMIT_MAX)
    with answering_unavailable():
        orders = await repository.list_orders(
            pool,
            client,
            status=status,
            client_order_id=client_order_id,
            after=None if cursor is None else decode_cursor(cursor),
            limit=limit + 1,
        )
    more = len(orders) > limit
    orders = orders[:limit]
    last = orders[-1] if more else None
    return OrderPage(orders, None if last is None else encode_cursor(Position(last.created_at, last.id)))


def encode_cursor(position: Position) -> str:
    """Opaque to clients: where the page ended, base64url (unpadded)."""
    raw = orjson.dumps([position.created_at.isoformat(), str(position.order_id)])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Position:
    """Where the previous page ended; a 400 naming the cursor for anything this API could not have given,
    including a time with no UTC equivalent (`0001-01-01T00:00:00+05:00`): Postgres compares in UTC, and
    asyncpg would refuse to send it (DataError), so it is refused here, where the field is known."""
    try:
        created_at, order_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None:
            raise ValueError("a cursor's time has its offset")
        return Position(at.astimezone(UTC), UUID(order_id))
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidBody(
            "the cursor is not one this API gave",
            details=[{"field": "cursor", "message": "not a cursor from a previous page"}],
        ) from exc
