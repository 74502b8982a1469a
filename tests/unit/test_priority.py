"""Lowering a process's priority (shared/runtime/priority.py): its niceness always, its autogroup's only
when the process is alone in it (it leads its session), and never a priority raised."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.runtime.priority import autogroup_nice, lower_priority
from tests.fixtures.polling import eventually

needs_autogroups = pytest.mark.skipif(
    autogroup_nice(os.getpid()) is None, reason="this kernel has no autogroups (/proc/<pid>/autogroup)"
)


@pytest.fixture
def sleeper() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`sleep 60` processes, in a session of their own or in this test's."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, own_session: bool) -> subprocess.Popen[bytes]:
        started.append(
            subprocess.Popen([shutil.which("sleep") or "/bin/sleep", "60"], start_new_session=own_session)
        )
        pid = started[-1].pid
        if own_session:  # Popen may return before the child's setsid
            eventually(lambda: os.getsid(pid) == pid, f"process {pid} leads its session")
        return started[-1]

    yield start
    for process in started:
        process.kill()
        process.wait()


def niceness(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


@needs_autogroups
def test_a_process_alone_in_its_session_is_lowered_with_its_autogroup(
    sleeper: Callable[..., subprocess.Popen[bytes]],
) -> None:
    process = sleeper(own_session=True)
    assert autogroup_nice(process.pid) == 0
    lower_priority(process.pid, 5)
    assert (niceness(process.pid), autogroup_nice(process.pid)) == (5, 5)
    lower_priority(process.pid, 3)  # never raised back
    assert (niceness(process.pid), autogroup_nice(process.pid)) == (5, 5)


@needs_autogroups
def test_a_process_sharing_its_session_keeps_the_sessions_autogroup_as_it_was(
    sleeper: Callable[..., subprocess.Popen[bytes]],
) -> None:
    ours = autogroup_nice(os.getpid())
    process = sleeper(own_session=False)  # in this test's session, so in this test's autogroup
    lower_priority(process.pid, 5)
    assert niceness(process.pid) == 5
    assert autogroup_nice(process.pid) == autogroup_nice(os.getpid()) == ours


def test_a_process_that_is_gone_is_no_error(sleeper: Callable[..., subprocess.Popen[bytes]]) -> None:
    process = sleeper(own_session=True)
    process.kill()
    process.wait()
    lower_priority(process.pid, 5)
    assert autogroup_nice(process.pid) is None
    assert not Path(f"/proc/{process.pid}").exists()
