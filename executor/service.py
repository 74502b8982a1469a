"""Execution use case: building → submitted → confirmed | failed."""

from __future__ import annotations

from shared.dex import MockDex
from shared.errors import SlippageExceeded
from shared.events import ExecuteOrder, OrderStatus, utcnow
from shared.logging import get_logger
from shared.metrics import EXECUTION_SECONDS, QUEUE_WAIT_SECONDS, SWAPS_IN_FLIGHT
from shared.orders import OrderSteps

logger = get_logger(__name__)
S = OrderStatus


class ExecutorService:
    def __init__(self, steps: OrderSteps, dex: MockDex) -> None:
        self._steps = steps
        self._dex = dex

    async def execute(self, command: ExecuteOrder) -> None:
        order = await self._steps.load(command.order_id)
        if order is None:
            logger.warning("order.unknown", order_id=str(command.order_id))
            return
        if order.status is S.BUILDING:
            QUEUE_WAIT_SECONDS.labels("execution").observe((utcnow() - order.updated_at).total_seconds())
            order = await self._steps.advance(order, S.SUBMITTED, attempt=command.attempt, dex=command.dex)
        elif order.status is S.SUBMITTED or order.status.terminal:
            # Redelivered: the swap below is idempotent on the venue, so finishing the job again is safe.
            await self._steps.republish_latest(order)
        else:
            logger.warning("order.not_routed", order_id=str(order.id), status=order.status.value)
            return
        if order is None or order.status is not S.SUBMITTED:
            return
        assert order.dex_used is not None
        quote = order.quotes[order.dex_used]
        min_amount_out = quote.amount_out * (1 - order.slippage)
        try:
            with SWAPS_IN_FLIGHT.track_inprogress(), EXECUTION_SECONDS.labels(quote.dex.value).time():
                result = await self._dex.execute(
                    quote,
                    order_id=order.id,
                    amount_in=order.amount_in,
                    min_amount_out=min_amount_out,
                    attempt=order.attempt,
                )
        except SlippageExceeded as exc:
            logger.info("order.slippage_exceeded", order_id=str(order.id), reason=exc.message)
            await self._steps.advance(order, S.FAILED, failure_reason=exc.message, error=exc.code)
            return
        logger.info("order.confirmed", order_id=str(order.id), dex=result.dex.value, tx_hash=result.tx_hash)
        await self._steps.advance(
            order,
            S.CONFIRMED,
            dex=result.dex,
            tx_hash=result.tx_hash,
            executed_price=result.executed_price,
            amount_out=result.amount_out,
        )
