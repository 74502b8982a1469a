"""CPU cost of one log line as the stages write it: `order.step` with the order, correlation and job bound
as context variables, through shared.runtime.logging's configuration, to this process's stdout.

    .venv/bin/python -m benchmarks.log_lines --lines 100000 > /dev/null
    .venv/bin/python -m benchmarks.log_lines --level warning > /dev/null
    .venv/bin/python -m benchmarks.log_lines | cat > /dev/null          # stdout a pipe, as under a supervisor

Figures go to stderr (stdout takes the lines); printed, never asserted. `--library` logs through a stdlib
logger instead (what uvicorn, faust and aiokafka lines cost).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

import structlog

from shared.runtime.logging import configure_logging, get_logger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--level", default="info")
    parser.add_argument("--library", action="store_true", help="a stdlib logger's lines (uvicorn, faust, …)")
    parser.add_argument(
        "--loop-batch", type=int, default=0, help="log in an asyncio loop, N lines per iteration (0: no loop)"
    )
    args = parser.parse_args()

    configure_logging("bench", args.level)
    ours = get_logger("shared.store.steps")
    library = logging.getLogger("uvicorn.error")

    def log(seq: int) -> None:
        if args.library:
            library.info("order %s step %s", "6f1c9a52", seq)
        else:
            ours.info(
                "order.step",
                status="submitted",
                seq=seq,
                attempt=1,
                dex="raydium",
                error=None,
                duration_ms=12.3,
            )

    async def in_a_loop() -> None:
        for seq in range(args.lines):
            log(seq)
            if seq % args.loop_batch == 0:
                await asyncio.sleep(0)

    with structlog.contextvars.bound_contextvars(
        orderId="6f1c9a52-3f0e-4d8e-9d55-6b1f7f0c2a11",
        correlationId="trace-0b5c3f2e9a7d4e1f8c6b",
        jobId="orders.execute/3/1234567",
    ):
        before, wall0 = os.times(), time.perf_counter()
        if args.loop_batch:
            asyncio.run(in_a_loop())
        else:
            for seq in range(args.lines):
                log(seq)
        logging.getLogger().handlers[0].flush()
        sys.stdout.flush()
        after, wall = os.times(), time.perf_counter() - wall0
    user, system = after.user - before.user, after.system - before.system
    per = (user + system) / args.lines * 1e6
    sys.stderr.write(
        f"lines={args.lines} level={args.level} {'library' if args.library else 'ours'} "
        f"loop_batch={args.loop_batch} "
        f"stdout={'tty' if sys.stdout.isatty() else 'pipe' if _is_pipe() else 'file'} "
        f"cpu={user + system:.2f}s ({per:.1f} µs/line, user {user / args.lines * 1e6:.1f}"
        f" + sys {system / args.lines * 1e6:.1f}) wall={wall:.2f}s load={os.getloadavg()[0]:.2f}\n"
    )


def _is_pipe() -> bool:
    import stat

    return stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)


if __name__ == "__main__":
    main()
