"""Taking a faust stream in batches, and the log context of the message being handled.

Agents take messages in batches (`take_batches`): one load and one group-committed write for the batch; a
batch is acknowledged only once the agent has finished with it, so at-least-once delivery holds (faust
commits only acknowledged offsets). While handling an order, `job_context` binds it, its correlation id and
the Kafka message (`job_id`) to every log line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any, cast

import faust
import structlog


def job_id(event: faust.EventT | None) -> str | None:
    """The Kafka message being handled, as topic/partition/offset."""
    if event is None:
        return None
    return f"{event.message.topic}/{event.message.partition}/{event.message.offset}"


@contextmanager
def job_context(
    order_id: object, correlation_id: str | None, job: str | None, **fields: Any
) -> Iterator[None]:
    """Bind the order, its correlation id and the Kafka message being handled (`jobId`) to every log line
    written while handling it, tasks it spawns included."""
    with structlog.contextvars.bound_contextvars(
        orderId=str(order_id), correlationId=correlation_id, jobId=job, **fields
    ):
        yield


async def take_batches(
    stream: faust.StreamT[Any], size: int, within: float
) -> AsyncGenerator[list[faust.EventT[Any]], None]:
    """The events of `stream` in batches of at most `size`, each taken once its first event has waited
    `within` seconds or it is full; every event of a batch is acknowledged when the consumer asks for the
    next one (as faust's `take_events`, whose contract this keeps).

    faust's stream iterator, and `take_events` built on it, gives way to the event loop before every event
    (`await asyncio.sleep(0)`). In a stage whose loop runs thousands of quotes and swaps a turn takes
    milliseconds, so the stream moved a few hundred events a second and, under load, events waited up to
    seconds in the stream's queue while the agent sat idle (docs/performance.md). This takes everything
    queued at once, doing for each event what faust's iterator does: skip it (acknowledged) when it was
    fetched before the latest rebalance, track it as unacknowledged, and tell the sensors."""
    app = stream.app
    consumer = app.consumer
    sensors = app.sensors
    acking_topics = app.topics.acking_topics
    # Joins the conductor's channels, as iterating the stream would.
    queue = cast("faust.ChannelT[Any]", aiter(stream.channel)).queue
    clock = asyncio.get_running_loop().time

    def admit(event: faust.EventT[Any]) -> bool:
        """Whether to hand the event over: one fetched before the latest rebalance is acknowledged and
        dropped (its partition may be another member's now)."""
        message = event.message
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            finish(event, None)
            return False
        if message.topic in acking_topics and not message.tracked:
            message.tracked = True
            consumer.track_message(message)
        return True

    def finish(event: faust.EventT[Any], state: dict[str, Any] | None) -> None:
        message = event.message
        last = event.ack()
        sensors.on_stream_event_out(message.tp, message.offset, stream, event, state)
        if last:
            sensors.on_message_out(message.tp, message.offset, message)

    while not stream.should_stop:
        taken: list[tuple[faust.EventT[Any], dict[str, Any] | None]] = []
        event = await queue.get()
        deadline = clock() + within
        while True:
            if admit(event):
                message = event.message
                taken.append((event, sensors.on_stream_event_in(message.tp, message.offset, stream, event)))
            if len(taken) >= size:
                break
            if queue.empty():
                try:
                    async with asyncio.timeout(deadline - clock()):
                        event = await queue.get()
                except TimeoutError:
                    break
            else:
                event = queue.get_nowait()
        if not taken:
            continue
        try:
            yield [event for event, _ in taken]
        finally:
            for event, state in taken:
                finish(event, state)
