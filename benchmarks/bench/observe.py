"""What the bench watches while a scenario runs, from the outside and cheaply (one sample a second): the
`Watch` that samples during a run, and the parsing of the services' Prometheus text it scrapes.

Each sample takes:
- CPU seconds, seconds spent waiting for a core, and peak RSS of each process group (read from /proc by
  benchmarks/bench/procs.py);
- the stages' Prometheus metrics (the engine's consumer-lag gauge, swaps in flight), from their /metrics;
- each consumer group's lag as Kafka itself knows it: log-end offsets minus the group's committed offsets,
  summed over the partitions of the topics the group consumes (benchmarks/bench/kafka_readings.py; the
  engine's own gauge is kept beside it).

Process groups: the stack's own processes (ingress, router, executor, notifier, the proxy nginx with its
worker), the backends of this run's Postgres database, and the shared Kafka broker and Redis server (whose
figures include whatever else the box runs against them at the time).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench import stats
from benchmarks.bench.kafka_readings import GroupLag
from benchmarks.bench.procs import Group


@dataclass
class Series:
    """The largest value a metric reached, summed over its label sets at each scrape, and per label set."""

    peak: float = 0.0
    by_labels: dict[str, float] = field(default_factory=dict)

    def add(self, samples: dict[str, float]) -> None:
        if samples:
            self.peak = max(self.peak, sum(samples.values()))
        for labels, value in samples.items():
            self.by_labels[labels] = max(self.by_labels.get(labels, 0.0), value)


def parse_metrics(text: str, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """{metric name: {label set as 'k=v,k=v': value}} for the named gauges and counters; unknown or
    malformed lines are skipped (metrics may gain labels while the engine changes)."""
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    with contextlib.suppress(ValueError):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in out:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    out[sample.name][labels] = float(sample.value)
    return out


def histogram(text: str, name: str) -> dict[str, float | None]:
    """count, mean and the bucket bounds holding p50 and p99 of one histogram in a /metrics text (summed
    over its label sets); None where it has no observations."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    with contextlib.suppress(ValueError):
        for family in text_string_to_metric_families(text):
            if family.name != name:
                continue
            for sample in family.samples:
                if sample.name == f"{name}_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name == f"{name}_sum":
                    total += sample.value
                elif sample.name == f"{name}_count":
                    count += sample.value
    cumulative = sorted(buckets.items())
    return {
        "count": count,
        "mean": round(total / count, 4) if count else None,
        "p50_le": stats.bucket_bound(cumulative, 0.50),
        "p99_le": stats.bucket_bound(cumulative, 0.99),
    }


LAG = "kafka_consumer_lag_messages"
IN_FLIGHT = "executor_swaps_in_flight"
REFUSALS = "admission_refusals_total"
BATCH_HISTOGRAMS = (
    "stage_receive_delay_seconds",
    "stage_batch_messages",
    "stage_batch_seconds",
    "outbox_round_seconds",
    "group_commit_wait_seconds",
    "group_commit_flush_seconds",
    "group_commit_batch_items",
)


@dataclass
class Watch:
    """Samples the groups and scrapes the services' metrics (ingress's and the stages') every `interval` s
    until stopped."""

    groups: list[Group]
    stages: dict[str, str]  # service name → its /metrics URL
    kafka: GroupLag | None = None
    interval: float = 1.0
    lag: dict[str, Series] = field(default_factory=dict)  # the engine's gauge, per stage
    group_lag: dict[str, Series] = field(default_factory=dict)  # from the broker, per consumer group
    in_flight: Series = field(default_factory=Series)
    scrape_errors: int = 0
    last_scrape: dict[str, str] = field(default_factory=dict)  # stage → its latest /metrics text
    _task: asyncio.Task[None] | None = None

    async def _scrape(self, session: aiohttp.ClientSession, stage: str, url: str) -> None:
        try:
            async with session.get(url) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            self.scrape_errors += 1
            return
        self.last_scrape[stage] = text
        found = parse_metrics(text, (LAG, IN_FLIGHT))
        if found[LAG]:  # ingress consumes nothing
            self.lag.setdefault(stage, Series()).add(found[LAG])
        if stage == "executor" or found[IN_FLIGHT]:
            self.in_flight.add(found[IN_FLIGHT])

    async def _kafka(self) -> None:
        if self.kafka is None:
            return
        try:
            sampled = await asyncio.wait_for(self.kafka.sample(), 5)
        except (KafkaError, TimeoutError, OSError, KeyError):  # a missed sample, not a failed bench
            self.scrape_errors += 1
            return
        for group, lag in sampled.items():
            self.group_lag.setdefault(group, Series()).add(lag)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                for group in self.groups:
                    group.sample()
                scrapes = (self._scrape(session, s, u) for s, u in self.stages.items())
                await asyncio.gather(self._kafka(), *scrapes)
                await asyncio.sleep(self.interval)

    async def start(self) -> None:
        for group in self.groups:
            group.sample()  # the baseline
        if self.kafka is not None:
            await self.kafka.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.kafka is not None:
            await self.kafka.stop()
        for group in self.groups:
            group.sample()

    def report(self) -> dict[str, object]:
        return {
            "processes": {g.name: g.report() for g in self.groups},
            "max_lag": {
                group: {"total": s.peak, "by_topic": s.by_labels} for group, s in self.group_lag.items()
            },
            "max_lag_engine_gauge": {
                stage: {"total": s.peak, "by_labels": s.by_labels} for stage, s in self.lag.items()
            },
            "peak_swaps_in_flight": self.in_flight.peak,
            "stage_batches": {
                stage: {name: histogram(text, name) for name in BATCH_HISTOGRAMS}
                for stage, text in self.last_scrape.items()
            },
            "admission_refusals": {
                labels.removeprefix("reason="): count
                for labels, count in parse_metrics(self.last_scrape.get("ingress", ""), (REFUSALS,))[
                    REFUSALS
                ].items()
                if count
            },
            "scrape_errors": self.scrape_errors,
        }
