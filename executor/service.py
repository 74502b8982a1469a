"""Execution use cases: building → submitted → confirmed | failed | pending (retry), and the sweep that
finishes what a crash, a lost message or the deadline left open.

`accept` runs on the agent: it records the intent (building → submitted, a conditional UPDATE) and hands the
swap to the bounded task pool. The swap carries `valid_until` = min(order deadline, submitted + SWAP_WINDOW):
the venue lands it only before then, so no swap can start (land) after the deadline, and once that instant
has passed the venue's ledger says for good whether the submission landed. The sweep settles such
submissions from the ledger (confirmed) or as an expired transaction (retried, or failed `timeout` past the
deadline); that is also how orders submitted by a process that died are finished after a restart.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

import asyncpg

from executor import repository
from shared.dex import MockDex, SwapResult, swap_key
from shared.errors import BlockhashExpired, DexError, SlippageExceeded
from shared.events import ExecuteOrder, OrderStatus, utcnow
from shared.logging import get_logger
from shared.metrics import EXECUTION_SECONDS, QUEUE_WAIT_SECONDS, SWAPS_IN_FLIGHT
from shared.orders import OrderRecord, OrderSteps
from shared.streaming import TaskPool

logger = get_logger(__name__)
S = OrderStatus
BPS = Decimal(10_000)
SETTLE_MARGIN_MS = 1000  # past valid_until, clocks of the venue (Postgres) and of this process agree
UNPUBLISHED_GRACE_MS = 3000  # an event committed this long ago and not marked published: its writer died


def realised_slippage_bps(quoted: Decimal, executed: Decimal) -> Decimal:
    """How much less than quoted the swap returned, in bps (negative when it returned more)."""
    return ((quoted - executed) / quoted * BPS).quantize(Decimal("0.01"))


class ExecutorService:
    def __init__(
        self,
        steps: OrderSteps,
        dex: MockDex,
        pool: asyncpg.Pool,
        tasks: TaskPool,
        *,
        swap_window_ms: int,
        stale_step_ms: int,
    ) -> None:
        self._steps = steps
        self._dex = dex
        self._pool = pool
        self._tasks = tasks
        self._swap_window = timedelta(milliseconds=swap_window_ms)
        self._stale_step_ms = stale_step_ms
        self._redriven: dict[tuple[UUID, int], float] = {}

    async def accept(self, command: ExecuteOrder) -> None:
        """Record the intent to swap, then hand the swap to the pool (waiting for a free slot)."""
        order = await self._steps.load(command.order_id)
        if order is None:
            logger.warning("order.unknown", orderId=str(command.order_id))
            return
        if order.status is not S.BUILDING:
            # Redelivered (or overtaken by a retry): Postgres says where the order is. A submitted order's
            # swap is either running or will be settled by the sweep; never start a second driver here.
            if order.status in (S.SUBMITTED, S.CONFIRMED, S.FAILED):
                await self._steps.republish_latest(order)
            return
        if self._steps.overdue(order):
            await self._steps.time_out(order)
            return
        QUEUE_WAIT_SECONDS.labels("execution").observe((utcnow() - order.updated_at).total_seconds())
        # Only the durable intent on the agent's serial path; publishing it is the task's first step.
        submitted = await self._steps.record(order, S.SUBMITTED, attempt=max(order.attempt, 1))
        if submitted is not None:
            await self._tasks.spawn(self._announce_and_swap(submitted))

    async def _announce_and_swap(self, order: OrderRecord) -> None:
        await self._steps.announce(order)
        await self._swap(order)

    def _valid_until(self, order: OrderRecord) -> datetime:
        return min(order.deadline(self._steps.deadline_ms), order.updated_at + self._swap_window)

    async def _swap(self, order: OrderRecord) -> None:
        assert order.dex_used is not None
        quote = order.quotes[order.dex_used]
        if self._steps.overdue(order):
            await self._steps.time_out(order)
            return
        try:
            with SWAPS_IN_FLIGHT.track_inprogress(), EXECUTION_SECONDS.labels(quote.dex.value).time():
                result = await self._dex.execute(
                    quote,
                    order_id=order.id,
                    amount_in=order.amount_in,
                    min_amount_out=quote.amount_out * (1 - order.slippage),
                    attempt=order.attempt,
                    valid_until=self._valid_until(order),
                )
        except SlippageExceeded as exc:
            logger.info("order.slippage_exceeded", orderId=str(order.id), reason=exc.message)
            await self._steps.fail(order, exc)
            return
        except DexError as exc:
            logger.info("order.swap_failed", orderId=str(order.id), error=exc.code, retriable=exc.retriable)
            if self._steps.overdue(order):
                await self._steps.time_out(order)
            else:
                await self._steps.retry_or_fail(order, exc)
            return
        await self._confirm(order, result)

    async def _confirm(self, order: OrderRecord, result: SwapResult) -> None:
        assert order.dex_used is not None
        quoted = order.quotes[order.dex_used].amount_out
        logger.info("order.confirmed", orderId=str(order.id), dex=result.dex.value, tx_hash=result.tx_hash)
        await self._steps.advance(
            order,
            S.CONFIRMED,
            dex=result.dex,
            tx_hash=result.tx_hash,
            executed_price=result.executed_price,
            amount_out=result.amount_out,
            slippage_bps=realised_slippage_bps(quoted, result.amount_out),
        )

    async def sweep(self) -> None:
        """Finish what nobody is finishing: unpublished events, settled submissions, overdue orders, stalled
        steps."""
        deadline_ms = self._steps.deadline_ms
        for order, published_seq in await repository.unpublished(self._pool, grace_ms=UNPUBLISHED_GRACE_MS):
            logger.info("order.events_republished", orderId=str(order.id), after_seq=published_seq)
            await self._steps.publish_from(order, published_seq)
        for order in await repository.settled_submissions(
            self._pool,
            deadline_ms=deadline_ms,
            swap_window_ms=int(self._swap_window.total_seconds() * 1000),
            margin_ms=SETTLE_MARGIN_MS,
        ):
            await self._settle(order)
        for order in await repository.overdue_unsubmitted(self._pool, deadline_ms=deadline_ms):
            logger.info("order.deadline_passed", orderId=str(order.id), status=order.status.value)
            await self._steps.republish_latest(order)
            await self._steps.time_out(order)
        now = time.monotonic()
        self._redriven = {k: t for k, t in self._redriven.items() if now - t < self._stale_step_ms / 1000}
        for order in await repository.stalled_before_submission(self._pool, stale_ms=self._stale_step_ms):
            if (order.id, order.seq) in self._redriven:
                continue  # put back on `orders` already; a backlogged router gets one copy, not one per sweep
            self._redriven[(order.id, order.seq)] = now
            logger.info("order.redriven", orderId=str(order.id), status=order.status.value)
            await self._steps.republish_latest(order)
            await self._steps.redrive(order)

    async def _settle(self, order: OrderRecord) -> None:
        """A submission that can no longer land: the ledger decides. Its submitted event is published again
        first: the process that recorded it may have died before publishing it."""
        await self._steps.republish_latest(order)
        landed = await self._dex.ledger_entry(swap_key(order.id))
        logger.info("order.reconciled", orderId=str(order.id), landed=landed is not None)
        if landed is not None:
            await self._confirm(order, landed)
        elif self._steps.overdue(order):
            await self._steps.time_out(order)
        else:
            await self._steps.retry_or_fail(
                order, BlockhashExpired("the swap was not confirmed before its blockhash expired")
            )
