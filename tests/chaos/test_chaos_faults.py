"""Chaos rows whose fault is inside a process that keeps running: its Kafka producer goes fatal mid-run
(OutOfOrderSequenceNumber; aiokafka's sender dies with it, and every later send fails the same way), or the
notifier's `order.status` consumer task dies. The fault comes from the victim's own Python
(tests/fixtures/faultinject), armed by a signal. The same load, the same checker and the same bar as
tests/chaos/test_chaos.py: zero violations. On top, each row checks that its fault took, and how the
process came through: a fatal producer is replaced in place (no restart, no parked row), a dead consumer
task ends its process, which the supervisor starts again."""

from __future__ import annotations

import pytest

from tests.chaos.test_chaos import Fault, assert_no_violation, run_scenario
from tests.fixtures.faultinject import inject, restart_hooked
from tests.fixtures.orders import fetch
from tests.fixtures.stack import Stack, log_events, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]


def in_process(victim: str, fault: str, took: str, *, parks_nothing: bool = False) -> Fault:
    """`victim` runs with `fault`, armed once by `inject`; healing waits until its log says `took` (the
    fault took: the row is not vacuous) and, with `parks_nothing`, checks that no outbox row was parked
    (while the stack runs: the scenario ends with it)."""

    async def prepare(stack: Stack) -> None:
        await restart_hooked(stack, victim, fault)

    async def signal(stack: Stack) -> None:
        inject(stack.processes[victim])

    async def heal(stack: Stack) -> None:
        await wait_for(
            lambda: log_events(stack, took, victim), timeout=30, interval=0.2, what=f"{victim}: {took}"
        )
        if parks_nothing:
            assert not await fetch(stack.settings, "SELECT id FROM outbox WHERE parked_at IS NOT NULL")

    return Fault(signal, heal, {}, prepare=prepare)


@pytest.mark.parametrize("victim", ["ingress", "router"])
async def test_a_fatal_producer_breaks_no_invariant(infrastructure: object, victim: str) -> None:
    fault = in_process(victim, "producer", "outbox.producer_replaced", parks_nothing=True)
    findings = await run_scenario(f"fatal producer ({victim})", fault)
    assert_no_violation(findings)
    assert victim not in findings.restarted.split(","), "replaced in place: the process went on"


async def test_a_dead_hub_task_breaks_no_invariant(infrastructure: object) -> None:
    fault = in_process("notifier", "hub", "task.essential_died")
    findings = await run_scenario("dead hub task (notifier)", fault)
    assert_no_violation(findings)
    assert "notifier" in findings.restarted.split(","), "the notifier exited, and was started again"
