"""Routing use case: pending → routing → building, then hand the order to the executor.

A retriable failure (no venue answered, and at least one failure was transient) goes round the retry loop of
`shared/orders.py`; a retry comes back here from its retry topic once due and is routed afresh (new quotes:
a stale quote is the likeliest reason a swap failed).
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from shared.dex import MockDex
from shared.errors import DexError, NoVenueCanQuote, QuoteUnavailable
from shared.events import Dex, ExecuteOrder, OrderStatus, Quote, utcnow
from shared.kafka import Publisher
from shared.logging import get_logger
from shared.metrics import QUEUE_WAIT_SECONDS, QUOTE_SECONDS
from shared.orders import OrderRecord, OrderSteps
from shared.topics import ORDERS_EXECUTE

logger = get_logger(__name__)
S = OrderStatus


def best_quote(quotes: dict[Dex, Quote]) -> Quote:
    """The quote that returns the most tokenOut after fees; ties go to the first venue in catalogue order."""
    return max(quotes.values(), key=lambda q: (q.amount_out, -list(Dex).index(q.dex)))


class RouterService:
    def __init__(
        self, steps: OrderSteps, dex: MockDex, publisher: Publisher, *, quote_timeout_s: float
    ) -> None:
        self._steps = steps
        self._dex = dex
        self._publisher = publisher
        self._quote_timeout_s = quote_timeout_s

    async def route(self, order_id: UUID) -> None:
        """Take the order from wherever it is before submission to the executor's topic."""
        order = await self._steps.load(order_id)
        if order is None:
            logger.warning("order.unknown", orderId=str(order_id))
            return
        if order.status.terminal or order.status is S.SUBMITTED:
            await self._steps.republish_latest(order)
            return
        if self._steps.overdue(order):
            await self._steps.time_out(order)
            return
        if order.status is S.PENDING:
            due = order.latest_event().next_retry_at
            if due is not None and due > utcnow():
                logger.info("order.retry_not_due", orderId=str(order.id))
                return  # its retry topic brings it back when due
            if order.attempt <= 1:
                QUEUE_WAIT_SECONDS.labels("routing").observe((utcnow() - order.created_at).total_seconds())
            order = await self._steps.advance(order, S.ROUTING, attempt=max(order.attempt, 1))
        else:
            await self._steps.republish_latest(order)
        if order is not None and order.status is S.ROUTING:
            order = await self._build(order)
        if order is not None and order.status is S.BUILDING:
            await self._hand_over(order)

    async def _build(self, order: OrderRecord) -> OrderRecord | None:
        quotes, failures = await self._quote_both(order)
        if not quotes:
            reason = "no venue returned a quote: " + "; ".join(f"{d}: {e!r}" for d, e in failures.items())
            if all(isinstance(e, DexError) and not e.retriable for e in failures.values()):
                return await self._steps.fail(order, NoVenueCanQuote(reason))
            return await self._steps.retry_or_fail(order, QuoteUnavailable(reason))
        best = best_quote(quotes)
        logger.info(
            "order.routed",
            orderId=str(order.id),
            dex=best.dex.value,
            quotes={d.value: str(q.amount_out) for d, q in quotes.items()},
        )
        return await self._steps.advance(order, S.BUILDING, dex=best.dex, quotes=quotes)

    async def _quote_both(self, order: OrderRecord) -> tuple[dict[Dex, Quote], dict[Dex, BaseException]]:
        async def one(dex: Dex) -> Quote:
            with QUOTE_SECONDS.labels(dex.value).time():
                return await asyncio.wait_for(
                    self._dex.quote(
                        dex,
                        order_id=order.id,
                        token_in=order.token_in,
                        token_out=order.token_out,
                        amount_in=order.amount_in,
                        attempt=max(order.attempt, 1),
                    ),
                    self._quote_timeout_s,
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

    async def _hand_over(self, order: OrderRecord) -> None:
        assert order.dex_used is not None
        command = ExecuteOrder(
            order_id=order.id,
            dex=order.dex_used,
            quote=order.quotes[order.dex_used],
            token_in=order.token_in,
            token_out=order.token_out,
            amount_in=order.amount_in,
            slippage=order.slippage,
            attempt=max(order.attempt, 1),
            created_at=order.created_at,
            correlation_id=order.correlation_id,
        )
        await self._publisher.send(ORDERS_EXECUTE, order.id, command, order.correlation_id)
