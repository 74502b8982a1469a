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
from shared.runtime.logging import get_logger
from shared.runtime.metrics import (
    GROUP_COMMIT_BATCH_ITEMS,
    GROUP_COMMIT_FLUSH_SECONDS,
    GROUP_COMMIT_WAIT_SECONDS,
)
from shared.runtime.tasks import cancel_and_wait, essential
from shared.store.db import ROW_ERRORS

logger = get_logger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Flushed(Generic[ResultT]):
    """What a batch statement returns: one result per item (in order) and the outbox rows to publish."""

    results: list[ResultT]
    rows: list[OutboxRow]


@dataclass(frozen=True)
class _Failed:
    """An item's outcome when its own statement failed."""

    error: BaseException


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
        """Start the flusher. It is essential (shared/runtime/tasks.py): should it die, every later write
        would fail ("has stopped") while the process looked alive, so the process exits instead."""
        self._task = essential(asyncio.create_task(self._run(), name=f"group-commit-{self._name}"))

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
        """Write the batch in one statement and answer each caller. If the statement fails because of a row
        (ROW_ERRORS: one caller's value, not the connection), no row was written: the items are written
        again one statement each, so only the caller at fault gets the error. Any other failure fails every
        item of the batch (writing them one by one would only repeat it, a timeout each)."""
        self._items.observe(len(batch))
        started = time.perf_counter()
        try:
            async with self._pool.acquire() as conn:
                try:
                    flushed = await self._flush(conn, [item for item, _ in batch])
                    outcomes: list[ResultT | _Failed] = list(flushed.results)
                    rows = flushed.rows
                except ROW_ERRORS as exc:
                    if len(batch) == 1:
                        raise
                    logger.warning(
                        "group_commit.row_by_row", name=self._name, items=len(batch), error=repr(exc)
                    )
                    outcomes, rows = await self._flush_one_by_one(conn, [item for item, _ in batch])
            if self._outbox is not None:
                await self._outbox.publish(rows)
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
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, _Failed):
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome)

    async def _flush_one_by_one(
        self, conn: asyncpg.Connection, items: list[ItemT]
    ) -> tuple[list[ResultT | _Failed], list[OutboxRow]]:
        """Each item in a statement of its own: its result, or the error its row caused. Should the connection
        fail on the way, the items written so far keep their results (they are committed) and the rest get
        that error."""
        outcomes: list[ResultT | _Failed] = []
        rows: list[OutboxRow] = []
        for index, item in enumerate(items):
            try:
                flushed = await self._flush(conn, [item])
            except ROW_ERRORS as exc:
                outcomes.append(_Failed(exc))
                continue
            except Exception as exc:  # delivered to the callers not yet written, as a failed batch would be
                outcomes.extend(_Failed(exc) for _ in items[index:])
                break
            outcomes.extend(flushed.results)
            rows.extend(flushed.rows)
        return outcomes, rows
