"""The rules of an order's steps, and OrderSteps' retry, deadline and failure branches over an in-memory
writer: which event each step writes, and which messages go out with it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from shared.domain.errors import NoPool, OrderTimedOut, QuoteUnavailable, VenueTimeout
from shared.domain.events import Dex, Quote, RetryOrder, StatusEvent
from shared.domain.order import OrderRecord, SwapResult
from shared.domain.rules import RETRY_DELAYS_S, AfterFailure, OrderRules, retry_index
from shared.domain.status import OrderStatus
from shared.messaging.topics import ORDER_STATUS, ORDERS_RETRY
from shared.runtime.clock import utcnow
from shared.store.orders import Transition
from shared.store.steps import OrderSteps
from tests.unit.test_orders import make_order

RULES = OrderRules(max_attempts=3, deadline_ms=30_000)
QUOTE = Quote(dex=Dex.METEORA, price=Decimal("150"), fee=Decimal("0.002"), amount_out=Decimal("224.55"))


def test_a_misspelled_field_is_refused_not_dropped() -> None:
    with pytest.raises(TypeError, match="tx_hsh"):
        make_order().next_event(OrderStatus.ROUTING, max_attempts=3, tx_hsh="abc")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (NoPool("gone"), 1, AfterFailure.FAIL),
        (VenueTimeout("slow"), 1, AfterFailure.RETRY),
        (VenueTimeout("slow"), 2, AfterFailure.RETRY),
        (VenueTimeout("slow"), 3, AfterFailure.DEAD_LETTER),
        (QuoteUnavailable("none"), 0, AfterFailure.RETRY),  # a first attempt not yet numbered
    ],
)
def test_a_failure_leads_to_a_retry_only_while_retriable_with_attempts_left(
    error: Exception, attempt: int, expected: AfterFailure
) -> None:
    order = make_order(status=OrderStatus.SUBMITTED, seq=4, attempt=attempt)
    assert RULES.after_failure(order, error) is expected  # type: ignore[arg-type]


def test_the_retry_delays_repeat_the_last_one_past_the_table() -> None:
    assert [RETRY_DELAYS_S[retry_index(n)] for n in range(1, 6)] == [2.0, 4.0, 8.0, 8.0, 8.0]


def test_an_order_is_overdue_from_its_deadline_on() -> None:
    now = utcnow()
    assert not RULES.overdue(make_order(created_at=now - timedelta(milliseconds=29_000)))
    assert RULES.overdue(make_order(created_at=now - timedelta(milliseconds=30_000)))


def test_each_step_writes_its_own_fields() -> None:
    pending = make_order()
    routing = pending.advanced(RULES.start_routing(pending))
    assert (routing.status, routing.attempt, routing.seq) == (OrderStatus.ROUTING, 1, 2)
    event = RULES.route(routing, QUOTE, {Dex.METEORA: QUOTE})
    assert (event.status, event.dex, event.quotes) == (
        OrderStatus.BUILDING,
        Dex.METEORA,
        {Dex.METEORA: QUOTE},
    )
    building = routing.advanced(event)
    submitted = building.advanced(RULES.submit(building))
    swap = SwapResult(Dex.METEORA, "tx", Decimal("149.7"), Decimal("224.10"))
    confirmed = RULES.confirm(submitted, swap)
    assert (confirmed.status, confirmed.seq, confirmed.tx_hash, confirmed.amount_out) == (
        OrderStatus.CONFIRMED,
        5,
        "tx",
        Decimal("224.10"),
    )
    assert confirmed.slippage_bps == Decimal("20.04")  # (224.55 - 224.10) / 224.55, in bps


def test_a_time_out_fails_with_the_timeout_code() -> None:
    event = RULES.time_out(make_order(status=OrderStatus.BUILDING, seq=3, attempt=1))
    assert (event.status, event.error, event.failure_reason) == (OrderStatus.FAILED, "timeout", "timeout")


class Writer:
    """The group-commit writer, in memory: every step applies (as the conditional UPDATE would)."""

    def __init__(self) -> None:
        self.written: list[Transition] = []

    async def submit(self, transition: Transition) -> OrderRecord:
        self.written.append(transition)
        return transition.order.advanced(transition.event)


def steps_over(writer: Writer) -> OrderSteps:
    return OrderSteps(None, writer, None, RULES)  # type: ignore[arg-type]


async def test_a_retriable_failure_goes_back_to_pending_with_its_command_on_the_delay_topic() -> None:
    writer = Writer()
    order = make_order(status=OrderStatus.SUBMITTED, seq=4, attempt=2)
    before = utcnow()
    retried = await steps_over(writer).retry_or_fail(order, VenueTimeout("the venue did not answer"))
    assert retried is not None
    (written,) = writer.written
    event: StatusEvent = written.event
    assert (event.status, event.attempt, event.error) == (OrderStatus.PENDING, 3, "venue_timeout")
    assert event.next_retry_at is not None
    assert before + timedelta(seconds=4) <= event.next_retry_at <= utcnow() + timedelta(seconds=4)
    topics = [m.topic for m in written.messages]
    assert topics == [ORDER_STATUS, ORDERS_RETRY[1]]  # the second retry waits 4 s
    command = RetryOrder.from_json(written.messages[1].payload)
    assert (command.attempt, command.due_at, command.error) == (3, event.next_retry_at, "venue_timeout")


@pytest.mark.parametrize("error", [NoPool("gone"), OrderTimedOut()])
async def test_a_permanent_failure_fails_at_once_with_only_its_event(error: Any) -> None:
    writer = Writer()
    order = make_order(status=OrderStatus.ROUTING, seq=2, attempt=1)
    failed = await steps_over(writer).retry_or_fail(order, error)
    assert failed is not None and failed.status is OrderStatus.FAILED
    (written,) = writer.written
    assert [m.topic for m in written.messages] == [ORDER_STATUS]
    assert (written.event.error, failed.error) == (error.code, error.code)


async def test_a_cancel_is_refused_by_the_state_machine_once_submitted() -> None:
    writer = Writer()
    steps = steps_over(writer)
    assert (await steps.cancel(make_order(status=OrderStatus.BUILDING, seq=3))) is not None
    with pytest.raises(Exception, match="cannot move to cancelled"):
        await steps.cancel(replace(make_order(), status=OrderStatus.SUBMITTED, seq=4))
    assert len(writer.written) == 1
