"""Broker loss: the chaos suite's load (500 orders at 50/s, tests/chaos/test_chaos.py) against a three-node
KRaft cluster of the test's own, topics replicated three times with min.insync.replicas=2, and one node
SIGKILLed under load and left down to the end: nothing heals.

The node killed is the active controller, which also leads partitions of `orders` (leadership is spread over
the three, so it leads some of every topic): the harsher choice. A broker's loss stalls acks=all writes to
the partitions it follows, and leaves those it leads without a leader, until the controller fences it
(after its session times out), drops it from the in-sync sets and elects new leaders from the surviving
copies; losing the controller adds the election of a new one before any of that. Writes then go on with
two in-sync copies, the minimum, and none acknowledged may be lost.

The bar is the suite's (no order lost, doubled, out of order or misreported); the table's `pause s` says how
long no order ended meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from shared.messaging.topics import ORDERS
from tests.chaos.test_chaos import Fault, assert_no_violation, run_scenario
from tests.fixtures.stack import Stack
from tests.fixtures.throwaway import ThrowawayKafkaCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

SCENARIO_BUDGET_S = 300.0  # a passing run takes about a minute


def broker_lost(cluster: ThrowawayKafkaCluster, victims: list[int]) -> Fault:
    """SIGKILL the active controller, which must lead partitions of the stack's `orders`; note its id."""

    async def inject(stack: Stack) -> None:
        controller = cluster.active_controller()
        leaders = await cluster.leaders(stack.settings.topic(ORDERS.name))
        assert controller in leaders.values(), f"controller {controller} leads no `orders`: {leaders}"
        victims.append(controller)
        cluster.node(controller).kill()

    async def heal(_: Stack) -> None:
        pass  # lost for good: the two left carry on alone

    return Fault(inject, heal, cluster.env)


async def test_a_lost_broker_of_three_breaks_no_invariant(infrastructure: object) -> None:
    cluster = ThrowawayKafkaCluster()
    try:
        await cluster.start()
        victims: list[int] = []
        # An order stuck for good (its partition gone with the broker) would keep its client's WebSocket
        # open, and the scenario waiting, forever: fail instead, with the stack torn down as on any failure.
        async with asyncio.timeout(SCENARIO_BUDGET_S):
            findings = await run_scenario("kafka 1 of 3 lost", broker_lost(cluster, victims))
        (victim,) = victims
        killed = cluster.node(victim).proc
        assert killed is not None and killed.poll() is not None, "the lost broker must stay lost"
        assert_no_violation(findings)
    finally:
        cluster.remove()
