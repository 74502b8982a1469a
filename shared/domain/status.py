"""An order's statuses and the moves between them: the state machine every writer checks a step against."""

from __future__ import annotations

from enum import StrEnum

from shared.domain.errors import InvalidTransition


class OrderStatus(StrEnum):
    PENDING = "pending"
    ROUTING = "routing"
    BUILDING = "building"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OrderStatus.CONFIRMED, OrderStatus.FAILED, OrderStatus.CANCELLED})


# Back to PENDING is the retry loop: a retriable failure schedules the next attempt. CANCELLED is reachable
# only before SUBMITTED: the swap starts only once the (conditional) step to SUBMITTED has committed, so a
# cancel that commits first makes that step, and so the swap, never happen.
BEFORE_SUBMISSION = frozenset({OrderStatus.PENDING, OrderStatus.ROUTING, OrderStatus.BUILDING})
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.ROUTING, OrderStatus.FAILED, OrderStatus.CANCELLED}),
    OrderStatus.ROUTING: frozenset(
        {OrderStatus.BUILDING, OrderStatus.PENDING, OrderStatus.FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.BUILDING: frozenset(
        {OrderStatus.SUBMITTED, OrderStatus.PENDING, OrderStatus.FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.SUBMITTED: frozenset({OrderStatus.CONFIRMED, OrderStatus.PENDING, OrderStatus.FAILED}),
    OrderStatus.CONFIRMED: frozenset(),
    OrderStatus.FAILED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


def check_transition(current: OrderStatus, target: OrderStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current.value, target.value)
