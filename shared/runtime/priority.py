"""Lowering a process's CPU priority where the engine's processes share cores (STAGE_NICE).

A niceness ranks a process only against the processes of its own scheduling group. Linux's autogroup
(`kernel.sched_autogroup_enabled`, on by default in Debian's and most distributions' kernels) gives every
session a group of its own, and the cores are shared between groups first: a process that leads its own
session (started with `setsid`, as the test stacks and the bench start each service; every Postgres backend,
which calls `setsid` itself) competes with the others as a whole group, whatever its niceness. Its group's
niceness (`/proc/<pid>/autogroup`) is what ranks it then. So a process is lowered both ways: its own
niceness (what counts inside a group it shares, e.g. every service under supervisord in `make run`) and,
when it leads its session and is therefore alone in its group, its group's niceness. A group shared with
other processes is never reniced: that would lower them too.

Measured at 500/s on two cores (docs/performance.md, "Autogroups"): with the stages' own niceness only,
ingress waited ~1.5 s for a core per second it ran; with their groups lowered too, ~0.9 s, and HTTP p99
fell to ~0.6x.
"""

from __future__ import annotations

import os
from pathlib import Path


def lower_priority(pid: int, nice: int) -> None:
    """Run process `pid` (0: this one; for this one, only the calling thread's own niceness changes, so
    call it before starting threads, which inherit it) at niceness `nice` at least, and its autogroup too
    when it leads its session. Best effort: it only ever lowers a priority, and where the OS refuses
    (another user's process, no autogroup, no /proc) nothing changes."""
    target = pid or os.getpid()
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        if os.getsid(target) != target:  # its group is shared with the rest of its session
            return
        current = autogroup_nice(target)
        if current is not None and current < nice:
            Path(f"/proc/{target}/autogroup").write_text(str(nice))
    except OSError:
        return


def autogroup_nice(pid: int) -> int | None:
    """The niceness of `pid`'s autogroup; None without autogroups (or without the process)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])  # "/autogroup-<id> nice <n>"
    except (OSError, ValueError, IndexError):
        return None
