"""One typed Settings object, read from the environment (and `.env`) in one place.

Every variable of the README's configuration table is here with its documented default; among them the
settings a Kafka pipeline needs (bootstrap servers, topic layout, service ports) and the knobs that let
tests run the mock DEX without its real-world delays.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    env: Literal["development", "test", "production"] = "development"

    # The core settings.
    port: int = Field(3000, description="Public port: POST and WebSocket both answer here (the proxy).")
    redis_url: str = "redis://localhost:6379"
    database_url: str = "postgres://user:password@localhost:5432/order_engine"
    queue_concurrency: int = Field(10, ge=1, description="Swaps in flight per executor process.")
    max_retries: int = Field(3, ge=1, description="Attempts in total for a retriable failure.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    mock_seed: str | None = Field(None, description="Makes the mock DEX a pure function of (seed, order).")
    rate_limit: int = Field(
        30,
        ge=0,
        description="POSTs and DELETEs per minute per client (its API key's principal, else its IP);"
        " 0 disables.",
    )
    read_rate_limit: int | None = Field(
        None,
        ge=0,
        description="Reads (GETs, /ready, WebSocket handshakes) per minute per client; unset: 20 x RATE_LIMIT"
        " (so RATE_LIMIT=0 turns both off); 0 disables.",
    )
    api_keys: Path | None = Field(
        None,
        description="A file of `<principal> <sha256 hex of the key>` lines: requests then need"
        " `Authorization: Bearer <key>` and are scoped to the principal. Unset: anonymous, scoped by IP.",
    )
    ping_interval: int = Field(20000, ge=1, description="WebSocket ping interval, ms.")
    pong_timeout: int = Field(10000, ge=1, description="WebSocket pong timeout, ms.")

    # Kafka.
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Kafka brokers, comma-separated; with KAFKA_BROKERS=3 the local three by default"
        " (127.0.0.1:9092,9094,9096).",
    )
    kafka_brokers: int = Field(
        1,
        ge=1,
        description="Nodes of the local KRaft cluster that `make run` starts (each broker and controller):"
        " 1, or 3 for a replicated one. Topics follow it: replication factor 3, min.insync.replicas 2.",
    )
    topic_prefix: str = Field(
        "", description="Prepended to every topic and consumer group (tests isolate runs)."
    )
    topic_partitions: int = Field(6, ge=1)
    topic_replication_factor: int = Field(
        1, ge=1, description="Copies of every topic; unless set, as many as KAFKA_BROKERS, up to three."
    )
    min_insync_replicas: int = Field(
        1,
        ge=1,
        description="Copies a write (acks=all) must reach before it is acknowledged; unless set, 2 with three"
        " brokers, else 1.",
    )
    kafka_request_timeout_ms: int = Field(5000, ge=100, description="Producer and admin request timeout.")
    kafka_fetch_max_wait_ms: int = Field(
        25,
        ge=1,
        description="Longest fetch long-poll of a stage: how long a busy partition waits behind quiet ones.",
    )
    kafka_linger_ms: int = Field(
        2,
        ge=0,
        description="How long a producer gathers messages into one request: fewer, larger produce requests.",
    )
    kafka_metadata_max_age_ms: int = Field(
        10000, ge=1000, description="Metadata refresh: how soon a stage notices partitions that reappeared."
    )

    # Where each process listens. The proxy (nginx) owns PORT and forwards to these.
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 3001
    ingress_replicas: str = Field(
        "", description="Ports of further ingress processes on this host that the proxy spreads POSTs over."
    )
    notifier_host: str = "127.0.0.1"
    notifier_port: int = 3002
    notifier_replicas: str = Field(
        "", description="Ports of further notifier processes on this host behind the proxy."
    )
    router_metrics_port: int = Field(9101, description="Prometheus /metrics of the router process.")
    executor_metrics_port: int = Field(9102, description="Prometheus /metrics of the executor process.")
    metrics_host: str = "127.0.0.1"

    # Notifier. PING_INTERVAL and PONG_TIMEOUT (above) drive its heartbeat;
    # TRUSTED_PROXIES (ingress block) decides whose X-Forwarded-For names the client.
    ws_max_connections: int = Field(5000, ge=1, description="WebSocket connections per notifier process.")
    ws_max_per_order_ip: int = Field(
        3, ge=1, description="Concurrent WebSockets per orderId per client (principal, else IP)."
    )
    ws_max_per_ip: int = Field(
        1000,
        ge=0,
        description="Concurrent WebSockets per client (principal, else IP) across every notifier (Redis);"
        " 0: off.",
    )
    ws_send_queue: int = Field(256, ge=1, description="Events queued per WebSocket client before it is cut.")
    ws_write_buffer_bytes: int = Field(
        65536, ge=1024, description="Unsent bytes per WebSocket socket before sends wait (then time out)."
    )
    ws_send_timeout_ms: int = Field(5000, ge=1, description="A send blocked this long cuts a slow client.")
    notifier_fetch_min_bytes: int = Field(
        32768,
        ge=1,
        description="Bytes of `order.status` a notifier's fetch waits for (at most KAFKA_FETCH_MAX_WAIT_MS):"
        " under load one fetch carries many events instead of one.",
    )

    # Orders.
    order_deadline_ms: int = Field(30000, ge=1)
    order_logs_max: int = Field(50, ge=5, description="Events kept in an order's `logs` array.")

    # Ingress.
    redis_key_prefix: str = Field("oe:", description="Prepended to every Redis key (tests isolate runs).")
    idempotency_ttl_s: int = Field(300, ge=1, description="How long an Idempotency-Key is remembered.")
    trusted_proxies: str = Field(
        "127.0.0.1/32,::1/128",
        description="CIDRs whose X-Forwarded-For is believed (the local nginx); empty trusts no proxy.",
    )
    rate_limit_fail_open: bool = Field(
        True, description="When Redis is unreachable, admit requests without an Idempotency-Key."
    )
    admission_max_wait_ms: int = Field(
        10000,
        ge=0,
        description="Longest an accepted order may be expected to wait for a stage; past it POST is 429.",
    )
    admission_shed_publish_lag_ms: int = Field(
        2000,
        ge=0,
        description="Publishing to Kafka this far behind refuses a share of new POSTs (429), growing to all"
        " of them at OUTBOX_RELAY_GRACE_MS + DEPENDENCY_TIMEOUT_MS behind.",
    )
    admission_max_in_flight: int = Field(
        128, ge=1, description="POSTs one ingress process handles at once; past it POST is 429 at once."
    )
    admission_sample_interval_ms: int = Field(
        500,
        ge=10,
        description="How often ingress samples the open orders and the stages' capacity (the sample reads"
        " every open order's row: ~11 ms with 3,000 in flight).",
    )
    dependency_timeout_ms: int = Field(
        2000, ge=100, description="Bound on each Redis/Kafka/Postgres call on the request path."
    )
    max_body_bytes: int = Field(16384, ge=1, description="Largest accepted request body.")
    max_header_bytes: int = Field(8192, ge=256, description="Largest accepted request header block.")
    cors_origins: str = Field("", description="Comma-separated allowed origins; `*` refused in production.")
    outbox_poll_interval_ms: int = Field(
        500, ge=10, description="How often the relay looks for outbox rows nobody has published."
    )
    outbox_relay_grace_ms: int = Field(
        3000, ge=0, description="An outbox row this old was abandoned by its writer: the relay sends it."
    )
    outbox_fast_path: bool = Field(True, description="Writers publish their rows right after the commit.")
    outbox_batch_size: int = Field(1000, ge=1, description="Rows per relay pass.")
    outbox_queue_batches: int = Field(
        1000, ge=1, description="Committed batches waiting to be sent before writers wait (memory bound)."
    )

    @model_validator(mode="after")
    def _refuse_wildcard_cors_in_production(self) -> Settings:
        if self.env == "production" and "*" in self.cors_origin_list:
            raise ValueError("CORS_ORIGINS may not contain `*` when ENV=production")
        self.trusted_proxy_networks  # noqa: B018 (a malformed CIDR fails at start-up, not per request)
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def trusted_proxy_networks(self) -> list[IPv4Network | IPv6Network]:
        return [ip_network(c.strip(), strict=False) for c in self.trusted_proxies.split(",") if c.strip()]

    # Mock DEX timings (ms): quotes 100-300, swaps 2-3 s by default; tests set them to 0.
    mock_quote_latency_min_ms: int = Field(100, ge=0)
    mock_quote_latency_max_ms: int = Field(300, ge=0)
    mock_execution_latency_min_ms: int = Field(2000, ge=0)
    mock_execution_latency_max_ms: int = Field(3000, ge=0)
    # Mock DEX behaviour beyond timing: how far the price moves between quote and swap, and injected
    # failures (fractions 0..1, all off by default). Transient = timeouts, "blockhash expired"; permanent =
    # no pool, insufficient liquidity.
    mock_price_move_bps: int = Field(100, ge=0, description="Max price move between quote and swap, bps.")
    mock_quote_transient_error_rate: float = Field(0.0, ge=0, le=1)
    mock_quote_permanent_error_rate: float = Field(0.0, ge=0, le=1)
    mock_swap_transient_error_rate: float = Field(0.0, ge=0, le=1)
    mock_swap_permanent_error_rate: float = Field(0.0, ge=0, le=1)

    # Execution.
    quote_timeout_ms: int = Field(2000, ge=1, description="Longest wait for one venue's quote.")
    swap_window_ms: int = Field(
        5000, ge=1, description="A submitted swap lands within this (a blockhash's life) or never."
    )
    router_concurrency: int = Field(100, ge=1, description="Orders being quoted at once per router process.")
    sweep_interval_ms: int = Field(1000, ge=10, description="How often the executor sweeps stuck orders.")
    stage_batch_size: int = Field(500, ge=1, description="Kafka messages a stage takes at once.")
    stage_batch_wait_ms: int = Field(
        20, ge=1, description="How long a stage waits for its batch to fill before taking what it has."
    )
    heartbeat_interval_ms: int = Field(
        1000, ge=10, description="How often a stage tells Postgres its slots, load and speed."
    )
    stale_step_ms: int = Field(
        10000, ge=100, description="Routing/building/pending-retry this long without progress is re-driven."
    )
    shutdown_grace_ms: int = Field(15000, ge=0, description="SIGTERM: how long in-flight swaps may finish.")
    gc_threshold: int = Field(
        10000,
        ge=1,
        description="Allocations between young-generation garbage collections (CPython's default is 700).",
    )
    stage_nice: int = Field(
        3,
        ge=0,
        le=19,
        description="Niceness the router and executor add to themselves at start (and give their Postgres"
        " backends, when Postgres is on this machine and the OS allows it), and to their autogroups where"
        " each leads its own session (shared/runtime/priority.py): where they share cores with ingress,"
        " ingress's answers go first (the stages' work has seconds of slack). 0 turns it off.",
    )
    watchdog_stall_ms: int = Field(
        30000, ge=100, description="Unhealthy when messages wait but none was processed for this long."
    )

    @field_validator("mock_seed")
    @classmethod
    def _empty_seed_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("read_rate_limit", "api_keys", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def read_rate_limit_per_minute(self) -> int:
        """READ_RATE_LIMIT, else 20 x RATE_LIMIT: a client reads far more often than it places orders."""
        return self.read_rate_limit if self.read_rate_limit is not None else 20 * self.rate_limit

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _follow_the_kafka_cluster(self) -> Settings:
        """Replication and the bootstrap servers follow KAFKA_BROKERS, unless set themselves."""
        if self.kafka_brokers == 2:
            raise ValueError("KAFKA_BROKERS is 1 or 3+: a quorum of two controllers stops if either is lost")
        if "topic_replication_factor" not in self.model_fields_set:
            self.topic_replication_factor = replication_for(self.kafka_brokers)
        if "min_insync_replicas" not in self.model_fields_set:
            self.min_insync_replicas = min_insync_for(self.topic_replication_factor)
        if "kafka_bootstrap_servers" not in self.model_fields_set:
            self.kafka_bootstrap_servers = ",".join(local_kafka_servers(self.kafka_brokers))
        if self.min_insync_replicas > self.topic_replication_factor:
            raise ValueError("MIN_INSYNC_REPLICAS exceeds TOPIC_REPLICATION_FACTOR: no write could succeed")
        return self

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        if self.mock_quote_latency_min_ms > self.mock_quote_latency_max_ms:
            raise ValueError("MOCK_QUOTE_LATENCY_MIN_MS exceeds MOCK_QUOTE_LATENCY_MAX_MS")
        if self.mock_execution_latency_min_ms > self.mock_execution_latency_max_ms:
            raise ValueError("MOCK_EXECUTION_LATENCY_MIN_MS exceeds MOCK_EXECUTION_LATENCY_MAX_MS")
        if self.swap_window_ms <= self.mock_execution_latency_max_ms:
            raise ValueError("SWAP_WINDOW_MS must exceed MOCK_EXECUTION_LATENCY_MAX_MS (no swap could land)")
        return self

    def topic(self, name: str) -> str:
        """The full name of a catalogue topic (or consumer group) under this deployment's prefix."""
        return f"{self.topic_prefix}{name}"

    @property
    def ingress_replica_ports(self) -> list[int]:
        return [int(p) for p in self.ingress_replicas.split(",") if p.strip()]

    @property
    def notifier_replica_ports(self) -> list[int]:
        return [int(p) for p in self.notifier_replicas.split(",") if p.strip()]

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]

    @property
    def redis_address(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "localhost", parts.port or 6379

    @property
    def database_address(self) -> tuple[str, int]:
        parts = urlsplit(self.database_url)
        return parts.hostname or "localhost", parts.port or 5432


def replication_for(brokers: int) -> int:
    """Copies of each partition in a cluster of `brokers`: one on each broker, up to three."""
    return min(brokers, 3)


def min_insync_for(replication_factor: int) -> int:
    """Copies an acks=all write must reach: with three, two. One broker may then be lost with no
    acknowledged write lost and writes going on; losing a second stops writes rather than risk one."""
    return 2 if replication_factor >= 3 else 1


def local_kafka_servers(brokers: int) -> list[str]:
    """Where `scripts/infra.py up` starts a local cluster of `brokers`: 9092, 9094, ..., each node's
    controller on the port above its broker's."""
    return [f"127.0.0.1:{9092 + 2 * i}" for i in range(brokers)]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. Composition roots call this; library code takes Settings."""
    return Settings()
