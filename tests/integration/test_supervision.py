"""`make run` under supervisord: a service that dies is started again and the engine goes on taking and
finishing orders (under honcho, one exit stopped every process)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from shared.runtime.cli import ROOT, render_supervisor_config, service_user
from shared.runtime.config import Settings
from shared.runtime.priority import autogroup_nice
from shared.store.db import connect
from tests.fixtures.orders import client_ip, order_body, wait_status
from tests.fixtures.stack import Stack, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

SERVICES = ("ingress", "router", "executor", "notifier")


class Supervised:
    def __init__(self, stack: Stack, config: Path, popen: subprocess.Popen[bytes]) -> None:
        self.stack, self.config, self.popen = stack, config, popen

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout.strip()

    def pid(self, name: str) -> int:
        out = self.ctl("pid", name)
        return int(out) if out.isdigit() else 0


@pytest.fixture
async def supervised(infrastructure: object) -> AsyncIterator[Supervised]:
    # database, topics and proxy; the services are supervisord's
    async with running_stack(services=()) as stack:
        local = ROOT / ".local" / "test-supervisor" / stack.run_id
        config = render_supervisor_config(ROOT / "Procfile", local, only=SERVICES)
        with supervisord(config, stack.env, local / "supervisord.out") as popen:
            yield Supervised(stack, config, popen)


@contextmanager
def supervisord(config: Path, environ: dict[str, str], out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """supervisord running `config` (this virtualenv's programs first on the PATH, its output to `out`) for
    the block, then stopped as Ctrl-C would, or killed with its programs if it does not stop."""
    env = {**environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"}
    with open(out, "wb") as output:
        popen = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(config)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield popen
    finally:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)


async def ready(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=2.0) as client:
        for port in (stack.settings.ingress_port, stack.settings.notifier_port):

            async def answers(port: int = port) -> bool:
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(answers, timeout=60, interval=0.2, what=f"/ready on {port}")


async def backends_niceness(
    stack: Stack, pids: dict[str, int]
) -> tuple[dict[str, set[int]], int, dict[str, set[int | None]]]:
    """The niceness of the Postgres backends that serve each named process's pool, that of a backend nobody
    reniced (this test's own connection's), and the niceness of those backends' autogroups."""
    conn = await connect(stack.settings.database_url, jsonb=False)
    try:
        found = {
            name: await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", f"order-engine pid {pid}"
            )
            for name, pid in pids.items()
        }
        untouched = os.getpriority(os.PRIO_PROCESS, conn.get_server_pid())
    finally:
        await conn.close()
    return (
        {name: {os.getpriority(os.PRIO_PROCESS, r["pid"]) for r in rows} for name, rows in found.items()},
        untouched,
        {name: {autogroup_nice(r["pid"]) for r in rows} for name, rows in found.items()},
    )


async def place(stack: Stack) -> str:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        response = await client.post(
            "/api/orders/execute", json=order_body(), headers={"X-Forwarded-For": client_ip()}
        )
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


@pytest.mark.parametrize("victim", ["router", "executor"])
async def test_a_killed_service_is_restarted_and_orders_still_finish(
    supervised: Supervised, victim: str
) -> None:
    stack = supervised.stack
    await ready(stack)
    assert await wait_status(stack, await place(stack)) == "confirmed"
    before = {name: supervised.pid(name) for name in SERVICES}
    assert all(before.values()), before
    # The stages yield the cores to ingress (STAGE_NICE), their consumer threads too; ingress does not.
    priority = {name: os.getpriority(os.PRIO_PROCESS, pid) for name, pid in before.items()}
    for stage in ("router", "executor"):
        threads = [int(t.name) for t in Path(f"/proc/{before[stage]}/task").iterdir()]
        assert len(threads) > 1, threads
        assert {os.getpriority(os.PRIO_PROCESS, t) for t in threads} == {
            priority["ingress"] + Settings().stage_nice
        }, stage
    assert priority["ingress"] == priority["notifier"] == os.getpriority(os.PRIO_PROCESS, 0)
    # Started by root, the services run as the unprivileged SERVICE_USER (where it can read the checkout).
    user = service_user(ROOT / ".venv" / "bin" / "python", ROOT / "shared" / "__init__.py")
    owners = {name: Path(f"/proc/{pid}").stat().st_uid for name, pid in before.items()}
    assert owners == dict.fromkeys(SERVICES, pwd.getpwnam(user).pw_uid if user else os.geteuid())
    # So does the SQL they send: their Postgres backends (the server is on this machine) run at their
    # niceness, and ingress's at the server's own. As another user than the server's, the OS refuses them
    # that, and every backend keeps the server's niceness.
    backends, untouched, groups = await backends_niceness(stack, before)
    assert untouched < priority["router"], untouched
    lowered = {"router": priority["router"], "executor": priority["executor"]} if user is None else {}
    assert backends == {name: {lowered.get(name, untouched)} for name in SERVICES}
    # With autogroups, each backend (it leads its own session) is ranked by its group's niceness: the
    # stages' are lowered too. The services share supervisord's session and group, which nobody renices
    # (that would lower ingress with the stages).
    if autogroup_nice(os.getpid()) is not None:
        assert groups == {name: {lowered.get(name, 0)} for name in SERVICES}
        assert {autogroup_nice(pid) for pid in before.values()} == {autogroup_nice(supervised.popen.pid)}

    os.kill(before[victim], signal.SIGKILL)

    async def restarted() -> int | None:
        pid = supervised.pid(victim)
        return pid if pid not in (0, before[victim]) else None

    await wait_for(restarted, timeout=30, interval=0.2, what=f"{victim} restarted")
    # The others were left alone, and an order placed now goes all the way through the new process.
    assert {name: supervised.pid(name) for name in SERVICES if name != victim} == {
        name: pid for name, pid in before.items() if name != victim
    }
    assert await wait_status(stack, await place(stack), timeout=90) == "confirmed"
    log = (supervised.config.parent / "logs" / "supervisord.log").read_text()
    assert f"exited: {victim} (terminated by SIGKILL; not expected)" in log, log[-2000:]


async def test_a_program_that_keeps_failing_is_started_again_after_it_goes_fatal(tmp_path: Path) -> None:
    """supervisord alone leaves a program FATAL for good after its start retries; the `supervise` event
    listener of the rendered configuration starts it again, after a delay that grows to a ceiling."""
    procfile = tmp_path / "Procfile"
    procfile.write_text('failing: python -c "raise SystemExit(3)"\n')
    config = render_supervisor_config(procfile, tmp_path / "local")
    log = tmp_path / "local" / "logs" / "supervisord.log"
    out = tmp_path / "supervisord.out"
    with supervisord(config, dict(os.environ), out):

        def fatal_twice() -> bool:
            return log.exists() and log.read_text().count("gave up: failing entered FATAL state") >= 2

        await wait_for(fatal_twice, timeout=90, interval=0.2, what="the failing program FATAL twice")
        # supervisord never starts a FATAL program by itself: the listener did.
        after_first = log.read_text().split("gave up: failing entered FATAL state", 1)[1]
        assert "spawned: 'failing'" in after_first, out.read_text()[-2000:]
