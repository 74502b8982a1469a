"""The bench's scenarios. Each starts its own stack (tests/fixtures/stack.py: a fresh database, topic
prefix and ports, every service a process behind the nginx proxy), offers its load, waits for the accepted
orders to finish, reads what became of every one of them, and tears the stack down.

The benchmark profile: RATE_LIMIT=0, LOG_LEVEL=warning, the default mock-DEX timings (quotes 100-300 ms,
swaps 2-3 s, not the tests' shortcuts), TOPIC_PARTITIONS=6.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from benchmarks.bench import stats
from benchmarks.bench.kafka_readings import GroupLag, published, sent_times
from benchmarks.bench.loadgen import Followed, Load, LoadPlan, Sent
from benchmarks.bench.observe import Watch
from benchmarks.bench.procs import Group, find, with_children
from shared.messaging.topics import ORDER_STATUS, ORDERS, ORDERS_EXECUTE
from tests.fixtures.orders import fetch, open_orders, order_body
from tests.fixtures.stack import Stack, running_stack

ORDER = orjson.dumps(order_body())

PROFILE = {
    "RATE_LIMIT": "0",
    "LOG_LEVEL": "warning",
    "MOCK_QUOTE_LATENCY_MIN_MS": "100",
    "MOCK_QUOTE_LATENCY_MAX_MS": "300",
    "MOCK_EXECUTION_LATENCY_MIN_MS": "2000",
    "MOCK_EXECUTION_LATENCY_MAX_MS": "3000",
    "TOPIC_PARTITIONS": "6",
    "ADMISSION_MAX_WAIT_MS": "10000",  # the production default (the test stacks raise it)
}


OUTBOX_DRAIN_S = 10.0  # longest wait, once every order is finished, for their last events to leave the outbox


@dataclass(frozen=True)
class Generator:
    """How the load is generated, the same for every scenario and for the self-check."""

    workers: int = 2
    connections: int = 512  # per worker
    http_timeout: float = 30.0
    ws_every: int = 20
    ws_max: int = 250  # per worker


@dataclass(frozen=True)
class LoadScenario:
    key: str
    title: str
    env: dict[str, str]
    rate: float
    count: int
    drain_s: float  # longest wait, after the last answer, for the accepted orders to finish


def stack_groups(stack: Stack) -> list[Group]:
    """The processes a scenario reports: the stack's own, this run's Postgres backends, Kafka, Redis."""
    groups: list[Group] = []
    for name, proc in stack.processes.items():
        if proc.popen is None:
            continue
        pid = proc.popen.pid
        if name == "proxy":
            groups.append(Group("nginx (proxy)", partial(with_children, pid), own=True))
        else:
            groups.append(Group(name, partial(list, (pid,)), own=True))
    database = f"order_engine_test_{stack.run_id}"
    groups.append(
        Group(
            "postgres (this db's backends)",
            lambda: find(lambda comm, cmd: cmd.startswith("postgres:") and f" {database} " in cmd),
            private=True,
        )
    )
    kafka = find(lambda comm, cmd: comm == "java" and "kafka.Kafka" in cmd)
    redis = find(lambda comm, cmd: comm == "redis-server")
    groups.append(Group("kafka (shared)", lambda: kafka))
    groups.append(Group("redis (shared)", lambda: redis))
    return groups


def stage_metrics(stack: Stack) -> dict[str, str]:
    s = stack.settings
    return {
        "ingress": f"http://127.0.0.1:{s.ingress_port}/metrics",
        "router": f"http://127.0.0.1:{s.router_metrics_port}/metrics",
        "executor": f"http://127.0.0.1:{s.executor_metrics_port}/metrics",
    }


async def until_none_left(
    count: Callable[[], Awaitable[int]], limit_s: float, interval_s: float
) -> tuple[float, int]:
    """Poll `count` every `interval_s` until it is 0, at most `limit_s`; returns (seconds waited, count
    left)."""
    started = time.monotonic()
    while True:
        left = await count()
        waited = time.monotonic() - started
        if left == 0 or waited >= limit_s:
            return waited, left
        await asyncio.sleep(interval_s)


async def outbox_rows(stack: Stack) -> int:
    return int((await fetch(stack.settings, "SELECT count(*) AS n FROM outbox"))[0]["n"])


async def order_rows(stack: Stack) -> dict[str, dict[str, Any]]:
    rows = await fetch(
        stack.settings,
        "SELECT id::text AS id, status::text AS status, seq, error, failure_reason,"
        " extract(epoch FROM created_at)::float8 AS created,"
        " extract(epoch FROM updated_at)::float8 AS updated FROM orders",
    )
    return {r["id"]: dict(r) for r in rows}


async def order_events(stack: Stack) -> dict[str, list[tuple[str, float]]]:
    """Every order's events as (status, at in epoch seconds), in seq order: what `stats.hops` splits."""
    rows = await fetch(
        stack.settings,
        "SELECT o.id::text AS id,"
        " array_agg(e ->> 'status' ORDER BY (e ->> 'seq')::int) AS statuses,"
        " array_agg(extract(epoch FROM (e ->> 'at')::timestamptz)::float8 ORDER BY (e ->> 'seq')::int) AS ats"
        " FROM orders o CROSS JOIN LATERAL jsonb_array_elements(o.logs) AS e GROUP BY o.id",
    )
    return {r["id"]: list(zip(r["statuses"], r["ats"], strict=True)) for r in rows}


