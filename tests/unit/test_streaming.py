from __future__ import annotations

import asyncio
import inspect

from aiokafka import AIOKafkaConsumer

from shared.messaging.streaming import StageApp
from shared.messaging.topics import ROUTER_GROUP
from shared.runtime.config import Settings
from shared.runtime.tasks import TaskPool


async def test_the_pool_runs_at_most_its_capacity_and_spawn_waits_for_a_slot() -> None:
    pool = TaskPool(3, "test")
    running, peak = 0, 0
    release = asyncio.Event()

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    for _ in range(3):
        await pool.spawn(job())
    fourth = asyncio.create_task(pool.spawn(job()))
    await asyncio.sleep(0.01)
    assert not fourth.done() and pool.in_flight == 3  # backpressure: the caller waits
    release.set()
    await fourth
    assert await pool.drain(1.0) == 0
    assert peak == 3 and pool.in_flight == 0


async def test_a_failing_job_frees_its_slot() -> None:
    pool = TaskPool(1, "test")

    async def boom() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        return None

    await pool.spawn(boom())
    await asyncio.wait_for(pool.spawn(fine()), 1.0)
    assert await pool.drain(1.0) == 0


async def test_drain_cancels_what_outlives_the_grace_period() -> None:
    pool = TaskPool(2, "test")
    await pool.spawn(asyncio.sleep(0.01))
    await pool.spawn(asyncio.sleep(60))
    assert await pool.drain(0.2) == 1
    assert pool.in_flight == 0


async def test_the_consumer_attribute_the_stages_shorten_is_the_one_aiokafka_reads() -> None:
    """PromptConsumerThread sets `_fetch_max_wait_ms` on the consumer faust builds (faust passes 1,500 ms):
    if aiokafka renamed it, the stages would silently fall back to 1.5 s long-polls."""
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=1234)
    assert consumer._fetch_max_wait_ms == 1234
    assert "self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_a_stage_is_ready_once_its_first_rebalance_ends_and_not_while_one_runs() -> None:
    """`/ready` of a stage follows faust's own rebalance hooks (the test stacks and the bench wait on it)."""
    app: StageApp[None] = StageApp(
        "router", Settings(), lambda _: None, group=ROUTER_GROUP, capacity=1, expected_job_s=1.0
    )
    assert not app.ready  # not in its group yet
    app.on_rebalance_start()
    assert not app.ready
    app.on_rebalance_end()
    assert app.ready
    app.on_rebalance_start()  # another member joins
    assert not app.ready
