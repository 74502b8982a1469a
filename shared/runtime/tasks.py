"""Tasks: a bounded pool of jobs that measures itself, and cancelling tasks cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

from shared.runtime.logging import get_logger


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel each task (None: never started) and wait until every one has ended."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await task


logger = get_logger(__name__)


class TaskPool:
    """At most `capacity` jobs at once, as asyncio tasks (not threads): `spawn` waits for a free slot. It
    also measures its jobs (average duration, finished per second) for the stage's heartbeat."""

    def __init__(self, capacity: int, name: str, *, expected_job_s: float = 1.0) -> None:
        self.capacity = capacity
        self._name = name
        self._slots = asyncio.Semaphore(capacity)
        self._tasks: set[asyncio.Task[None]] = set()
        self.job_s = expected_job_s  # moving average of a job's duration
        self.finished = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        try:
            await self._slots.acquire()
        except BaseException:
            job.close()
            raise
        task = asyncio.create_task(self._run(job), name=self._name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Coroutine[Any, Any, None]) -> None:
        started = time.monotonic()
        try:
            await job
        except asyncio.CancelledError:
            raise
        except Exception:
            # The job's order stays where it was in Postgres; the sweeper finishes it.
            logger.exception("task.failed", pool=self._name)
        finally:
            self._slots.release()
            self.finished += 1
            self.job_s += (time.monotonic() - started - self.job_s) * JOB_TIME_WEIGHT

    async def drain(self, grace_s: float) -> int:
        """Wait up to `grace_s` for the jobs in flight, cancel the rest; returns how many were cancelled."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)


JOB_TIME_WEIGHT = 0.02  # each finished job moves the average job time by 2 % of its difference
