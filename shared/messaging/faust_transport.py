"""faust's Kafka transport with workarounds for the stages' latency (docs/performance.md).

faust's consumer long-polls each fetch for 1.5 s and hands every fetched message to the streams through a
few tasks and a full turn of the event loop; under load either one held messages for up to seconds between
the broker and an idle agent. `PromptTransport` is faust's aiokafka transport with a consumer that fetches
with a short long-poll (KAFKA_FETCH_MAX_WAIT_MS) and delivers in place whenever a delivery cannot block.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Protocol, cast

from faust.transport.drivers import aiokafka as aiokafka_driver
from mode.services import WaitResults


class FetchTuned(Protocol):
    """The app a `PromptConsumerThread` serves: it says how long a fetch may wait (KAFKA_FETCH_MAX_WAIT_MS,
    the stage app's `fetch_max_wait_ms`)."""

    fetch_max_wait_ms: int


class PromptConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's consumer thread with a short fetch long-poll (faust hard-codes 1.5 s).

    aiokafka keeps one fetch in flight per broker, for the partitions with nothing buffered. When that fetch
    holds only quiet partitions (a retry topic, faust's leader topic), records arriving on the busy ones
    wait until it times out: a stage under steady load saw its messages 0.6-1.7 s after they were
    produced while it sat idle 60 % of the time. A short wait bounds that to KAFKA_FETCH_MAX_WAIT_MS."""

    def _create_worker_consumer(self, transport: aiokafka_driver.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = cast(FetchTuned, self.app)
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms  # read by consumer.start(), as the option is
        return consumer


class PromptConsumer(aiokafka_driver.Consumer):
    """faust's consumer, delivering fetched messages to the streams without a trip round the event loop
    each, and with the short fetch long-poll of `PromptConsumerThread`.

    faust's fetch loop hands each message over as `wait_first(deliver(message), suspend_flow.wait())`, so
    that a rebalance can interrupt a delivery blocked on a full stream buffer. That starts four tasks and
    waits a full turn of the event loop per message; in a stage whose loop also runs thousands of quotes
    and swaps, a turn takes milliseconds, so the loop delivered a few hundred messages a second at most and
    messages waited up to seconds between the broker and the agent (docs/performance.md). A delivery can
    only block when flow is suspended, faust's producer buffer is over its limit, or a stream's buffer is
    full; when none holds, it runs to completion in place, as faust would have run it, minus the tasks."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109 (faust's signature)
        if len(coros) == 2 and timeout is None and _waits_on(coros[1], self.suspend_flow):
            deliver, suspended = coros
            if self._delivers_at_once():
                suspended.close()
                await deliver
                return WaitResults([deliver], [None], False)
        return await super().wait_first(*coros, timeout=timeout)

    def _delivers_at_once(self) -> bool:
        app = self.app
        return (
            not self.suspend_flow.is_set()
            and app.flow_control.is_active()
            and app.producer.buffer.size <= app.producer.buffer.max_messages
            and not any(channel.queue.full() for channel in app.topics)
        )

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


def _waits_on(awaitable: object, event: asyncio.Event) -> bool:
    """Whether `awaitable` is `event.wait()`, not yet started."""
    return (
        inspect.iscoroutine(awaitable)
        and awaitable.cr_code is asyncio.Event.wait.__code__
        and awaitable.cr_frame is not None
        and awaitable.cr_frame.f_locals.get("self") is event
    )


class PromptTransport(aiokafka_driver.Transport):
    Consumer = PromptConsumer
