"""How long a process waited for a core: the run-queue wait, summed over its threads.

On a machine whose cores are all busy, a process that wakes (a request, a reply from Postgres) waits in the
run queue before it runs, and that wait is the latency nobody's profile shows: at 500 orders/s on two
cores ingress waited 1.6 s per second it ran, its Postgres backends 3 s (docs/performance.md, "Where the
cores go"). Linux keeps the figure per thread (the second field of /proc/<pid>/task/<tid>/schedstat, in
ns; the process's own schedstat covers its main thread only). Every service exports its own as
`process_cpu_wait_seconds_total` (shared/runtime/metrics.py registers the collector), beside
prometheus_client's `process_cpu_seconds_total`; the bench reads any process's the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


def run_queue_wait_ns(pid: int | str = "self") -> int:
    """Nanoseconds the process's threads have spent runnable but not running. A thread that has exited takes
    its figure with it (the services' threads live as long as they do). 0 where the kernel keeps no
    schedstats (or no /proc)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
    return total


class CpuWaitCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "process_cpu_wait",
            "Seconds this process's threads were ready to run but waited for a core (the run queue);"
            " against process_cpu_seconds_total, how contended the machine's cores are for it.",
            value=run_queue_wait_ns() / 1e9,
            unit="seconds",
        )
