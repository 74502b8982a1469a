"""`python -m shared.runtime.supervise`: supervisord's event listener that never leaves a program FATAL.

supervisord restarts a program that exits. One that exits sooner than `startsecs` after starting it tries
again `startretries` times, waiting one second longer each time (1 s, 2 s, 3 s ...), and then leaves it
FATAL: never started again, whatever comes back. A service that cannot start while Kafka or Postgres is away
would stay down after they return. Raising `startretries` does not help: its linear wait has no ceiling, so
after a long outage the next try could be many minutes away.

This listener (`render_supervisor_config` adds it) hears PROCESS_STATE_FATAL and starts the program again,
through supervisord's XML-RPC interface, after a delay that doubles with each FATAL of that program in a row,
from FIRST_DELAY_S to MAX_DELAY_S, and so on forever. A program that reaches RUNNING (it stayed up
`startsecs`) starts again from FIRST_DELAY_S. supervisord's own quick retries still come first, so a
program down for a moment is back within seconds, one down for long is tried at least every MAX_DELAY_S, and
a program stopped on purpose (`supervisorctl stop`) is STOPPED, not FATAL, and left alone.

The listener answers each event at once and keeps its pending starts itself, so that events never queue
up behind a wait. Its stdout is supervisord's protocol channel; it logs JSON lines to stderr.
"""

from __future__ import annotations

import os
import select
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from typing import BinaryIO, Protocol

from supervisor import childutils

from shared.runtime.logging import configure_logging, get_logger

logger = get_logger(__name__)

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 60.0
EVENTS = ("PROCESS_STATE_FATAL", "PROCESS_STATE_RUNNING")


def delay_s(fatal_in_a_row: int) -> float:
    """How long to wait before starting a program that has gone FATAL `fatal_in_a_row` times in a row."""
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** max(0, fatal_in_a_row - 1))


class Starter(Protocol):
    """What of supervisord's XML-RPC interface the listener uses."""

    def startProcess(self, name: str, wait: bool) -> object: ...  # supervisord's name for it


class Restarts:
    """The starts the listener owes: which program, when; and how many times each went FATAL in a row."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.fatal_in_a_row: dict[str, int] = {}
        self.due: dict[str, float] = {}  # "group:name" -> when to start it (clock time)

    def on_event(self, event: str, payload: bytes) -> None:
        fields = childutils.get_headers(payload.decode().split("\n", 1)[0])
        name = f"{fields['groupname']}:{fields['processname']}"
        if event == "PROCESS_STATE_RUNNING":
            self.fatal_in_a_row.pop(name, None)
            self.due.pop(name, None)
        elif event == "PROCESS_STATE_FATAL":
            failures = self.fatal_in_a_row[name] = self.fatal_in_a_row.get(name, 0) + 1
            wait_s = delay_s(failures)
            self.due[name] = self._clock() + wait_s
            logger.warning("supervise.fatal", program=name, fatalInARow=failures, startInS=wait_s)

    def next_in_s(self) -> float | None:
        """Seconds until the next start is due (0 if one is), None if none is pending."""
        if not self.due:
            return None
        return max(0.0, min(self.due.values()) - self._clock())

    def start_due(self, supervisor: Starter) -> None:
        """Start every program whose time has come. One supervisord says is already starting or running
        needs nothing more; if supervisord cannot be reached, the start is tried again a little later."""
        now = self._clock()
        for name in [name for name, at in self.due.items() if at <= now]:
            try:
                supervisor.startProcess(name, False)
            except xmlrpc.client.Fault as fault:
                logger.warning("supervise.start_refused", program=name, error=fault.faultString)
            except OSError as exc:
                logger.warning("supervise.unreachable", program=name, error=repr(exc))
                self.due[name] = now + FIRST_DELAY_S
                continue
            else:
                logger.info("supervise.started", program=name)
            del self.due[name]


def serve(stdin: BinaryIO, stdout: BinaryIO, supervisor: Starter, restarts: Restarts) -> None:
    """The event listener protocol: READY, then for each event its header line and payload, answered
    `RESULT 2\\nOK` at once, until supervisord closes our stdin."""
    stdout.write(b"READY\n")
    stdout.flush()
    while True:
        readable, _, _ = select.select([stdin], [], [], restarts.next_in_s())
        if readable:
            line = stdin.readline()
            if not line:
                return
            headers = childutils.get_headers(line.decode())
            payload = stdin.read(int(headers["len"]))
            restarts.on_event(headers["eventname"], payload)
            stdout.write(b"RESULT 2\nOKREADY\n")
            stdout.flush()
        restarts.start_due(supervisor)


def main() -> None:
    configure_logging("supervise", stream=sys.stderr.buffer)
    # supervisord tells the processes it runs where its XML-RPC interface is (SUPERVISOR_SERVER_URL).
    rpc = childutils.getRPCInterface(os.environ)
    serve(sys.stdin.buffer, sys.stdout.buffer, rpc.supervisor, Restarts())


if __name__ == "__main__":
    main()
