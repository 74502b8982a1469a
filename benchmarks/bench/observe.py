"""What the bench watches while a scenario runs, from the outside and cheaply (one sample a second):

- CPU seconds, seconds spent waiting for a core, and peak RSS of each process group, from /proc/<pid>/stat,
  /proc/<pid>/task/*/schedstat and /proc/<pid>/status;
- the stages' Prometheus metrics (the engine's consumer-lag gauge, swaps in flight), from their /metrics;
- each consumer group's lag as Kafka itself knows it: log-end offsets minus the group's committed offsets,
  summed over the partitions of the topics the group consumes (the engine's own gauge is kept beside it);
- before and after each scenario, how fast the machine runs Python at that moment (`cpu_probe_ms`).

Process groups: the stack's own processes (ingress, router, executor, notifier, the proxy nginx with its
worker), the backends of this run's Postgres database, and the shared Kafka broker and Redis server (whose
figures include whatever else the box runs against them at the time).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench import stats
from shared.messaging.topics import GROUP_PREFIX
from shared.runtime.cpu_wait import run_queue_wait_ns

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
PROBE_SQUARES = 2_000_000


def cpu_probe_ms() -> float:
    """The CPU time of a fixed pure-Python loop, least of three tries, in ms: how fast this machine runs
    Python right now. The load average misses a host that gives its VMs slower cores: on the shared 2-core
    machine the same loop took 0.70 s and then 1.11 s a minute later, with nothing of ours running, and
    every process's CPU per order rose with it. Two runs' CPU figures compare only beside their probes."""
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        sum(i * i for i in range(PROBE_SQUARES))
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


@dataclass
class ProcSample:
    ticks: int  # utime + stime
    rss_kib: int  # resident: private anonymous memory for `private` groups, else VmRSS
    hwm_kib: int  # VmHWM: the process's own peak RSS
    wait_ns: int = 0  # summed over its threads: time ready to run, waiting for a core (the run queue)


def read_proc(pid: int, private: bool = False) -> ProcSample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    values: dict[str, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            values[key] = int(rest.split()[0])
    rss = values.get("RssAnon", 0) if private else values.get("VmRSS", 0)
    return ProcSample(ticks, rss, values.get("VmHWM", 0), run_queue_wait_ns(pid))


def children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def with_children(pid: int) -> list[int]:
    return [pid, *children(pid)]


def find(predicate: Callable[[str, str], bool]) -> list[int]:
    """Pids whose (comm, cmdline with spaces) satisfy `predicate`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if predicate(comm, cmdline):
            found.append(int(entry.name))
    return found


@dataclass
class Group:
    """Processes counted together. `pids` is re-evaluated every sample (backends come and go); a process
    first seen after the baseline counts all its CPU, one that was there counts its CPU since then.
    `own`: the process started with the scenario, so VmHWM is its peak; otherwise (a shared server) the
    peak is the largest sampled total. `private`: count anonymous memory only (Postgres backends share
    their buffers)."""

    name: str
    pids: Callable[[], list[int]]
    own: bool = False
    private: bool = False
    first: dict[int, ProcSample] = field(default_factory=dict)
    last: dict[int, ProcSample] = field(default_factory=dict)
    peak_kib: int = 0
    baseline_taken: bool = False

    def sample(self) -> None:
        total = 0
        for pid in self.pids():
            got = read_proc(pid, self.private)
            if got is None:
                continue
            if pid not in self.first:
                self.first[pid] = got if not self.baseline_taken else ProcSample(0, 0, 0)
            self.last[pid] = got
            total += got.rss_kib
        self.peak_kib = max(self.peak_kib, total)
        self.baseline_taken = True

    @property
    def cpu_s(self) -> float:
        return sum(s.ticks - self.first[pid].ticks for pid, s in self.last.items()) / TICK

    @property
    def cpu_wait_s(self) -> float:
        return sum(s.wait_ns - self.first[pid].wait_ns for pid, s in self.last.items()) / 1e9

    @property
    def peak_rss_mib(self) -> float:
        peak = self.peak_kib
        if self.own:
            peak = max(peak, sum(s.hwm_kib for s in self.last.values()))
        return peak / 1024

    def report(self) -> dict[str, float | int]:
        return {
            "cpu_s": round(self.cpu_s, 2),
            "cpu_wait_s": round(self.cpu_wait_s, 2),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "procs": len(self.last),
        }


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


class GroupLag:
    """Lag of every consumer group under `prefix`, from the broker: end offsets minus committed offsets,
    over every partition of each topic the group has committed on (a partition it has not committed on
    yet counts from 0, as auto.offset.reset=earliest would)."""

    def __init__(self, servers: list[str], prefix: str) -> None:
        self.prefix = prefix
        self.admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
        self.partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    def _all_partitions(self, topic: str) -> list[TopicPartition]:
        if topic not in self.partitions:
            found = self.consumer.partitions_for_topic(topic) or set()
            self.partitions[topic] = [TopicPartition(topic, p) for p in sorted(found)]
        return self.partitions[topic]

    async def sample(self) -> dict[str, dict[str, float]]:
        """{group (without the prefix): {'topic=<name>': lag}}."""
        out: dict[str, dict[str, float]] = {}
        groups = [g[0] for g in await self.admin.list_consumer_groups() if str(g[0]).startswith(self.prefix)]
        for group in groups:
            committed = await self.admin.list_consumer_group_offsets(group)
            topics = sorted({tp.topic for tp in committed})
            for topic in topics:
                if topic not in self.partitions:
                    await self.consumer.topics()  # refreshes metadata so the topic's partitions are known
            tps = [tp for topic in topics for tp in self._all_partitions(topic)] or list(committed)
            if not tps:
                continue
            ends = await self.consumer.end_offsets(tps)
            lag: dict[str, float] = {}
            for tp in tps:
                done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
                key = f"topic={tp.topic.removeprefix(self.prefix)}"
                lag[key] = lag.get(key, 0.0) + max(0, ends[tp] - done)
            out[str(group).removeprefix(self.prefix).removeprefix(GROUP_PREFIX)] = lag
        return out


async def published(servers: list[str], topic: str, partitions: int) -> int:
    """Records on `topic` (a run's own, so its offsets start at 0): the sum of its partitions' end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def sent_times(servers: list[str], topic: str, partitions: int) -> dict[str, float]:
    """When each key was first produced to `topic` (the record's CreateTime, set by the producer's send, in
    epoch seconds): read from the beginning to the end offsets as they stand now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        first: dict[str, float] = {}
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                for record in records:
                    if record.key is not None:
                        first.setdefault(record.key.decode(), record.timestamp / 1000)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return first
    finally:
        await consumer.stop()


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
