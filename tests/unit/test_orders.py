from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from router.service import best_quote
from shared.domain.errors import InvalidTransition
from shared.domain.events import Dex, Quote, realised_slippage_bps
from shared.domain.order import OrderRecord
from shared.domain.status import BEFORE_SUBMISSION, TRANSITIONS, OrderStatus, check_transition
from shared.store.steps import retry_delay

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def make_order(**overrides: object) -> OrderRecord:
    order = OrderRecord(
        id=uuid.uuid4(),
        type="market",
        token_in="SOL",
        token_out="USDC",
        amount_in=Decimal("1.5"),
        slippage=Decimal("0.01"),
        status=OrderStatus.PENDING,
        seq=1,
        attempt=0,
        dex_used=None,
        quotes={},
        executed_price=None,
        amount_out=None,
        tx_hash=None,
        failure_reason=None,
        error=None,
        logs=[],
        correlation_id="c-1",
        client_order_id=None,
        created_at=NOW,
        updated_at=NOW,
    )
    return replace(order, **overrides)  # type: ignore[arg-type]


def test_the_happy_path_is_allowed_step_by_step() -> None:
    path = [
        OrderStatus.PENDING,
        OrderStatus.ROUTING,
        OrderStatus.BUILDING,
        OrderStatus.SUBMITTED,
        OrderStatus.CONFIRMED,
    ]
    for current, target in itertools.pairwise(path):
        check_transition(current, target)


@pytest.mark.parametrize("current", [s for s in OrderStatus if not s.terminal])
def test_any_open_order_can_fail(current: OrderStatus) -> None:
    check_transition(current, OrderStatus.FAILED)


@pytest.mark.parametrize(
    "current,target",
    [
        (OrderStatus.PENDING, OrderStatus.SUBMITTED),
        (OrderStatus.CONFIRMED, OrderStatus.FAILED),
        (OrderStatus.FAILED, OrderStatus.ROUTING),
        (OrderStatus.BUILDING, OrderStatus.ROUTING),
        (OrderStatus.CONFIRMED, OrderStatus.PENDING),
        (OrderStatus.FAILED, OrderStatus.PENDING),
        (OrderStatus.SUBMITTED, OrderStatus.CANCELLED),
        (OrderStatus.CONFIRMED, OrderStatus.CANCELLED),
        (OrderStatus.FAILED, OrderStatus.CANCELLED),
        (OrderStatus.CANCELLED, OrderStatus.PENDING),
    ],
)
def test_skips_and_reversals_are_refused(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, target)


@pytest.mark.parametrize("current", sorted(BEFORE_SUBMISSION))
def test_an_order_is_cancellable_until_it_is_submitted(current: OrderStatus) -> None:
    check_transition(current, OrderStatus.CANCELLED)


def test_terminal_states_lead_nowhere() -> None:
    assert all(not TRANSITIONS[s] for s in OrderStatus if s.terminal)


def test_the_next_event_is_numbered_seq_plus_one_and_carries_the_correlation() -> None:
    event = make_order(status=OrderStatus.ROUTING, seq=2).next_event(
        OrderStatus.BUILDING, max_attempts=3, dex=Dex.METEORA
    )
    assert (event.seq, event.status, event.dex, event.correlation_id) == (
        3,
        OrderStatus.BUILDING,
        Dex.METEORA,
        "c-1",
    )


def quote(dex: Dex, out: str) -> Quote:
    return Quote(dex=dex, price=Decimal(1), fee=Decimal(0), amount_out=Decimal(out))


def test_routing_picks_the_larger_net_amount() -> None:
    assert (
        best_quote({Dex.RAYDIUM: quote(Dex.RAYDIUM, "10"), Dex.METEORA: quote(Dex.METEORA, "10.1")}).dex
        is Dex.METEORA
    )
    assert (
        best_quote({Dex.RAYDIUM: quote(Dex.RAYDIUM, "10.2"), Dex.METEORA: quote(Dex.METEORA, "10.1")}).dex
        is Dex.RAYDIUM
    )


def test_a_tie_goes_to_the_first_venue() -> None:
    assert (
        best_quote({Dex.METEORA: quote(Dex.METEORA, "5"), Dex.RAYDIUM: quote(Dex.RAYDIUM, "5")}).dex
        is Dex.RAYDIUM
    )


def test_one_quote_is_enough_to_route() -> None:
    assert best_quote({Dex.METEORA: quote(Dex.METEORA, "5")}).dex is Dex.METEORA


@pytest.mark.parametrize("current", [OrderStatus.ROUTING, OrderStatus.BUILDING, OrderStatus.SUBMITTED])
def test_a_retriable_failure_sends_an_open_order_back_to_pending(current: OrderStatus) -> None:
    check_transition(current, OrderStatus.PENDING)


def test_retry_n_waits_2_4_8_seconds_on_its_own_topic() -> None:
    assert [(d, t.name) for d, t in map(retry_delay, (1, 2, 3, 4))] == [
        (2.0, "orders.retry.2s"),
        (4.0, "orders.retry.4s"),
        (8.0, "orders.retry.8s"),
        (8.0, "orders.retry.8s"),
    ]


def test_the_error_history_names_the_attempt_that_failed() -> None:
    def event(seq: int, status: OrderStatus, attempt: int, error: str | None = None) -> dict[str, object]:
        order = make_order(
            seq=seq - 1,
            status=OrderStatus.SUBMITTED if status is OrderStatus.PENDING else OrderStatus.PENDING,
        )
        return order.next_event(status, max_attempts=3, attempt=attempt, error=error).to_dict()

    logs = [
        event(4, OrderStatus.PENDING, 2, "venue_timeout"),
        event(8, OrderStatus.PENDING, 3, "blockhash_expired"),
    ]
    logs.append(
        make_order(seq=11, status=OrderStatus.SUBMITTED)
        .next_event(OrderStatus.FAILED, max_attempts=3, attempt=3, error="venue_timeout")
        .to_dict()
    )
    history = make_order(logs=logs).error_history()
    assert [(h.attempt, h.error) for h in history] == [
        (1, "venue_timeout"),
        (2, "blockhash_expired"),
        (3, "venue_timeout"),
    ]


def test_realised_slippage_is_in_bps_of_the_quote() -> None:
    assert realised_slippage_bps(Decimal("100"), Decimal("99.5")) == Decimal("50.00")
    assert realised_slippage_bps(Decimal("100"), Decimal("100.1")) == Decimal("-10.00")