def summarize_load(
    scenario: LoadScenario,
    start: float,
    sent: list[Sent],
    followed: list[Followed],
    rows: dict[str, dict[str, Any]],
    events: dict[str, list[tuple[str, float]]],
    sends: dict[str, dict[str, float]],
    generator_cpu_s: float,
    status_events: dict[str, int],
) -> dict[str, Any]:
    """The figures of one load scenario: rates, refusals, latencies, outcomes of every accepted order."""
    duration = scenario.count / scenario.rate
    accepted = [s for s in sent if s.order_id is not None]
    accepted_ids = [s.order_id for s in accepted if s.order_id is not None]
    answered = [s.latency for s in sent if s.latency is not None]
    lags = [s.lag for s in sent if s.lag is not None]
    terminal = [
        (rows[s.order_id], s.at)
        for s in accepted
        if s.order_id in rows and rows[s.order_id]["status"] in stats.TERMINAL
    ]
    e2e_db = [row["updated"] - at for row, at in terminal]
    e2e_confirmed = [row["updated"] - at for row, at in terminal if row["status"] == "confirmed"]
    confirmed_at = [row["updated"] for row, _ in terminal if row["status"] == "confirmed"]
    e2e_ws = [f.done - f.at for f in followed if f.done is not None]
    refused_429 = [s for s in sent if s.status == 429]
    hops = stats.hops(
        (
            s.at,
            events[s.order_id],
            {topic: sent[s.order_id] for topic, sent in sends.items() if s.order_id in sent},
        )
        for s in accepted
        if s.order_id in events
    )
    outcome_counts = stats.outcomes(accepted_ids, rows)
    return {
        "scenario": scenario.key,
        "title": scenario.title,
        "settings": scenario.env,
        "offered": {"count": scenario.count, "rate": scenario.rate, "duration_s": round(duration, 1)},
        "accepted": {"count": len(accepted), "rate": round(len(accepted) / duration, 1)},
        "refusals": stats.refusals((s.status, s.code) for s in sent),
        "refusals_429_with_retry_after": sum(s.retry_after for s in refused_429),
        "refusals_429": len(refused_429),
        "refusals_429_by_second": stats.by_second(s.at - start for s in refused_429),
        "http_ms": stats.summary(answered, 1000),
        "unanswered": len(sent) - len(answered),
        "generator": {
            "send_lag_ms": stats.summary(lags, 1000),
            "cpu_s": round(generator_cpu_s, 2),
        },
        "e2e_s": {
            "db_all_terminal": stats.summary(e2e_db),
            "db_confirmed": stats.summary(e2e_confirmed),
            "ws_sample": stats.summary(e2e_ws),
            "hops": {hop: stats.summary(durations) for hop, durations in hops.items()},
            "ws_followed": len(followed),
            "ws_without_terminal": {
                note: sum(1 for f in followed if f.done is None and f.note == note)
                for note in sorted({f.note for f in followed if f.done is None})
            },
        },
        "confirmed_per_s": (
            round(len(confirmed_at) / (max(confirmed_at) - start), 1) if confirmed_at else 0.0
        ),
        "outcomes": outcome_counts,
        "confirmed_pct": stats.share(outcome_counts.get("confirmed", 0), len(accepted_ids)),
        "orders_in_db_not_acknowledged": len(set(rows) - set(accepted_ids)),
        "status_events": status_events,
    }


async def run_load_scenario(scenario: LoadScenario, generator: Generator) -> dict[str, Any]:
    async with running_stack(**{**PROFILE, **scenario.env}) as stack:
        kafka = GroupLag(stack.settings.kafka_servers, stack.settings.topic_prefix)
        watch = Watch(stack_groups(stack), stage_metrics(stack), kafka)
        ws_timeout = scenario.count / scenario.rate + scenario.drain_s + generator.http_timeout
        plan = LoadPlan(
            host="127.0.0.1",
            port=stack.settings.port,
            body=ORDER,
            count=scenario.count,
            rate=scenario.rate,
            workers=generator.workers,
            connections=generator.connections,
            timeout=generator.http_timeout,
            ws_every=generator.ws_every,
            ws_max=generator.ws_max,
            ws_timeout=ws_timeout,
        )
        async with Load(plan) as load:
            await watch.start()
            sent = await load.requests()
            # every order of the run finished (every order in the database is this run's)
            drained_s, still_open = await until_none_left(partial(open_orders, stack), scenario.drain_s, 1.0)
            followed = await load.follows()
        await watch.stop()
        # an order's last event leaves the outbox just after its row commits; a parked row stays for good
        _, outbox_left = await until_none_left(partial(outbox_rows, stack), OUTBOX_DRAIN_S, 0.2)
        rows = await order_rows(stack)
        events = await order_events(stack)
        sends = {
            topic.name: await sent_times(
                stack.settings.kafka_servers,
                stack.settings.topic(topic.name),
                stack.settings.topic_partitions,
            )
            for topic in (ORDERS, ORDERS_EXECUTE)
        }
        on_status = await published(
            stack.settings.kafka_servers,
            stack.settings.topic(ORDER_STATUS.name),
            stack.settings.topic_partitions,
        )
    report = summarize_load(
        scenario,
        load.result.start,
        sent,
        followed,
        rows,
        events,
        sends,
        load.result.cpu_s,
        stats.status_events(on_status, (row["seq"] for row in rows.values()), outbox_left),
    )
    report["drain"] = {"waited_s": round(drained_s, 1), "still_open": still_open, "limit_s": scenario.drain_s}
    report.update(watch.report())
    report["cpu_ms_per_order"] = stats.cpu_ms_per_order(report["processes"], report["accepted"]["count"])
    return report
