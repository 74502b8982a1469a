"""Admission control: a 202 is a promise that the order finishes within its deadline, so ingress takes an
order only if the pipeline can start it in time, and answers 429 `queue_full` with a `Retry-After` otherwise.

A background task samples, every ADMISSION_SAMPLE_INTERVAL_MS, from Postgres:
- the open orders per stage (pending/routing wait for a router, and every open order for an executor);
- each stage's capacity, from the heartbeats its processes write (`stage_members`: slots, job time, and how
  many jobs per second they really finish);
- the age of the oldest order still waiting for a stage (not yet submitted, not waiting for a retry);
- the age of the oldest outbox row (how far publishing to Kafka is behind).

A stage with `slots` jobs at once, each taking `service_s`, drains `slots / service_s` orders per second (or
what its processes measure finishing, if less, once its slots are full); a new order waits for the orders
ahead of it that hold no slot yet. The expected wait is the sum over the stages. The stage that is slowest
now is therefore the one that counts, whichever it is and however many processes it has. The expected wait
catches a burst before it queues; the oldest waiting order catches what slot arithmetic cannot see (the CPU,
not the slots, being the limit). Either over ADMISSION_MAX_WAIT_MS refuses. Orders admitted by this process
since the last sample count as waiting too.

Ingress itself can be the slowest stage: a process with ADMISSION_MAX_IN_FLIGHT POSTs in progress refuses
the next at once.

Publishing more than OUTBOX_RELAY_GRACE_MS + DEPENDENCY_TIMEOUT_MS behind refuses too: accepted orders would
not move. Before that, from ADMISSION_SHED_PUBLISH_LAG_MS behind, a share of new POSTs is refused, growing
with the lag from none to all: a saturated machine sheds load while its outbox is a second or two behind,
instead of accepting everything until it is five behind and then refusing everything until it catches up
(which left accepted orders 10-12 s end to end, docs/performance.md). Past the limit, why decides the
answer. The sampler then asks Kafka for its metadata: a broker that does not answer is an outage, 503
`service_unavailable`; one that answers means the senders are behind (a saturated machine), which is
overload, 429 `queue_full` with the time to catch up. No sample for as long (Postgres unreachable) is 503
too.

An admission that follows this process's outbox (`follow`) also refuses with 503 at once while that outbox
cannot publish (its Kafka producer failed and is being replaced, shared/messaging/outbox.py): the lag would
show it only seconds later, and every order taken meanwhile would wait for the new producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg

from shared.domain.errors import QueueFull, ServiceUnavailable
from shared.messaging.outbox import SENDABLE, Outbox
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger
from shared.runtime.metrics import ADMISSION_EXPECTED_WAIT, ADMISSION_REFUSALS, STAGE_BACKLOG
from shared.runtime.tasks import cancel_and_wait, essential
from shared.store.db import FAILED
from shared.store.orders import OPEN_ORDER_SQL

logger = get_logger(__name__)

MEMBER_TTL_S = 5.0  # a stage process silent this long is gone
# A measured finish rate below this is a decayed average of a stage that finished nothing lately, not a
# drain rate: dividing by it gave waits of 1e26 s (and a Retry-After past 64 bits).
MIN_MEASURED_RATE = 0.05
MAX_RETRY_AFTER_S = 3600
KAFKA_PROBE_TIMEOUT_S = 1.0  # a live broker answers metadata in milliseconds, even on a saturated machine


@dataclass(frozen=True)
class Stage:
    """What one stage can do now (summed over its live processes)."""

    name: str
    slots: int
    service_s: float  # how long one job takes
    measured_rate: float  # jobs per second its processes finished lately (0: unknown or idle)

    def wait_s(self, waiting: int) -> float:
        """Expected wait for a slot behind `waiting` orders (those in service included)."""
        queued = waiting - self.slots
        if queued <= 0:
            return 0.0
        rate = self.slots / max(self.service_s, 0.001)
        if self.measured_rate >= MIN_MEASURED_RATE:
            rate = min(rate, self.measured_rate)
        return queued / rate


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic
    routing: int  # open orders that still need the router (pending, routing)
    open: int  # open orders: every one still needs the executor
    router: Stage
    executor: Stage
    oldest_waiting_s: float
    outbox_lag_s: float
    kafka_answers: bool = True  # asked only when publishing is behind (past the shedding lag)

    def expected_wait_s(self, admitted_since: int) -> float:
        return self.router.wait_s(self.routing + admitted_since) + self.executor.wait_s(
            self.open + admitted_since
        )


SAMPLE_SQL = f"""
SELECT
    count(*) FILTER (WHERE status IN ('pending', 'routing')) AS routing,
    count(*) AS open,
    COALESCE(extract(epoch FROM clock_timestamp() - min(created_at) FILTER (
        WHERE status IN ('pending', 'routing', 'building') AND attempt <= 1)), 0)::float8 AS oldest_waiting_s,
    -- the oldest row is the first by id (ids are taken in commit order, near enough): one index probe
    -- (parked rows, which wait for an operator, are not lag: shared/messaging/outbox.py)
    COALESCE((SELECT extract(epoch FROM clock_timestamp() - created_at) FROM outbox WHERE {SENDABLE}
              ORDER BY id LIMIT 1), 0)::float8 AS outbox_lag_s
