from __future__ import annotations

import asyncio
import inspect
from typing import cast

import faust
from aiokafka import AIOKafkaConsumer
from faust.types import Message

from shared.messaging.batches import take_batches
from shared.messaging.faust_transport import PromptConsumer, _waits_on
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


def _stage_app() -> StageApp[None]:
    app: StageApp[None] = StageApp(
        "router", Settings(), lambda _: None, group=ROUTER_GROUP, capacity=1, expected_job_s=1.0
    )
    app.flow_control.resume()  # as a started app's consumer does once it has partitions
    return app


async def _queue(
    app: StageApp[None], channel: faust.ChannelT[bytes], offsets: range, generation: int
) -> list[Message]:
    messages = [
        Message("orders", 0, offset, 0.0, 0, {}, b"k", str(offset).encode(), None, generation_id=generation)
        for offset in offsets
    ]
    for message in messages:
        await channel.put(await channel.decode(message))
    return messages


async def test_take_batches_hands_over_what_is_queued_in_order_and_acks_a_batch_when_the_next_is_asked() -> (
    None
):
    """The stages' batches (faust's `take_events` contract, minus its event-loop turn per message): no
    message is acknowledged (so committable) while the agent still works on its batch."""
    app = _stage_app()
    channel = app.channel()
    batches = take_batches(app.stream(channel), 3, 0.05)
    first = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0)  # the reader joins the channel
    messages = await _queue(app, channel, range(7), app.consumer_generation_id)

    batch = await asyncio.wait_for(first, 1)
    assert [e.value for e in batch] == [b"0", b"1", b"2"]
    assert not any(m.acked for m in messages)  # the agent has not finished with them yet
    batch = await anext(batches)
    assert [e.value for e in batch] == [b"3", b"4", b"5"]
    assert [m.acked for m in messages] == [True] * 3 + [False] * 4
    started = asyncio.get_running_loop().time()
    batch = await anext(batches)  # a partial batch, once its first message has waited `within`
    assert [e.value for e in batch] == [b"6"]
    assert asyncio.get_running_loop().time() - started >= 0.04
    assert [m.acked for m in messages] == [True] * 6 + [False]
    await batches.aclose()
    assert all(m.acked for m in messages)


async def test_take_batches_drops_and_acks_what_was_fetched_before_the_latest_rebalance() -> None:
    app = _stage_app()
    channel = app.channel()
    batches = take_batches(app.stream(channel), 10, 0.01)
    first = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0)
    stale = await _queue(app, channel, range(2), app.consumer_generation_id - 1)
    fresh = await _queue(app, channel, range(2, 4), app.consumer_generation_id)

    batch = await asyncio.wait_for(first, 1)
    assert [e.value for e in batch] == [b"2", b"3"]
    assert all(m.acked for m in stale) and not any(m.acked for m in fresh)
    await batches.aclose()


async def test_the_consumer_delivers_in_place_unless_a_delivery_could_block() -> None:
    """PromptConsumer.wait_first runs faust's per-message delivery in the fetch loop's own task when it
    cannot block, and hands it to faust's wait (a task per message, interruptible by a rebalance) when it
    could: flow suspended, or a stream's buffer full."""
    app = _stage_app()
    consumer = cast(PromptConsumer, app.consumer)
    ran_in: list[asyncio.Task[object] | None] = []

    async def deliver() -> None:
        ran_in.append(asyncio.current_task())

    suspended, other = consumer.suspend_flow.wait(), asyncio.Event().wait()
    assert _waits_on(suspended, consumer.suspend_flow) and not _waits_on(other, consumer.suspend_flow)
    suspended.close()
    other.close()
    await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    assert ran_in == [asyncio.current_task()]

    channel = app.topic("orders")
    full = aiter(channel)
    app.topics.add(cast(faust.TopicT, full))
    for _ in range(full.queue.maxsize):
        full.queue.put_nowait("queued")
    await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    assert len(ran_in) == 2 and ran_in[1] is not asyncio.current_task()
