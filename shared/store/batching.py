"""Group commit: many concurrent callers' writes become one statement in one transaction.

Each caller `submit`s an item and awaits its own result. One flusher task takes whatever has queued up (up
to `max_batch`), runs the batch's write (one statement, atomic on its own: no BEGIN/COMMIT round trips),
publishes the outbox rows it returned, and only then answers each caller. At low load a batch is one item
and costs one round trip, as before; under load the batches grow by themselves (whatever arrived while the
previous flush ran), so the cost per item falls instead of queueing behind a round trip each. Flushes run
one at a time, so a caller's next write always follows its previous one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg

from shared.messaging.outbox import Outbox, OutboxRow
from shared.runtime.metrics import (
    GROUP_COMMIT_BATCH_ITEMS,
    GROUP_COMMIT_FLUSH_SECONDS,
    GROUP_COMMIT_WAIT_SECONDS,
)
from shared.runtime.tasks import cancel_and_wait

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Flushed(Generic[ResultT]):
    """What a batch statement returns: one result per item (in order) and the outbox rows to publish."""

    results: list[ResultT]
    rows: list[OutboxRow]


FlushFn = Callable[[asyncpg.Connection, Sequence[ItemT]], Awaitable[Flushed[ResultT]]]


class GroupCommit(Generic[ItemT, ResultT]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox | None,
        flush: FlushFn[ItemT, ResultT],
        *,
        name: str,
        max_batch: int = 500,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._flush = flush
        self._name = name
        self._max_batch = max_batch
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waited = GROUP_COMMIT_WAIT_SECONDS.labels(name)
        self._flushed = GROUP_COMMIT_FLUSH_SECONDS.labels(name)
        self._items = GROUP_COMMIT_BATCH_ITEMS.labels(name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"group-commit-{self._name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for _, future in self._queue:
            if not future.done():
                future.set_exception(asyncio.CancelledError())
        self._queue.clear()

    async def submit(self, item: ItemT) -> ResultT:
        """Write `item` with whatever else is waiting; returns once it is committed (and its rows queued for
        publishing). Raises what the batch's statement raised."""
        if self._task is None:
            self.start()
        elif self._task.done():
            raise RuntimeError(f"group commit {self._name} has stopped")
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake.set()
        submitted = time.perf_counter()
        try:
            return await future
        finally:
            self._waited.observe(time.perf_counter() - submitted)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let the callers woken in this loop iteration join the batch
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                await self._flush_batch(batch)

    async def _flush_batch(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        self._items.observe(len(batch))
        started = time.perf_counter()
        try:
            async with self._pool.acquire() as conn:
                flushed = await self._flush(conn, [item for item, _ in batch])
            if self._outbox is not None:
                await self._outbox.publish(flushed.rows)
            self._flushed.observe(time.perf_counter() - started)
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, flushed.results, strict=True):
            if not future.done():
                future.set_result(result)
