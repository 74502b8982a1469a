"""Reading processes from /proc for the bench: CPU seconds, seconds spent waiting for a core, and resident
memory of each process (from /proc/<pid>/stat, /proc/<pid>/task/*/schedstat and /proc/<pid>/status), finding
processes by parent or by name, counting them together in a `Group`, and `cpu_probe_ms`, how fast the machine
runs Python at the moment.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.runtime.cpu_wait import run_queue_wait_ns

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
PROBE_SQUARES = 2_000_000


def cpu_probe_ms() -> float:
    """The CPU time of a fixed pure-Python loop, least of three tries, in ms: how fast this machine runs
    Python right now. The load average misses a host that gives its VMs slower cores: on the shared 2-core
    machine the same loop took 0.70 s and then 1.11 s a minute later, with nothing of ours running, and
    every process's CPU per order rose with it. Two runs' CPU figures compare only beside their probes."""
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        sum(i * i for i in range(PROBE_SQUARES))
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


@dataclass
class ProcSample:
    ticks: int  # utime + stime
    rss_kib: int  # resident: private anonymous memory for `private` groups, else VmRSS
    hwm_kib: int  # VmHWM: the process's own peak RSS
    wait_ns: int = 0  # summed over its threads: time ready to run, waiting for a core (the run queue)


def read_proc(pid: int, private: bool = False) -> ProcSample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    values: dict[str, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            values[key] = int(rest.split()[0])
    rss = values.get("RssAnon", 0) if private else values.get("VmRSS", 0)
    return ProcSample(ticks, rss, values.get("VmHWM", 0), run_queue_wait_ns(pid))


def children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def with_children(pid: int) -> list[int]:
    return [pid, *children(pid)]


def find(predicate: Callable[[str, str], bool]) -> list[int]:
    """Pids whose (comm, cmdline with spaces) satisfy `predicate`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if predicate(comm, cmdline):
            found.append(int(entry.name))
    return found


@dataclass
class Group:
    """Processes counted together. `pids` is re-evaluated every sample (backends come and go); a process
    first seen after the baseline counts all its CPU, one that was there counts its CPU since then.
    `own`: the process started with the scenario, so VmHWM is its peak; otherwise (a shared server) the
    peak is the largest sampled total. `private`: count anonymous memory only (Postgres backends share
    their buffers)."""

    name: str
    pids: Callable[[], list[int]]
    own: bool = False
    private: bool = False
    first: dict[int, ProcSample] = field(default_factory=dict)
    last: dict[int, ProcSample] = field(default_factory=dict)
    peak_kib: int = 0
    baseline_taken: bool = False

    def sample(self) -> None:
        total = 0
        for pid in self.pids():
            got = read_proc(pid, self.private)
            if got is None:
                continue
            if pid not in self.first:
                self.first[pid] = got if not self.baseline_taken else ProcSample(0, 0, 0)
            self.last[pid] = got
            total += got.rss_kib
        self.peak_kib = max(self.peak_kib, total)
        self.baseline_taken = True

    @property
    def cpu_s(self) -> float:
        return sum(s.ticks - self.first[pid].ticks for pid, s in self.last.items()) / TICK

    @property
    def cpu_wait_s(self) -> float:
        return sum(s.wait_ns - self.first[pid].wait_ns for pid, s in self.last.items()) / 1e9

    @property
    def peak_rss_mib(self) -> float:
        peak = self.peak_kib
        if self.own:
            peak = max(peak, sum(s.hwm_kib for s in self.last.values()))
        return peak / 1024

    def report(self) -> dict[str, float | int]:
        return {
            "cpu_s": round(self.cpu_s, 2),
            "cpu_wait_s": round(self.cpu_wait_s, 2),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "procs": len(self.last),
        }
