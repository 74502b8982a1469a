"""The supervisord event listener that never leaves a program FATAL: when it starts a program again, and
its side of supervisord's event listener protocol."""

from __future__ import annotations

import itertools
import os
import xmlrpc.client
from pathlib import Path

import pytest

from shared.runtime import cli
from shared.runtime.cli import ROOT, procfile_programs, render_supervisor_config
from shared.runtime.supervise import FIRST_DELAY_S, MAX_DELAY_S, Restarts, delay_s, serve


class Supervisor:
    """supervisord's XML-RPC `supervisor` namespace, as far as the listener calls it."""

    def __init__(self, *failures: Exception) -> None:
        self.started: list[str] = []
        self._failures = list(failures)

    def startProcess(self, name: str, wait: bool) -> bool:  # supervisord's name for it
        if self._failures:
            raise self._failures.pop(0)
        self.started.append(name)
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(name: str, from_state: str = "BACKOFF") -> bytes:
    return f"processname:{name} groupname:{name} from_state:{from_state} tries:3".encode()


def test_the_delay_doubles_with_each_fatal_in_a_row_up_to_the_ceiling() -> None:
    delays = [delay_s(n) for n in range(1, 10)]
    assert delays[0] == FIRST_DELAY_S and delays[1] == 2 * FIRST_DELAY_S
    assert delays == sorted(delays) and delays[-1] == MAX_DELAY_S == max(delays)


def test_a_fatal_program_is_started_again_after_its_delay_and_forever() -> None:
    clock, supervisor = Clock(), Supervisor()
    restarts = Restarts(clock)
    for fatal in range(1, 12):  # far past the ceiling: it never gives up
        restarts.on_event("PROCESS_STATE_FATAL", state("router"))
        assert restarts.next_in_s() == delay_s(fatal)
        clock.now += delay_s(fatal) - 0.01
        restarts.start_due(supervisor)
        assert supervisor.started == ["router:router"] * (fatal - 1), "not before its time"
        clock.now += 0.01
        restarts.start_due(supervisor)
        assert supervisor.started == ["router:router"] * fatal
    assert restarts.next_in_s() is None


def test_a_program_that_reached_running_starts_again_from_the_first_delay() -> None:
    restarts = Restarts(Clock())
    for _ in range(4):
        restarts.on_event("PROCESS_STATE_FATAL", state("router"))
    restarts.on_event("PROCESS_STATE_RUNNING", state("router", "STARTING"))
    assert restarts.next_in_s() is None, "started meanwhile (by hand): nothing owed"
    restarts.on_event("PROCESS_STATE_FATAL", state("router"))
    assert restarts.next_in_s() == FIRST_DELAY_S


def test_a_refused_start_is_dropped_and_an_unreachable_supervisord_is_asked_again() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    restarts.on_event("PROCESS_STATE_FATAL", state("ingress"))
    clock.now += FIRST_DELAY_S
    refused = Supervisor(xmlrpc.client.Fault(60, "ALREADY_STARTED: ingress"))
    restarts.start_due(refused)
    assert restarts.next_in_s() is None and refused.started == []

    restarts.on_event("PROCESS_STATE_FATAL", state("ingress"))
    clock.now += delay_s(2)
    away = Supervisor(ConnectionRefusedError())
    restarts.start_due(away)
    assert away.started == [] and restarts.next_in_s() == FIRST_DELAY_S
    clock.now += FIRST_DELAY_S
    restarts.start_due(away)
    assert away.started == ["ingress:ingress"]


def test_the_listener_answers_each_event_at_once_and_starts_what_is_due() -> None:
    supervisor = Supervisor()
    restarts = Restarts(itertools.count(0, 100).__next__)  # every reading is 100 s later: always due
    payload = state("executor")
    header = (
        "ver:3.0 server:supervisor serial:7 pool:supervise poolserial:7"
        f" eventname:PROCESS_STATE_FATAL len:{len(payload)}\n"
    )
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    os.write(stdin_w, header.encode() + payload)
    os.close(stdin_w)  # supervisord goes away after this event: the listener returns
    with open(stdin_r, "rb") as stdin, open(stdout_w, "wb") as stdout:
        serve(stdin, stdout, supervisor, restarts)
    with open(stdout_r, "rb") as written:
        assert written.read() == b"READY\nRESULT 2\nOKREADY\n"
    assert supervisor.started == ["executor:executor"]


def test_the_rendered_configuration_runs_the_listener_on_fatal_and_running(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("worker: python -c pass\n")
    config = render_supervisor_config(procfile, tmp_path).read_text()
    listener = config.split("[eventlistener:supervise]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert "command=python -m shared.runtime.supervise" in listener
    assert "events=PROCESS_STATE_FATAL,PROCESS_STATE_RUNNING" in listener
    assert "autorestart=true" in listener


def test_started_by_root_every_program_runs_as_the_service_user_but_nginx_which_drops_root_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kills: `user=` on nginx too (its master could not open its logs as that user, so the proxy never
    started under `make run`), and `user=` on no program (the services as root)."""
    monkeypatch.setattr(cli, "service_user", lambda *needed: cli.SERVICE_USER)
    monkeypatch.setattr(cli, "ROOT", tmp_path)  # Prometheus's data folder is made (and handed over) here
    monkeypatch.setattr(cli.shutil, "chown", lambda path, user: None)
    config = render_supervisor_config(ROOT / "Procfile", tmp_path / "local").read_text()
    users = {
        section.split("]", 1)[0]: [line for line in section.splitlines() if line.startswith("user=")]
        for section in config.split("[program:")[1:]
    }
    assert users == {
        name: [] if name in cli.DROP_ROOT_THEMSELVES else [f"user={cli.SERVICE_USER}"]
        for name in procfile_programs(ROOT / "Procfile")
    }
    assert "proxy" in users and "ingress" in users
