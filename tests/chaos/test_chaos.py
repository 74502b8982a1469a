"""The chaos suite: 500 orders at ~50/s from clients that retry and reconnect as integrators do, one fault
injected mid-run (a SIGKILLed service or relay, the Kafka broker killed, Postgres crashed or stalled, Redis
killed) and healed a moment later, then the offline checker over what was recorded (tests/chaos/checker.py).
As under `make run`'s supervisor, a service that exits meanwhile is started again.

The session ends with the table of every scenario (tests/chaos/conftest.py); the bar is zero in every
violation column."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from shared.messaging.outbox import RELAY_LOCK
from shared.runtime.config import Settings
from tests.chaos.checker import RESULTS, Findings, check
from tests.chaos.history import Clients, History, record_outcome
from tests.fixtures.execution import wait_terminal
from tests.fixtures.orders import fetch
from tests.fixtures.stack import Stack, running_stack, wait_for
from tests.fixtures.throwaway import CuttableLink, ThrowawayKafka, ThrowawayRedis

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

ORDERS = 500
RATE = 50.0
FAULT_AFTER_S = 4.0  # into the load: orders are at every stage by then
DOWN_FOR_S = 1.0  # what a supervisor's first restart takes
SUPERVISE_EVERY_S = 0.5

CHAOS = {
    "RATE_LIMIT": "0",
    "MOCK_SEED": "chaos",
    "MOCK_QUOTE_TRANSIENT_ERROR_RATE": "0.05",
    "MOCK_SWAP_TRANSIENT_ERROR_RATE": "0.05",
    # Slow enough that a fault finds orders quoting (~10) and swapping (~75) at 50/s.
    "MOCK_QUOTE_LATENCY_MIN_MS": "100",
    "MOCK_QUOTE_LATENCY_MAX_MS": "300",
    "MOCK_EXECUTION_LATENCY_MIN_MS": "1000",
    "MOCK_EXECUTION_LATENCY_MAX_MS": "2000",
    "SWEEP_INTERVAL_MS": "250",
    "STALE_STEP_MS": "2000",
    "QUEUE_CONCURRENCY": "500",
}


@dataclass
class Fault:
    """What breaks and how it heals; `env` points the stack at anything the fault brings of its own, and
    `prepare` readies the running stack for it."""

    inject: Callable[[Stack], Awaitable[None]]
    heal: Callable[[Stack], Awaitable[None]]
    env: dict[str, str]
    prepare: Callable[[Stack], Awaitable[None]] | None = None
    down_for_s: float = DOWN_FOR_S
    # Given, the run's clients are added to it before the load starts: a fault that is itself a load (a
    # burst of POSTs) places its orders through them, so that they are recorded and checked like the rest.
    clients: list[Clients] | None = None


def sigkill(name: str, **env: str) -> Fault:
    """The service dies at once; the supervisor (below) starts it again."""

    async def inject(stack: Stack) -> None:
        stack.processes[name].kill()

    async def heal(_: Stack) -> None:
        pass

    return Fault(inject, heal, env)


def kafka_broker(kafka: ThrowawayKafka) -> Fault:
    async def inject(_: Stack) -> None:
        kafka.kill()

    async def heal(_: Stack) -> None:
        await kafka.start()

    return Fault(inject, heal, {"KAFKA_BOOTSTRAP_SERVERS": kafka.servers})


def redis_server(redis: ThrowawayRedis) -> Fault:
    """Redis holds the rate limit (on here, so that its fail-open path is what the clients meet)."""

    async def inject(_: Stack) -> None:
        redis.kill()

    async def heal(_: Stack) -> None:
        await redis.start()

    return Fault(inject, heal, {"REDIS_URL": redis.url, "RATE_LIMIT": "1000000"})


def commit_stall(link: CuttableLink, stalled: tuple[str, ...], stall_s: float) -> Fault:
    """`stalled` services reach Postgres through `link`, which holds every byte for `stall_s`: statements
    sent just before commit late, and answers of those that committed arrive after the client's timeout
    (an ambiguous commit: the order exists, the client was told 503 and retries with its key). Swaps held
    past their window meet the other executor's sweep settling them."""
    host, port = Settings().database_address

    async def prepare(stack: Stack) -> None:
        proxied = stack.settings.database_url.replace(f"{host}:{port}", f"127.0.0.1:{link.port}")
        for name in stalled:
            stack.processes[name].stop()
            stack.processes[name].env["DATABASE_URL"] = proxied
            stack.processes[name].start()
        await stack.wait_ready()

    async def inject(_: Stack) -> None:
        link.stall()

    async def heal(_: Stack) -> None:
        link.resume()

    env = {"REPLICAS": "2", "SWAP_WINDOW_MS": "3000"}
    return Fault(inject, heal, env, prepare=prepare, down_for_s=stall_s)


