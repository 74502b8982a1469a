"""Tasks: a bounded pool of jobs that measures itself, cancelling tasks cleanly, and the tasks a process
cannot live without.

A process whose essential task has died (a consumer loop, the outbox's sender, a stage's sweeper) looks alive
to its supervisor while it does nothing: supervisord restarts a process only when it exits. `essential`
makes such a death end the process: it logs `task.essential_died`, asks the process to stop as a supervisor
would (SIGTERM, so that uvicorn and faust run their usual graceful shutdown), and makes sure the process
ends with EXIT_STATUS, whatever that shutdown does:

- at interpreter exit (faust's worker ends with `SystemExit(0)` after a SIGTERM): an `atexit` hook;
- at the end of an HTTP service's lifespan (`exit_if_essential_died`): uvicorn re-raises the SIGTERM once
  it has shut down, which would end the process by the signal, not with a status;
- after EXIT_GRACE_S, if the shutdown hangs: a timer thread;
- at once, where nothing handles SIGTERM (its default action would kill the process with no status).

A task cancelled by a request (`task.cancel()`: its owner's stop, or the event loop closing) has not died.
One that ends cancelled although nobody asked it to (a CancelledError raised by something it awaited: a
library cancelling its own future) has.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

from shared.runtime.logging import get_logger

logger = get_logger(__name__)

T = TypeVar("T")

EXIT_STATUS = 70  # EX_SOFTWARE (sysexits.h): an internal failure, not a stop somebody asked for
EXIT_GRACE_S = 20.0  # as long as supervisord gives a process after its own SIGTERM (cli.py STOP_WAIT_S)

_essentials: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


class _Exit:
    """Whether an essential task has died in this process (then it is on its way out)."""

    requested = False


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel each task (None: never started) and wait until every one has ended. A task that had already
    ended with an error does not fail the stop: an essential one was reported when it died, any other is
    logged here."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            if task not in _essentials:
                logger.error("task.failed_before_stop", task=task.get_name(), error=repr(exc))


def essential(task: asyncio.Task[T], *, grace_s: float = EXIT_GRACE_S) -> asyncio.Task[T]:
    """Mark `task` as one this process cannot do its job without: if it ends other than by a cancellation
    somebody asked for, the process exits with EXIT_STATUS (see the module's docstring), so that its
    supervisor starts it again. Returns `task`."""
    _essentials.add(task)
    task.add_done_callback(lambda ended: _judge(ended, grace_s))
    return task


def _judge(task: asyncio.Task[Any], grace_s: float) -> None:
    if task.cancelling():  # cancelled on request: a stop, not a death
        return
    error: BaseException | None = None
    if task.cancelled():
        reason = "cancelled, though nobody asked it to stop"
    else:
        error = task.exception()
        reason = repr(error) if error is not None else "returned"
    logger.error("task.essential_died", task=task.get_name(), error=reason, exc_info=error)
    request_exit(grace_s)


def request_exit(grace_s: float = EXIT_GRACE_S) -> None:
    """End this process with EXIT_STATUS, after a graceful shutdown if one starts (SIGTERM) and ends within
    `grace_s`. Only the first call does anything."""
    if _Exit.requested:
        return
    _Exit.requested = True
    threading.Thread(target=_exit_after, args=(grace_s,), name="essential-exit", daemon=True).start()
    atexit.register(_exit_now)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        _exit_now()  # nothing here shuts down on SIGTERM: it would only kill the process
    os.kill(os.getpid(), signal.SIGTERM)


def exit_if_essential_died() -> None:
    """The last step of an HTTP service's lifespan: if an essential task died, exit with EXIT_STATUS now,
    rather than let uvicorn end the process by re-raising the SIGTERM that stopped it."""
    if _Exit.requested:
        _exit_now()


def _exit_after(grace_s: float) -> None:
    time.sleep(grace_s)
    logger.error("task.exit_forced", graceS=grace_s)
    _exit_now()


def _exit_now() -> NoReturn:
    flushable = [*logging.getLogger().handlers, sys.stdout, sys.stderr]  # our JSON lines' sink among them
    for output in flushable:
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing more to do
            output.flush()
    os._exit(EXIT_STATUS)


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
