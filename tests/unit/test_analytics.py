"""The analytics report's summary: what it counts as finished, and what its fill rate is a rate of."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from analytics.report import Report, render
from shared.domain.events import StatusEvent
from shared.domain.status import OrderStatus

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def life(report: Report, *statuses: OrderStatus) -> None:
    order_id = uuid.uuid4()
    for seq, status in enumerate(statuses, start=1):
        report.add(
            StatusEvent(
                order_id=order_id, seq=seq, status=status, at=T0 + timedelta(seconds=seq), max_attempts=3
            )
        )


def test_a_cancelled_order_is_finished_but_not_in_the_fill_rate() -> None:
    report = Report()
    s = OrderStatus
    life(report, s.PENDING, s.ROUTING, s.BUILDING, s.SUBMITTED, s.CONFIRMED)
    life(report, s.PENDING, s.ROUTING, s.BUILDING, s.SUBMITTED, s.FAILED)
    life(report, s.PENDING, s.ROUTING, s.CANCELLED)
    life(report, s.PENDING, s.ROUTING)
    summary = report.summary()
    assert (summary["confirmed"], summary["failed"], summary["cancelled"], summary["open"]) == (1, 1, 1, 1)
    assert summary["fillRate"] == 0.5, "confirmed of the orders that reached the venue"
    assert summary["latencySeconds"]["max"] == 4.0
    assert "cancelled       1" in render(summary)
