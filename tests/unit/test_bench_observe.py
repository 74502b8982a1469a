"""The bench's process figures (benchmarks/bench/observe.py), read from a real /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from benchmarks.bench.observe import Group


def _spin(seconds: float, spun: threading.Event, release: threading.Event) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass
    spun.set()
    release.wait()  # a thread's counters go with it: it stays until the group has sampled it


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/schedstat"), reason="no schedstats here")
def test_a_process_that_shares_its_core_is_seen_waiting_for_it() -> None:
    """Two busy processes held to one core take turns: each spends about as long waiting in the run queue
    as running, which `cpu_wait_s` must show (and `cpu_s` the running). The busy thread is not the main
    one (which sleeps meanwhile), as in the stages (faust's consumer thread) and Kafka: a reader of the
    process's own schedstat (its main thread) alone would report no wait."""
    core = {min(os.sched_getaffinity(0))}
    before = os.sched_getaffinity(0)
    rival = subprocess.Popen(
        [sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {core})\nwhile True: pass"]
    )
    group = Group("this test", lambda: [os.getpid()], own=True)
    try:
        os.sched_setaffinity(0, core)
        group.sample()
        spun, release = threading.Event(), threading.Event()
        busy = threading.Thread(target=_spin, args=(0.3, spun, release))
        busy.start()
        spun.wait()
        group.sample()
        release.set()
        busy.join()
    finally:
        os.sched_setaffinity(0, before)
        rival.kill()
        rival.wait()
    figures = group.report()
    assert figures["cpu_s"] >= 0.25
    assert figures["cpu_wait_s"] >= 0.1, figures
