"""Execution use cases: building → submitted → confirmed | failed | pending (retry), and the sweep that
finishes what a crash, a lost message or the deadline left open.

`accept` runs on the agent: for each order it waits for a free swap slot, and only then records the intent
(building → submitted, a conditional UPDATE) and starts the swap. The swap's clock therefore starts when the
swap does: waiting for a slot never eats its validity window. The swap carries `valid_until` = min(order
deadline, submitted + SWAP_WINDOW): the venue lands it only before then, so no swap can land after the
deadline, and once that instant has passed the venue's ledger says for good whether the submission landed.
The sweep settles such submissions from the ledger (confirmed) or as an expired transaction (retried, or
failed `timeout` past the deadline); that is also how orders submitted by a process that died are finished
after a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from executor import repository
from shared.domain.errors import BlockhashExpired, DexError, SlippageExceeded
from shared.domain.events import OrderPlaced
from shared.domain.order import OrderRecord, SwapResult
from shared.domain.status import OrderStatus
from shared.messaging.batches import job_context
from shared.messaging.outbox import Message
from shared.messaging.topics import ORDERS
from shared.runtime.clock import utcnow
from shared.runtime.logging import get_logger
from shared.runtime.metrics import EXECUTION_SECONDS, QUEUE_WAIT_SECONDS, SWAPS_IN_FLIGHT, SWEEP_ROWS_SKIPPED
from shared.runtime.tasks import TaskPool
from shared.store.db import exclusive, is_unreachable
from shared.store.orders import message
from shared.store.steps import OrderSteps
from shared.venue.protocol import Venue

logger = get_logger(__name__)
SWEEP_LOCK = 7_306_003  # pg advisory lock key: one executor sweeps at a time
SETTLE_MARGIN_MS = 1000  # past valid_until, clocks of the venue (Postgres) and of this process agree


@dataclass(frozen=True)
class ExecuteJob:
    """One message asking to swap an order."""

    order_id: UUID
    correlation_id: str | None
    job_id: str | None


class ExecutorService:
    def __init__(
        self,
        steps: OrderSteps,
        dex: Venue,
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

    async def accept(self, jobs: Sequence[ExecuteJob]) -> None:
        """Start the swaps of a batch of routed orders, each as soon as a slot is free. Returns once every
        swap's intent (submitted) is committed, so Kafka's offset passes only orders that Postgres shows
        submitted (or finished)."""
        orders = await self._steps.load_many([job.order_id for job in jobs])
        recorded: list[asyncio.Future[object]] = []
        for job in jobs:
            with job_context(job.order_id, job.correlation_id, job.job_id):
                order = orders.get(job.order_id)
                if order is None:
                    logger.warning("order.unknown", orderId=str(job.order_id))
                elif order.status is not OrderStatus.BUILDING:
                    # Redelivered (or overtaken by a retry): Postgres says where the order is. A submitted
                    # order's swap is either running or will be settled by the sweep: never a second driver.
                    continue
                elif self._steps.overdue(order):
                    recorded.append(asyncio.ensure_future(self._steps.time_out(order)))
                else:
                    done = asyncio.get_running_loop().create_future()
                    await self._tasks.spawn(self._submit_and_swap(order, done))  # waits for a free slot
                    recorded.append(done)
        for outcome in await asyncio.gather(*recorded, return_exceptions=True):
            if isinstance(outcome, Exception):  # the order stays in building: the sweep re-drives it
                logger.error("order.submit_failed", error=repr(outcome))

    async def _submit_and_swap(self, order: OrderRecord, recorded: asyncio.Future[None]) -> None:
        QUEUE_WAIT_SECONDS.labels("execution").observe((utcnow() - order.updated_at).total_seconds())
        try:
            if self._steps.overdue(order):
                await self._steps.time_out(order)
                submitted = None
            else:
                submitted = await self._steps.submit(order)
        except BaseException as exc:
            recorded.set_exception(exc)
            raise
        recorded.set_result(None)
        if submitted is not None:
            await self._swap(submitted)

    def _valid_until(self, order: OrderRecord) -> datetime:
        """The swap lands before this or never: the deadline, or the window from its submission."""
        return min(order.deadline(self._steps.deadline_ms), order.updated_at + self._swap_window)

    async def _swap(self, order: OrderRecord) -> None:
        assert order.dex_used is not None
        quote = order.quotes[order.dex_used]
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
        logger.info("order.confirmed", orderId=str(order.id), dex=result.dex.value, tx_hash=result.tx_hash)
        await self._steps.confirm(order, result)

    async def sweep(self) -> None:
        """Finish what nobody is finishing: settled submissions, overdue orders, stalled steps. One executor
        sweeps at a time (an advisory lock: replicas do not repeat each other's work, and a dead one's lock
        goes with its connection); one order that fails does not stop the others."""
        async with exclusive(self._pool, SWEEP_LOCK) as held:
            if held is not None:
                await self._sweep_once()

    async def _sweep_once(self) -> None:
        deadline_ms = self._steps.deadline_ms
        for order in await repository.settled_submissions(
            self._pool,
            deadline_ms=deadline_ms,
            swap_window_ms=int(self._swap_window.total_seconds() * 1000),
            margin_ms=SETTLE_MARGIN_MS,
        ):
            await _isolated("settle", order, self._settle)
        for order in await repository.overdue_unsubmitted(self._pool, deadline_ms=deadline_ms):
            logger.info("order.deadline_passed", orderId=str(order.id), status=order.status.value)
            await _isolated("time_out", order, self._steps.time_out)
        now = time.monotonic()
        self._redriven = {k: t for k, t in self._redriven.items() if now - t < self._stale_step_ms / 1000}
        stalled = [
            order
            for order in await repository.stalled_before_submission(self._pool, stale_ms=self._stale_step_ms)
            # a backlogged router gets one copy, not one per sweep
            if (order.id, order.seq) not in self._redriven
        ]
        redriven = []
        for order in stalled:
            self._redriven[(order.id, order.seq)] = now  # one that cannot be redriven waits as long
            try:
                redriven.append(redrive(order))
            except ValueError as exc:  # a value its message cannot carry (pydantic's ValidationError)
                _skipped("redrive", order, exc)
                continue
            logger.info("order.redriven", orderId=str(order.id), status=order.status.value)
        await self._steps.outbox.write(redriven)

    async def _settle(self, order: OrderRecord) -> None:
        """A submission that can no longer land: the venue settles it (a swap that landed, or a mark that this
        attempt never will), so a swap still being committed is seen rather than missed."""
        landed = await self._dex.settle(order.id, order.attempt)
        logger.info("order.reconciled", orderId=str(order.id), landed=landed is not None)
        if landed is not None:
            await self._confirm(order, landed)
        elif self._steps.overdue(order):
            await self._steps.time_out(order)
        else:
            await self._steps.retry_or_fail(
                order, BlockhashExpired("the swap was not confirmed before its blockhash expired")
            )


async def _isolated(
    step: str, order: OrderRecord, action: Callable[[OrderRecord], Awaitable[object]]
) -> None:
    """Run one order's sweep step; a failure is logged and counted, and the pass goes on with the next order.
    An unreachable Postgres ends the pass (every other order would fail the same way); a value Postgres
    refuses does not, though asyncpg may word it as an InterfaceError (`is_unreachable`)."""
    try:
        await action(order)
    except Exception as exc:
        if is_unreachable(exc):
            raise
        _skipped(step, order, exc)


def _skipped(step: str, order: OrderRecord, exc: Exception) -> None:
    SWEEP_ROWS_SKIPPED.labels("executor", step).inc()
    logger.error("sweep.order_failed", orderId=str(order.id), step=step, error=repr(exc), exc_info=exc)


def redrive(order: OrderRecord) -> Message:
    """Put an order that made no progress back on `orders`: the router resumes it from its current step
    (pending or routing); a step it repeats is a no-op if already done."""
    placed = OrderPlaced(
        order_id=order.id,
        token_in=order.token_in,
        token_out=order.token_out,
        amount_in=order.amount_in,
        slippage=order.slippage,
        created_at=order.created_at,
        correlation_id=order.correlation_id,
    )
    return message(ORDERS, order, placed)
