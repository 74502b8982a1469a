"""Group commit: one flush at a time, what arrives meanwhile goes together in the next, and each caller
gets its own result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

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


class Statements:
    """A flush function that behaves as Postgres does with a poison row: any statement holding `poison`
    fails with `error` and writes nothing; a statement without it writes each item (and one outbox row each).
    A `broken` item written alone fails with its own error, as if the connection went during its statement."""

    def __init__(self, poison: int, error: Exception, broken: dict[int, Exception] | None = None) -> None:
        self.poison, self.error, self.broken = poison, error, broken or {}
        self.started: list[list[int]] = []

    async def __call__(self, conn: Any, items: Sequence[int]) -> Flushed[int]:
        self.started.append(list(items))
        if len(items) == 1 and items[0] in self.broken:
            raise self.broken[items[0]]
        if self.poison in items:
            raise self.error
        return Flushed([item * 10 for item in items], [f"row-{item}" for item in items])  # type: ignore[misc]


class Published:
    """Stands in for the outbox: which rows were handed over for publishing."""

    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def publish(self, rows: list[Any]) -> None:
        self.rows.extend(rows)


async def submit_together(writer: GroupCommit[int, int], items: Sequence[int]) -> list[int | BaseException]:
    """Submit `items` in one loop iteration: the flusher starts after all of them are queued (one batch)."""
    return await asyncio.gather(*(writer.submit(n) for n in items), return_exceptions=True)


async def test_a_row_the_store_refuses_fails_only_its_own_write_and_the_others_are_written() -> None:
    """Bug caught: one caller's poison row (an index row over the btree limit) failing every write of its
    batch (500s for strangers). Mutant killed: `_flush_batch` without the row-by-row retry (every caller
    gets the error)."""
    too_large = asyncpg.ProgramLimitExceededError("index row size 8040 exceeds btree version 4 maximum 2704")
    statements, outbox = Statements(poison=3, error=too_large), Published()
    writer: GroupCommit[int, int] = GroupCommit(Pool(), outbox, statements, name="test")  # type: ignore[arg-type]
    try:
        outcomes = await submit_together(writer, [1, 2, 3, 4, 5])
        assert outcomes == [10, 20, too_large, 40, 50]
        assert statements.started == [[1, 2, 3, 4, 5], [1], [2], [3], [4], [5]]
        assert outbox.rows == ["row-1", "row-2", "row-4", "row-5"]  # the written ones' rows, and only theirs
    finally:
        await writer.stop()


async def test_a_connection_failure_fails_the_whole_batch_without_writing_row_by_row() -> None:
    """Bug caught: an unreachable Postgres retried once per item (a timeout each). Mutant killed: retrying
    row by row on any PostgresError (the others would be written one by one)."""
    gone = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    statements = Statements(poison=3, error=gone)
    writer: GroupCommit[int, int] = GroupCommit(Pool(), None, statements, name="test")
    try:
        outcomes = await submit_together(writer, [1, 2, 3, 4])
        assert outcomes == [gone] * 4
        assert statements.started == [[1, 2, 3, 4]]
    finally:
        await writer.stop()


async def test_a_connection_lost_while_writing_row_by_row_fails_the_rest_and_keeps_what_was_written() -> None:
    """Bug caught: callers whose rows were committed told they failed (a retry without a key would place
    the order twice), or a lost connection tried once per remaining item. Mutant killed: treating the
    connection error as one row's (items after it would still be tried)."""
    too_long = asyncpg.StringDataRightTruncationError("value too long for type character varying(64)")
    gone = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    statements, outbox = Statements(poison=2, error=too_long, broken={3: gone}), Published()
    writer: GroupCommit[int, int] = GroupCommit(Pool(), outbox, statements, name="test")  # type: ignore[arg-type]
    try:
        outcomes = await submit_together(writer, [1, 2, 3, 4])
        assert outcomes == [10, too_long, gone, gone]
        assert statements.started == [[1, 2, 3, 4], [1], [2], [3]]
        assert outbox.rows == ["row-1"]
    finally:
        await writer.stop()
