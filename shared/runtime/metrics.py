"""Every Prometheus metric of the engine, declared once. Each process exports its own: the HTTP
services on `/metrics`, the stream stages on their METRICS port. Labels are bounded: dex, status, stage,
error code, topic/group; never an orderId."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from shared.runtime.cpu_wait import CpuWaitCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WRITE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)

ORDERS_ACCEPTED = Counter("orders_accepted_total", "Orders accepted by ingress (answered 202).")
ORDERS_FINISHED = Counter("orders_finished_total", "Orders that reached a final status.", ["status"])
ORDER_RETRIES = Counter("order_retries_total", "Retries scheduled after a retriable failure.", ["error"])
ORDER_FAILURES = Counter("order_failures_total", "Orders failed, by error code.", ["error"])
SWEEP_ROWS_SKIPPED = Counter(
    "sweep_rows_skipped_total",
    "Orders a sweep pass skipped because their step failed (a value the store refused, a row that does not"
    " decode, a venue error); the pass went on with the rest. By stage and step (settle, time_out, redrive).",
    ["stage", "step"],
)

QUOTE_SECONDS = Histogram(
    "dex_quote_seconds", "Time to get a quote from a venue.", ["dex"], buckets=LATENCY_BUCKETS
)
EXECUTION_SECONDS = Histogram(
    "dex_execution_seconds", "Time for a swap on a venue.", ["dex"], buckets=LATENCY_BUCKETS
)
QUEUE_WAIT_SECONDS = Histogram(
    "order_queue_wait_seconds",
    "Wait before a stage took the order: routing (created → routed), execution (routed → executing).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
STAGE_BATCH_MESSAGES = Histogram(
    "stage_batch_messages",
    "Messages a stage's agent took in one batch.",
    ["stage"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
STAGE_BATCH_SECONDS = Histogram(
    "stage_batch_seconds",
    "Time a stage's agent spent on one batch (load, transitions, commit) before taking the next.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
STAGE_RECEIVE_DELAY_SECONDS = Histogram(
    "stage_receive_delay_seconds",
    "From a message's produce time (its Kafka timestamp) to its batch reaching the stage's agent.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
GROUP_COMMIT_WAIT_SECONDS = Histogram(
    "group_commit_wait_seconds",
    "From a write's submit to its answer (queued behind the running flush, then its own): what a caller of a"
    " group-committed writer waits.",
    ["writer"],
    buckets=WRITE_BUCKETS,
)
GROUP_COMMIT_FLUSH_SECONDS = Histogram(
    "group_commit_flush_seconds",
    "One flush of a group-committed writer: its statement, commit and the hand-over of its outbox rows.",
    ["writer"],
    buckets=WRITE_BUCKETS,
)
GROUP_COMMIT_BATCH_ITEMS = Histogram(
    "group_commit_batch_items",
    "Writes one flush of a group-committed writer carried.",
    ["writer"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
END_TO_END_SECONDS = Histogram(
    "order_end_to_end_seconds", "From creation to a final status.", ["status"], buckets=STAGE_BUCKETS
)

GC_SECONDS = Counter(
    "python_gc_seconds", "Time this process spent in the cyclic garbage collector.", ["generation"]
)

CONSUMER_LAG = Gauge(
    "kafka_consumer_lag_messages", "Messages not yet consumed, per topic and group.", ["topic", "group"]
)
STAGE_BACKLOG = Gauge(
    "stage_backlog_orders",
    "Open orders that still need a stage (ingress's last admission sample).",
    ["stage"],
)
ADMISSION_EXPECTED_WAIT = Gauge(
    "admission_expected_wait_seconds", "How long a new order would wait for the pipeline (admission's view)."
)
ADMISSION_REFUSALS = Counter(
    "admission_refusals_total",
    "POSTs admission refused (429 queue_full), by why: in_flight (this ingress at ADMISSION_MAX_IN_FLIGHT),"
    " expected_wait (the stages' backlog against their capacity), oldest_waiting (an order waited that"
    " long), publishing (the outbox behind).",
    ["reason"],
)
SWAPS_IN_FLIGHT = Gauge("executor_swaps_in_flight", "Swaps started and not yet settled in this process.")
WS_CONNECTIONS = Gauge("ws_connections_open", "Open WebSocket connections on this notifier.")
WS_EVENTS_DELIVERED = Counter("ws_events_delivered_total", "Status events sent to WebSocket clients.")
WS_DELIVERY_SECONDS = Histogram(
    "ws_delivery_seconds", "From an event's time to its send on a WebSocket.", buckets=LATENCY_BUCKETS
)
OUTBOX_ROUND_SECONDS = Histogram(
    "outbox_round_seconds",
    "One send round of this process's outbox (events sent, acknowledged and deleted, then commands): rows"
    " committed meanwhile wait for the next round.",
    buckets=LATENCY_BUCKETS,
)
OUTBOX_PARKED = Counter(
    "outbox_rows_parked_total",
    "Outbox rows Kafka refused for good (too large, invalid topic), parked instead of retried: alert on any.",
)
MESSAGES_REJECTED = Counter(
    "messages_rejected_total",
    "Messages a consumer could not read and skipped (quarantined where its stage owns the topic), by topic"
    " (its catalogue name) and reason: key, headers, value (not JSON), schema (JSON its model refuses).",
    ["topic", "reason"],
)
CLOCK_OFFSET = Gauge(
    "clock_offset_seconds", "How far Postgres's clock, which this process follows, is ahead of the host's."
)
CLOCK_SYNCS = Counter("clock_syncs_total", "Measurements of the offset to Postgres's clock.")
# process_cpu_wait_seconds_total: the time this process waited for a core (shared/runtime/cpu_wait.py).
REGISTRY.register(CpuWaitCollector())
