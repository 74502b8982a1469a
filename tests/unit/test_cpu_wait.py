"""A process's wait for a core (shared/runtime/cpu_wait.py): what every service exports and what the bench
prints beside each process's CPU (benchmarks/bench/procs.py), read from a real /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import REGISTRY

import shared.runtime.metrics  # noqa: F401  (registers the collector, as every service's import does)
from benchmarks.bench.procs import Group


def _spin(seconds: float, spun: threading.Event, release: threading.Event) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass
    spun.set()
    release.wait()  # a thread's counters go with it: it stays until the figures are read


def exported_wait_s() -> float:
    value = REGISTRY.get_sample_value("process_cpu_wait_seconds_total")
    assert value is not None, "process_cpu_wait_seconds_total is not registered"
    return value


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/schedstat"), reason="no schedstats here")
def test_a_process_that_shares_its_core_is_seen_waiting_for_it() -> None:
    """Two busy processes held to one core take turns: each spends about as long waiting in the run queue
    as running, which both the bench's `cpu_wait_s` and the exported counter must show (and `cpu_s` the
    running). The busy thread is not the main one (which sleeps meanwhile), as in the stages (faust's
    consumer thread) and Kafka: a reader of the process's own schedstat (its main thread) alone would
    report no wait."""
    core = {min(os.sched_getaffinity(0))}
    before = os.sched_getaffinity(0)
    rival = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os\nos.sched_setaffinity(0, {core})\nprint(flush=True)\nwhile True: pass",
        ],
        stdout=subprocess.PIPE,
    )
    group = Group("this test", lambda: [os.getpid()], own=True)
    spun, release = threading.Event(), threading.Event()
    busy = threading.Thread(target=_spin, args=(0.3, spun, release))
    try:
        assert rival.stdout is not None
        rival.stdout.readline()  # the rival spins on the core from now on
        os.sched_setaffinity(0, core)
        group.sample()
        exported_before = exported_wait_s()
        busy.start()
        spun.wait()
        group.sample()
        exported_after = exported_wait_s()
    finally:
        release.set()
        os.sched_setaffinity(0, before)
        rival.kill()
        rival.wait()
    if busy.is_alive():
        busy.join()
    figures = group.report()
    assert figures["cpu_s"] >= 0.25
    assert figures["cpu_wait_s"] >= 0.1, figures
    assert exported_after - exported_before >= 0.1, (exported_before, exported_after)
