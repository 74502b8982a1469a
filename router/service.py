"""Routing use case: pending → routing → building, then hand the order to the executor.

A retriable failure (no venue answered, and at least one failure was transient) goes round the retry loop
of `shared/store/steps.py`; a retry comes back here from its retry topic once due and is routed afresh (new
quotes: a stale quote is the likeliest reason a swap failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from shared.domain.errors import DexError, NoVenueCanQuote, QuoteUnavailable
from shared.domain.events import Dex, ExecuteOrder, Quote
from shared.domain.order import OrderRecord
from shared.domain.status import BEFORE_SUBMISSION, OrderStatus
from shared.messaging.batches import job_context
from shared.messaging.outbox import Message
from shared.messaging.topics import ORDERS_EXECUTE
from shared.runtime.clock import utcnow
from shared.runtime.logging import get_logger
from shared.runtime.metrics import QUEUE_WAIT_SECONDS, QUOTE_SECONDS
from shared.runtime.tasks import TaskPool
from shared.store.orders import message
from shared.store.steps import OrderSteps
from shared.venue.protocol import Venue

logger = get_logger(__name__)


def best_quote(quotes: dict[Dex, Quote]) -> Quote:
    """The quote that returns the most tokenOut after fees; ties go to the first venue in catalogue order."""
    return max(quotes.values(), key=lambda q: (q.amount_out, -list(Dex).index(q.dex)))


def execute_command(order: OrderRecord, best: Quote | None = None) -> ExecuteOrder:
    """The executor's command for a routed order (`best`, or the quote it was routed on)."""
    quote = best or order.quotes[order.dex_used or Dex.RAYDIUM]
    return ExecuteOrder(
        order_id=order.id,
        dex=quote.dex,
        quote=quote,
        token_in=order.token_in,
        token_out=order.token_out,
        amount_in=order.amount_in,
        slippage=order.slippage,
        attempt=max(order.attempt, 1),
        created_at=order.created_at,
        correlation_id=order.correlation_id,
    )


@dataclass(frozen=True)
class RouteJob:
    """One message asking to route an order: a new order, or a retry that has fallen due."""

    order_id: UUID
    correlation_id: str | None
    job_id: str | None


class RouterService:
    def __init__(self, steps: OrderSteps, dex: Venue, tasks: TaskPool, *, quote_timeout_s: float) -> None:
        self._steps = steps
        self._dex = dex
        self._tasks = tasks
        self._quote_timeout_s = quote_timeout_s

    async def route(self, jobs: Sequence[RouteJob]) -> None:
        """Start routing a batch of orders from wherever each one is. Returns once every routing step is
        committed and its quoting holds a slot of the task pool (so Kafka's offset passes only orders that
        Postgres shows in progress); the quotes and the handover to the executor run on the pool."""
        orders = await self._steps.load_many([job.order_id for job in jobs])
        started: list[asyncio.Task[object]] = []
        handovers: list[Message] = []
        for job in jobs:
            with job_context(job.order_id, job.correlation_id, job.job_id):
                order = orders.get(job.order_id)
                if order is None:
                    logger.warning("order.unknown", orderId=str(job.order_id))
                elif order.status in BEFORE_SUBMISSION and self._steps.overdue(order):
                    started.append(asyncio.create_task(self._steps.time_out(order)))
                elif order.status is OrderStatus.PENDING:
                    due = order.latest_event().next_retry_at
                    if due is not None and due > utcnow():
                        logger.info("order.retry_not_due", orderId=str(order.id))
                        continue  # its retry topic brings it back when due
                    started.append(asyncio.create_task(self._start(order)))
                elif (
                    order.status is OrderStatus.ROUTING
                ):  # redelivered after its routing step: quote it again
                    started.append(asyncio.create_task(self._tasks.spawn(self._build(order))))
                elif order.status is OrderStatus.BUILDING:  # re-driven: its command was lost downstream
                    handovers.append(message(ORDERS_EXECUTE, order, execute_command(order)))
                # Submitted and later: the executor or its sweep owns the order; cancelled: nobody.
        for outcome in await asyncio.gather(*started, return_exceptions=True):
            if isinstance(outcome, Exception):  # the order stays where it was: the sweep re-drives it
                logger.error("order.route_failed", error=repr(outcome))
        await self._steps.outbox.write(handovers)

    async def _start(self, order: OrderRecord) -> None:
        if order.attempt <= 1:
            QUEUE_WAIT_SECONDS.labels("routing").observe((utcnow() - order.created_at).total_seconds())
        routing = await self._steps.start_routing(order)
        if routing is not None:
            await self._tasks.spawn(self._build(routing))

    async def _build(self, order: OrderRecord) -> None:
        quotes, failures = await self._quote_both(order)
        if not quotes:
            reason = "no venue returned a quote: " + "; ".join(f"{d}: {e!r}" for d, e in failures.items())
            if all(isinstance(e, DexError) and not e.retriable for e in failures.values()):
                await self._steps.fail(order, NoVenueCanQuote(reason))
            else:
                await self._steps.retry_or_fail(order, QuoteUnavailable(reason))
            return
        best = best_quote(quotes)
        logger.info(
            "order.routed",
            orderId=str(order.id),
            dex=best.dex.value,
            quotes={d.value: str(q.amount_out) for d, q in quotes.items()},
        )
        await self._steps.route(order, best, quotes, execute_command(order, best))

    async def _quote_both(self, order: OrderRecord) -> tuple[dict[Dex, Quote], dict[Dex, BaseException]]:
        async def one(dex: Dex) -> Quote:
            # asyncio.timeout, not wait_for: wait_for runs the quote as one more task (3.11).
            with QUOTE_SECONDS.labels(dex.value).time():
                async with asyncio.timeout(self._quote_timeout_s):
                    return await self._dex.quote(
                        dex,
                        order_id=order.id,
                        token_in=order.token_in,
                        token_out=order.token_out,
                        amount_in=order.amount_in,
                        attempt=max(order.attempt, 1),
                    )

        results = await asyncio.gather(*(one(dex) for dex in Dex), return_exceptions=True)
        quotes: dict[Dex, Quote] = {}
        failures: dict[Dex, BaseException] = {}
        for dex, result in zip(Dex, results, strict=True):
            if isinstance(result, Quote):
                quotes[dex] = result
            else:
                failures[dex] = result
                logger.warning("quote.failed", orderId=str(order.id), dex=dex.value, error=repr(result))
        return quotes, failures