RELAY_HOLDER = """
SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.objid = $1 AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def relay_holder() -> Fault:
    """Every row goes out through the relay (no writer sends its own), and the process holding the relay's
    lock is SIGKILLed in the middle of a pass: its rows must go out from the next holder."""

    async def inject(stack: Stack) -> None:
        by_pid = {proc.popen.pid: name for name, proc in stack.processes.items() if proc.popen is not None}

        async def holder() -> str | None:
            rows = await fetch(stack.settings, RELAY_HOLDER, RELAY_LOCK)
            names = [by_pid.get(int(r["application_name"].rsplit(" ", 1)[-1])) for r in rows]
            return next((name for name in names if name is not None), None)

        stack.processes[await wait_for(holder, timeout=10, interval=0.01, what="a relay pass")].kill()

    async def heal(_: Stack) -> None:
        pass

    env = {"OUTBOX_FAST_PATH": "false", "OUTBOX_RELAY_GRACE_MS": "0", "OUTBOX_POLL_INTERVAL_MS": "100"}
    return Fault(inject, heal, env)


def local_cluster() -> list[str]:
    """The version and name of the local PostgreSQL cluster that `scripts/infra.py` runs."""
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True)
    return listed.stdout.split()[:2]


async def pg_ctlcluster(action: str, *options: str, check: bool = True) -> None:
    command = ["pg_ctlcluster", *local_cluster(), action, *options]
    await asyncio.to_thread(subprocess.run, command, check=check)


def postgres_crash() -> Fault:
    """The shared cluster stops as in a crash (immediate: no checkpoint, crash recovery at the start)."""

    async def inject(_: Stack) -> None:
        await pg_ctlcluster("stop", "-m", "immediate")

    async def heal(_: Stack) -> None:
        await pg_ctlcluster("start")

    return Fault(inject, heal, {})


@asynccontextmanager
async def supervised(stack: Stack, restarted: list[str]) -> AsyncIterator[None]:
    """Start again, after DOWN_FOR_S, any service that exits, as supervisord does under `make run`."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(SUPERVISE_EVERY_S)
            for name, proc in stack.processes.items():
                if proc.popen is not None and proc.popen.poll() is not None and name != "proxy":
                    await asyncio.sleep(DOWN_FOR_S)
                    restarted.append(name)
                    proc.start()

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


async def run_scenario(scenario: str, fault: Fault) -> Findings:
    async with running_stack(**{**CHAOS, **fault.env}) as stack:
        history = History(scenario)
        if fault.prepare is not None:
            await fault.prepare(stack)
        async with supervised(stack, history.restarted):
            clients = Clients(stack, history)
            if fault.clients is not None:
                fault.clients.append(clients)
            load = asyncio.create_task(clients.run(ORDERS, RATE))
            await asyncio.sleep(FAULT_AFTER_S)
            history.fault_at = time.time()
            await fault.inject(stack)
            await asyncio.sleep(fault.down_for_s)
            await fault.heal(stack)
            await load
            accepted = [order_id for post in history.posts for order_id in post.order_ids]
            await wait_terminal(stack, accepted, timeout=120)
        await record_outcome(stack, history)
    findings = check(history)
    RESULTS.append(findings)
    return findings


def assert_no_violation(findings: Findings) -> None:
    assert findings.accepted >= ORDERS * 0.99, f"retrying clients get ~every order in: {findings.details()}"
    assert findings.violations == 0, findings.details()


@pytest.mark.parametrize(
    ("scenario", "victim", "env"),
    [
        ("router", "router", {}),
        ("executor", "executor", {}),
        ("notifier", "notifier", {}),
        ("ingress (1 of 2)", "ingress-2", {"REPLICAS": "2"}),
    ],
    ids=["router", "executor", "notifier", "ingress-one-of-two"],
)
async def test_a_sigkilled_service_breaks_no_invariant(
    infrastructure: object, scenario: str, victim: str, env: dict[str, str]
) -> None:
    assert_no_violation(await run_scenario(scenario, sigkill(victim, **env)))


async def test_the_relay_killed_mid_pass_breaks_no_invariant(infrastructure: object) -> None:
    assert_no_violation(await run_scenario("relay (lock holder)", relay_holder()))


async def test_the_kafka_broker_killed_breaks_no_invariant(infrastructure: object) -> None:
    kafka = ThrowawayKafka()
    await kafka.start()
    try:
        assert_no_violation(await run_scenario("kafka broker", kafka_broker(kafka)))
    finally:
        kafka.remove()


async def test_redis_killed_breaks_no_invariant(infrastructure: object) -> None:
    redis = ThrowawayRedis()
    await redis.start()
    try:
        assert_no_violation(await run_scenario("redis", redis_server(redis)))
    finally:
        redis.stop()


async def test_postgres_answers_held_past_the_clients_timeout_break_no_invariant(
    infrastructure: object,
) -> None:
    """Holes 1 and 2: an ambiguous commit never makes a second order for a key, and a swap whose commit
    comes late is settled once, as the venue has it."""
    link = CuttableLink(*Settings().database_address)
    await link.start()
    try:
        fault = commit_stall(link, ("ingress", "executor"), stall_s=6.0)
        assert_no_violation(await run_scenario("pg answers held 6 s", fault))
    finally:
        await link.cut()


async def test_postgres_crashing_breaks_no_invariant(infrastructure: object) -> None:
    try:
        assert_no_violation(await run_scenario("postgres", postgres_crash()))
    finally:  # whatever happened, the rest of the session needs its Postgres
        await pg_ctlcluster("start", check=False)
