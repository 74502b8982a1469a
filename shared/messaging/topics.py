"""The topic catalogue: every topic is declared here once, keyed by orderId, created by `ensure_topics`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.runtime.config import Settings

logger = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    retention_ms: int
    purpose: str


ORDERS = TopicSpec("orders", 7 * DAY_MS, "OrderPlaced: accepted orders, to be routed")
ORDERS_EXECUTE = TopicSpec("orders.execute", 7 * DAY_MS, "ExecuteOrder: routed orders, to be swapped")
ORDER_STATUS = TopicSpec("order.status", 7 * DAY_MS, "StatusEvent: every step of every order (public)")
ORDERS_DLQ = TopicSpec("orders.dlq", 30 * DAY_MS, "Orders that exhausted their retries, with errors")
# One topic per fixed delay: every message in one of them waits the same time, so they fall due in the order
# they were written and a consumer only ever waits for the head of a partition.
ORDERS_RETRY = (
    TopicSpec("orders.retry.2s", 1 * DAY_MS, "RetryOrder: orders to route again after 2 s"),
    TopicSpec("orders.retry.4s", 1 * DAY_MS, "RetryOrder: orders to route again after 4 s"),
    TopicSpec("orders.retry.8s", 1 * DAY_MS, "RetryOrder: orders to route again after 8 s"),
)


def quarantine_of(spec: TopicSpec) -> TopicSpec:
    """Where the stage that reads `spec` sets aside the messages it cannot read: raw copies, kept long
    enough for someone to look at them (shared/messaging/quarantine.py)."""
    return TopicSpec(
        f"{spec.name}.quarantine",
        30 * DAY_MS,
        f"Raw copies of the `{spec.name}` messages its reader could not decode, with where they came from",
    )


# The topics a stage reads under its consumer group (router, executor), each with its quarantine.
# `order.status` has none: the notifier reads it without a group, analytics consumers under groups of their
# own, and neither owns it (they count, log and skip what they cannot read).
QUARANTINES: dict[str, TopicSpec] = {
    spec.name: quarantine_of(spec) for spec in (ORDERS, ORDERS_EXECUTE, *ORDERS_RETRY)
}

CATALOGUE: tuple[TopicSpec, ...] = (
    ORDERS,
    ORDERS_EXECUTE,
    ORDER_STATUS,
    ORDERS_DLQ,
    *ORDERS_RETRY,
    *QUARANTINES.values(),
)

# The consumer groups, each the faust app id (router, executor) or group id (analytics) of its readers,
# prefixed with TOPIC_PREFIX like the topics. The notifier reads without a group: every notifier sees
# every event.
GROUP_PREFIX = "order-engine-"
ROUTER_GROUP = f"{GROUP_PREFIX}router"
EXECUTOR_GROUP = f"{GROUP_PREFIX}executor"
ANALYTICS_GROUP = f"{GROUP_PREFIX}analytics"


async def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] = CATALOGUE) -> list[str]:
    """Create the catalogue's topics that do not exist yet; returns the names created. Each is replicated
    as Settings says (TOPIC_REPLICATION_FACTOR, MIN_INSYNC_REPLICAS: 3 and 2 on a cluster of three), and a
    replica that fell out of sync may never become leader (it would drop acknowledged writes)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_servers, request_timeout_ms=settings.kafka_request_timeout_ms
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs={
                    "retention.ms": str(spec.retention_ms),
                    "min.insync.replicas": str(settings.min_insync_replicas),
                    "unclean.leader.election.enable": "false",
                },
            )
            for spec in specs
            if settings.topic(spec.name) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted, timeout_ms=settings.kafka_request_timeout_ms)
            except TopicAlreadyExistsError:
                logger.info("topics created concurrently by another process")
        return [t.name for t in wanted]
    finally:
        await admin.close()
