"""The analytics report's summary: what it counts as finished, and what its fill rate is a rate of."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

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


def test_a_message_that_cannot_be_read_is_counted_and_the_report_goes_on() -> None:
    """The example consumer of the public topic: one bad message must not end the report (it raised out of
    `build_report` before), and a naive timestamp must not meet an aware one in the latency arithmetic."""
    report = Report()
    order_id = uuid.uuid4()
    key = str(order_id).encode()
    pending = StatusEvent(order_id=order_id, seq=1, status=OrderStatus.PENDING, at=T0, max_attempts=3)
    confirmed = StatusEvent(
        order_id=order_id, seq=2, status=OrderStatus.CONFIRMED, at=T0 + timedelta(seconds=2), max_attempts=3
    )
    naive = confirmed.to_json().replace(b'00:00:02Z"', b'00:00:02"')
    before = (
        REGISTRY.get_sample_value("messages_rejected_total", {"topic": "order.status", "reason": "key"}) or 0
    )
    for offset, (k, v) in enumerate(
        [
            (key, pending.to_json()),
            (b"\xff\xfe", b"{}"),
            (key, b"not json"),
            (key, naive),
            (key, confirmed.to_json()),
        ]
    ):
        report.take(k, v, partition=0, offset=offset)
    summary = report.summary()
    assert (summary["orders"], summary["events"], summary["confirmed"]) == (1, 2, 1)
    assert summary["unreadableMessages"] == 3
    assert summary["latencySeconds"]["max"] == 2.0
    after = REGISTRY.get_sample_value("messages_rejected_total", {"topic": "order.status", "reason": "key"})
    assert after == before + 1
    assert "3 unreadable" in render(summary)
