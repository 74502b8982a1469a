"""The rules of an order's steps: which event each step writes, when an order is overdue, and what a failure
leads to (a retry, a final failure, or a dead letter). Pure: OrderSteps (`shared/store/steps.py`) writes what
these return."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from shared.domain.errors import EngineError, OrderTimedOut
from shared.domain.events import Dex, Quote, StatusEvent, realised_slippage_bps
from shared.domain.order import OrderRecord, SwapResult
from shared.domain.status import OrderStatus
from shared.runtime.clock import utcnow

# Retry n (after attempt n failed) waits RETRY_DELAYS_S[n - 1]; the last one repeats if MAX_RETRIES > 4.
RETRY_DELAYS_S: tuple[float, ...] = (2.0, 4.0, 8.0)


def retry_index(failed_attempt: int) -> int:
    """Which of the fixed delays (and retry topics) follows the failure of `failed_attempt`."""
    return min(failed_attempt, len(RETRY_DELAYS_S)) - 1


class AfterFailure(Enum):
    FAIL = "fail"  # not retriable: failed now
    DEAD_LETTER = "dead_letter"  # retriable, but no attempt left: failed, with its errors on the DLQ
    RETRY = "retry"  # back to pending, routed again after a delay


@dataclass(frozen=True)
class OrderRules:
    max_attempts: int
    deadline_ms: int

    def overdue(self, order: OrderRecord) -> bool:
        return utcnow() >= order.deadline(self.deadline_ms)

    def after_failure(self, order: OrderRecord, error: EngineError) -> AfterFailure:
        if not error.retriable:
            return AfterFailure.FAIL
        if max(order.attempt, 1) >= self.max_attempts:
            return AfterFailure.DEAD_LETTER
        return AfterFailure.RETRY

    def start_routing(self, order: OrderRecord) -> StatusEvent:
        return order.next_event(
            OrderStatus.ROUTING, max_attempts=self.max_attempts, attempt=max(order.attempt, 1)
        )

    def route(self, order: OrderRecord, best: Quote, quotes: dict[Dex, Quote]) -> StatusEvent:
        """Routed to `best`, with every venue's quote."""
        return order.next_event(
            OrderStatus.BUILDING, max_attempts=self.max_attempts, dex=best.dex, quotes=quotes
        )

    def submit(self, order: OrderRecord) -> StatusEvent:
        return order.next_event(
            OrderStatus.SUBMITTED, max_attempts=self.max_attempts, attempt=max(order.attempt, 1)
        )

    def confirm(self, order: OrderRecord, swap: SwapResult) -> StatusEvent:
        """The swap landed: its venue, transaction and amounts, and the slippage against the routed quote."""
        quoted = order.quotes[order.dex_used or swap.dex].amount_out
        return order.next_event(
            OrderStatus.CONFIRMED,
            max_attempts=self.max_attempts,
            dex=swap.dex,
            tx_hash=swap.tx_hash,
            executed_price=swap.executed_price,
            amount_out=swap.amount_out,
            slippage_bps=realised_slippage_bps(quoted, swap.amount_out),
        )

    def fail(self, order: OrderRecord, error: EngineError) -> StatusEvent:
        return order.next_event(
            OrderStatus.FAILED, max_attempts=self.max_attempts, error=error.code, failure_reason=error.message
        )

    def time_out(self, order: OrderRecord) -> StatusEvent:
        return self.fail(order, OrderTimedOut())

    def retry(self, order: OrderRecord, error: EngineError, due: datetime) -> StatusEvent:
        """Back to pending for the next attempt, due at `due`, with the error that ended this one."""
        return order.next_event(
            OrderStatus.PENDING,
            max_attempts=self.max_attempts,
            attempt=max(order.attempt, 1) + 1,
            next_retry_at=due,
            error=error.code,
            failure_reason=error.message,
        )

    def cancel(self, order: OrderRecord) -> StatusEvent:
        return order.next_event(OrderStatus.CANCELLED, max_attempts=self.max_attempts)