FROM orders WHERE {OPEN_ORDER_SQL}
"""

MEMBERS_SQL = """
SELECT stage, sum(slots)::int AS slots, sum(service_ms * slots) / NULLIF(sum(slots), 0) AS service_ms,
       sum(rate)::float8 AS rate
FROM stage_members WHERE updated_at > clock_timestamp() - make_interval(secs => $1)
GROUP BY stage
"""


class Admission:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        kafka_probe: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._pool = pool
        self._kafka_probe = kafka_probe
        self._interval_s = settings.admission_sample_interval_ms / 1000
        self._timeout_s = settings.dependency_timeout_ms / 1000
        self._max_wait_s = settings.admission_max_wait_ms / 1000
        self._max_outbox_lag_s = (settings.outbox_relay_grace_ms + settings.dependency_timeout_ms) / 1000
        self._shed_outbox_lag_s = min(settings.admission_shed_publish_lag_ms / 1000, self._max_outbox_lag_s)
        self._draw = random.Random().random  # which POSTs a shed refuses
        # Until a stage's processes say otherwise: one process at its configured slots, its worst job time.
        self._assumed = {
            "router": Stage("router", settings.router_concurrency, settings.quote_timeout_ms / 1000, 0.0),
            "executor": Stage("executor", settings.queue_concurrency, settings.swap_window_ms / 1000, 0.0),
        }
        self._max_in_flight = settings.admission_max_in_flight
        self._in_flight = 0
        self._sample: Sample | None = None
        self._error = "not sampled yet"
        self._admitted_since = 0
        self._task: asyncio.Task[None] | None = None
        self._outbox: Outbox | None = None

    def follow(self, outbox: Outbox) -> None:
        """Refuse new orders (503) while `outbox` cannot publish, and probe Kafka through its producer,
        whichever that is now (a replaced producer's connections are closed)."""
        self._outbox = outbox
        self._kafka_probe = outbox.kafka_answers

    async def start(self) -> None:
        """Take a first sample (so the first request has one), then keep sampling in the background."""
        with contextlib.suppress(*FAILED):
            await self.sample_once()
        self._task = essential(asyncio.create_task(self._run(), name="admission-sampler"))

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    @contextlib.contextmanager
    def in_progress(self) -> Iterator[None]:
        """One POST being handled by this process. Past ADMISSION_MAX_IN_FLIGHT a new one is refused at once
        (429, before any Redis or Postgres call): when ingress itself is the slowest stage, its queue stays
        short and the refusal fast."""
        if self._in_flight >= self._max_in_flight:
            ADMISSION_REFUSALS.labels("in_flight").inc()
            raise QueueFull(f"this ingress has {self._in_flight} orders in progress", retry_after=1)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def check(self) -> None:
        """Raise ServiceUnavailable if the pipeline cannot be measured or is not publishing, QueueFull if a
        new order could not start in time; else count the order as admitted."""
        self.precheck(shed=False)
        self._admitted_since += 1

    def precheck(self, *, shed: bool = True) -> None:
        """`check` without counting the order: what a POST asks first, before it costs a Redis call or a
        body's parsing, so that under overload a refusal is the cheapest answer the ingress gives. Only this
        first question sheds a share of the load (`check` asking again would refuse that share twice)."""
        if self._outbox is not None and not self._outbox.publishing:
            raise ServiceUnavailable("orders are not being published: this ingress's Kafka producer failed")
        sample = self._sample
        if sample is None or time.monotonic() - sample.at > self._interval_s + self._timeout_s:
            raise ServiceUnavailable(f"the order pipeline cannot be measured ({self._error})")
        if sample.outbox_lag_s > self._max_outbox_lag_s:
            if not sample.kafka_answers:
                raise ServiceUnavailable(
                    f"orders are not reaching Kafka ({sample.outbox_lag_s:.0f} s behind)"
                )
            behind_s = sample.outbox_lag_s - self._max_outbox_lag_s
            ADMISSION_REFUSALS.labels("publishing").inc()
            raise QueueFull(
                f"publishing to Kafka is {sample.outbox_lag_s:.1f} s behind: the engine is saturated",
                retry_after=min(math.ceil(behind_s), MAX_RETRY_AFTER_S),
            )
        # Only an engine that is behind sheds: with Kafka away it is an outage, which the rule above answers
        # (503) once the relay's grace is over.
        if shed and sample.kafka_answers and sample.outbox_lag_s > self._shed_outbox_lag_s:
            # lag <= the limit here (refused above otherwise), and lag > shed: the span is never 0
            share = (sample.outbox_lag_s - self._shed_outbox_lag_s) / (
                self._max_outbox_lag_s - self._shed_outbox_lag_s
            )
            if self._draw() < share:
                ADMISSION_REFUSALS.labels("publishing").inc()
                raise QueueFull(
                    f"publishing to Kafka is {sample.outbox_lag_s:.1f} s behind: the engine sheds load",
                    retry_after=max(1, math.ceil(sample.outbox_lag_s - self._shed_outbox_lag_s)),
                )
        expected_s = sample.expected_wait_s(self._admitted_since + 1)
        wait_s = max(expected_s, sample.oldest_waiting_s)
        if wait_s > self._max_wait_s:
            ADMISSION_REFUSALS.labels("expected_wait" if expected_s >= wait_s else "oldest_waiting").inc()
            raise QueueFull(
                f"a new order would wait {wait_s:.1f} s for the pipeline (limit {self._max_wait_s:.0f} s)",
                retry_after=min(math.ceil(wait_s - self._max_wait_s), MAX_RETRY_AFTER_S),
            )

    async def sample_once(self) -> Sample:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(SAMPLE_SQL)
            members = await conn.fetch(MEMBERS_SQL, MEMBER_TTL_S)
        stages = dict(self._assumed)
        for member in members:
            if member["stage"] in stages and member["slots"]:
                stages[member["stage"]] = Stage(
                    member["stage"], member["slots"], member["service_ms"] / 1000, member["rate"]
                )
                self._assumed[member["stage"]] = stages[
                    member["stage"]
                ]  # a stage that vanishes keeps its last
        sample = Sample(
            at=time.monotonic(),
            routing=row["routing"],
            open=row["open"],
            router=stages["router"],
            executor=stages["executor"],
            oldest_waiting_s=row["oldest_waiting_s"],
            outbox_lag_s=row["outbox_lag_s"],
            kafka_answers=row["outbox_lag_s"] <= self._shed_outbox_lag_s or await self._kafka_answers(),
        )
        self._sample, self._admitted_since = sample, 0
        STAGE_BACKLOG.labels("router").set(sample.routing)
        STAGE_BACKLOG.labels("executor").set(sample.open)
        ADMISSION_EXPECTED_WAIT.set(max(sample.expected_wait_s(0), sample.oldest_waiting_s))
        return sample

    async def _kafka_answers(self) -> bool:
        if self._kafka_probe is None:
            return False
        try:
            await asyncio.wait_for(self._kafka_probe(), KAFKA_PROBE_TIMEOUT_S)
        except Exception:  # any failure to answer is "not answering"
            return False
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await asyncio.wait_for(self.sample_once(), self._timeout_s)
            except FAILED as exc:
                self._error = type(exc).__name__
                logger.warning("admission.sample_failed", error=repr(exc))
