"""Two of each scaled stage: two ingress processes behind the proxy, two routers and two executors sharing
partitions through their consumer groups. Every order confirms once, and both ingresses take a share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fixtures.execution import ledger, place_many, wait_terminal
from tests.fixtures.orders import metric_value
from tests.fixtures.stack import Stack, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.serial]


@pytest.fixture(scope="module")
async def doubled(infrastructure: object) -> AsyncIterator[Stack]:
    async with running_stack(REPLICAS="2", MOCK_PRICE_MOVE_BPS="0", TOPIC_PARTITIONS="4") as stack:
        yield stack


async def test_two_of_each_stage_confirm_every_order_once_and_share_the_intake(doubled: Stack) -> None:
    assert {"ingress-2", "router-2", "executor-2"} <= set(doubled.processes)
    ids = await place_many(doubled, 60, parallel=20)
    rows = await wait_terminal(doubled, ids, timeout=90)
    assert {r["status"] for r in rows.values()} == {"confirmed"}
    swaps = await ledger(doubled, ids)
    assert sorted(len(swaps.get(i, [])) for i in ids) == [1] * len(ids)
    ports = (doubled.settings.ingress_port, *doubled.settings.ingress_replica_ports)
    shares = [await metric_value(p, "orders_accepted_total") for p in ports]
    assert sum(shares) == 60 and min(shares) > 0, shares
