"""Group commit: one flush at a time, what arrives meanwhile goes together in the next, and each caller
gets its own result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from shared.store.batching import Flushed, GroupCommit


class Pool:
    """Stands in for asyncpg's pool: the flush function below never touches the connection."""

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        yield object()


class Flushes:
    """A flush function whose flushes each wait until the test lets them finish."""

    def __init__(self) -> None:
        self.started: list[list[int]] = []
        self.running = 0
        self.most_at_once = 0
        self.release = asyncio.Event()
        self.new_flush = asyncio.Event()

    async def __call__(self, conn: Any, items: Sequence[int]) -> Flushed[int]:
        self.started.append(list(items))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.new_flush.set()
        await self.release.wait()
        self.running -= 1
        if 4 in items:
            raise ValueError("the statement failed")
        return Flushed([item * 10 for item in items], [])


async def test_writes_arriving_during_a_flush_go_together_in_the_next_and_each_gets_its_result() -> None:
    flushes = Flushes()
    writer: GroupCommit[int, int] = GroupCommit(Pool(), None, flushes, name="test")
    writer.start()
    try:
        first = asyncio.create_task(writer.submit(1))
        await asyncio.wait_for(flushes.new_flush.wait(), 5)
        later = [asyncio.create_task(writer.submit(n)) for n in (2, 3)]
        for _ in range(20):  # the flusher is busy: nothing else starts however long we wait
            await asyncio.sleep(0)
        assert flushes.started == [[1]]
        flushes.release.set()
        assert await asyncio.gather(first, *later) == [10, 20, 30]
        assert flushes.started == [[1], [2, 3]] and flushes.most_at_once == 1
    finally:
        await writer.stop()


async def test_a_failed_statement_fails_every_write_of_its_batch_and_only_those() -> None:
    flushes = Flushes()
    flushes.release.set()
    writer: GroupCommit[int, int] = GroupCommit(Pool(), None, flushes, name="test")
    writer.start()
    try:
        failed = await asyncio.gather(writer.submit(4), writer.submit(5), return_exceptions=True)
        assert [type(outcome) for outcome in failed] == [ValueError, ValueError]
        assert await writer.submit(6) == 60  # the writer goes on
    finally:
        await writer.stop()
