"""Fill rate, venue share, failure reasons and latency percentiles from `order.status`.

Reads the topic from the beginning under its own consumer group (so it never disturbs the engine's
consumers), keeps only each order's latest event by seq (the stream may repeat an event; seq makes that
harmless), and stops once it has caught up with the end of every partition. A message it cannot read is
counted, logged and skipped (shared/messaging/quarantine.py): it owns no part of the topic to set it aside.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer

from shared.domain.events import StatusEvent
from shared.domain.status import OrderStatus
from shared.messaging.kafka import topic_partitions
from shared.messaging.quarantine import Rejected, read, reject
from shared.messaging.topics import ORDER_STATUS
from shared.runtime.config import Settings


@dataclass
class OrderFacts:
    created_at: datetime | None = None
    latest: StatusEvent | None = None


@dataclass
class Report:
    orders: dict[UUID, OrderFacts] = field(default_factory=dict)
    events: int = 0
    duplicates: int = 0
    unreadable: int = 0

    def take(self, key: bytes | None, value: bytes | None, *, partition: int, offset: int) -> None:
        """Add one message as it came off the topic; skip it, counted, if it cannot be read."""
        event = read(StatusEvent, key, value)
        if isinstance(event, Rejected):
            reject(ORDER_STATUS.name, partition, offset, event)
            self.unreadable += 1
            return
        self.add(event)

    def add(self, event: StatusEvent) -> None:
        self.events += 1
        facts = self.orders.setdefault(event.order_id, OrderFacts())
        if event.status is OrderStatus.PENDING:
            facts.created_at = event.at
        if facts.latest is not None and event.seq <= facts.latest.seq:
            self.duplicates += 1
            return
        facts.latest = event

    def summary(self) -> dict[str, Any]:
        finals = [f for f in self.orders.values() if f.latest is not None and f.latest.status.terminal]
        confirmed = [f for f in finals if f.latest and f.latest.status is OrderStatus.CONFIRMED]
        failed = [f for f in finals if f.latest and f.latest.status is OrderStatus.FAILED]
        cancelled = [f for f in finals if f.latest and f.latest.status is OrderStatus.CANCELLED]
        executed = len(confirmed) + len(failed)  # a cancelled order never reached the venue
        latencies = sorted(
            (f.latest.at - f.created_at).total_seconds()
            for f in finals
            if f.latest is not None and f.created_at is not None
        )
        return {
            "orders": len(self.orders),
            "events": self.events,
            "duplicateEvents": self.duplicates,
            "unreadableMessages": self.unreadable,
            "open": len(self.orders) - len(finals),
            "confirmed": len(confirmed),
            "failed": len(failed),
            "cancelled": len(cancelled),
            "fillRate": round(len(confirmed) / executed, 4) if executed else None,
            "dexShare": dict(Counter(f.latest.dex.value for f in confirmed if f.latest and f.latest.dex)),
            "failureReasons": dict(Counter((f.latest.error or "unknown") for f in failed if f.latest)),
            "latencySeconds": percentiles(latencies),
        }


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    if len(values) == 1:
        return {"p50": values[0], "p90": values[0], "p99": values[0], "max": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 3),
        "p90": round(cuts[89], 3),
        "p99": round(cuts[98], 3),
        "max": round(values[-1], 3),
    }


async def build_report(settings: Settings, group: str) -> Report:
    """Consume `order.status` from the beginning up to the end offsets seen at start."""
    topic = settings.topic(ORDER_STATUS.name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_servers,
        group_id=settings.topic(group),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    report = Report()
    try:
        partitions = set(await topic_partitions(consumer._client, topic))
        consumer.assign(list(partitions))
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(list(partitions))
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    report.take(
                        message.key, message.value, partition=message.partition, offset=message.offset
                    )
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        if partitions:
            await consumer.commit()  # the group's offsets show in lag monitoring like any consumer's
    finally:
        await consumer.stop()
    return report


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"orders          {summary['orders']} ({summary['open']} open, {summary['events']} events,"
        f" {summary['duplicateEvents']} repeated, {summary['unreadableMessages']} unreadable)",
        f"confirmed       {summary['confirmed']}",
        f"failed          {summary['failed']}",
        f"cancelled       {summary['cancelled']}",
        f"fill rate       {'-' if summary['fillRate'] is None else summary['fillRate']} (of orders executed)",
        "dex share       " + (", ".join(f"{k} {v}" for k, v in sorted(summary["dexShare"].items())) or "-"),
        "failure reasons "
        + (", ".join(f"{k} {v}" for k, v in sorted(summary["failureReasons"].items())) or "-"),
    ]
    lat = summary["latencySeconds"]
    lines.append("latency (s)     " + (", ".join(f"{k} {v}" for k, v in lat.items()) if lat else "-"))
    return "\n".join(lines)
