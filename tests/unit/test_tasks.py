"""Essential tasks: a process whose essential task ends, other than by a cancellation somebody asked for,
exits with EXIT_STATUS, after its graceful shutdown if it has one, and however that shutdown ends. Each case
runs in a process of its own (the process is what exits)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import orjson
import pytest

from shared.runtime.cli import ROOT
from shared.runtime.tasks import EXIT_STATUS

# The process under test. argv: how its essential task ends, and how the process meets a SIGTERM:
# "none" (no handler: SIGTERM's default action), "graceful" (a server's shutdown, then a normal exit),
# "uvicorn" (a shutdown whose end re-raises the SIGTERM with its default action, as uvicorn does),
# "deaf" (a handler that never shuts anything down).
PROGRAM = textwrap.dedent(
    """
    import asyncio, signal, sys
    from shared.runtime.logging import configure_logging
    from shared.runtime.tasks import cancel_and_wait, essential, exit_if_essential_died

    ending, on_sigterm = sys.argv[1], sys.argv[2]
    configure_logging("test")

    async def doomed(never: asyncio.Future[None]) -> None:
        await asyncio.sleep(0.01)
        if ending == "raises":
            raise RuntimeError("boom")
        if ending in ("leaks a cancellation", "is stopped"):
            await never
        # "returns"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        if on_sigterm in ("graceful", "uvicorn"):
            loop.add_signal_handler(signal.SIGTERM, stopping.set)
        elif on_sigterm == "deaf":
            loop.add_signal_handler(signal.SIGTERM, lambda: None)
        never = loop.create_future()
        task = essential(asyncio.create_task(doomed(never), name="doomed"), grace_s=1.0)
        await asyncio.sleep(0.1)
        if ending == "leaks a cancellation":  # something it awaits is cancelled; nobody cancels the task
            never.cancel()
        elif ending == "is stopped":
            await cancel_and_wait(task)
            return
        await asyncio.wait_for(stopping.wait(), 10)
        print("shut down gracefully", flush=True)
        if on_sigterm == "uvicorn":
            exit_if_essential_died()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    asyncio.run(main())
    """
)


def run(ending: str, on_sigterm: str) -> tuple[int, list[dict[str, object]], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, ending, on_sigterm],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    lines = done.stdout.decode().splitlines()
    logged = [orjson.loads(line) for line in lines if line.startswith("{")]
    return done.returncode, logged, "\n".join(lines) + done.stderr.decode()


def deaths(logged: list[dict[str, object]]) -> list[dict[str, object]]:
    return [line for line in logged if line["event"] == "task.essential_died"]


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        ("raises", "RuntimeError('boom')"),
        ("returns", "returned"),
        ("leaks a cancellation", "cancelled, though nobody asked it to stop"),
    ],
)
def test_a_process_whose_essential_task_dies_exits_with_the_status_and_says_why(
    ending: str, reason: str
) -> None:
    code, logged, output = run(ending, "none")
    assert code == EXIT_STATUS, output
    assert [(line["task"], line["error"]) for line in deaths(logged)] == [("doomed", reason)], output


def test_an_essential_task_stopped_by_its_owner_has_not_died() -> None:
    code, logged, output = run("is stopped", "none")
    assert code == 0, output
    assert deaths(logged) == [], output


def test_a_process_with_a_graceful_shutdown_runs_it_and_still_exits_with_the_status() -> None:
    code, _, output = run("raises", "graceful")
    assert "shut down gracefully" in output
    assert code == EXIT_STATUS, output


def test_a_shutdown_that_ends_by_re_raising_sigterm_still_exits_with_the_status() -> None:
    code, _, output = run("raises", "uvicorn")
    assert "shut down gracefully" in output
    assert code == EXIT_STATUS, f"not {-signal.SIGTERM} (killed by the re-raised SIGTERM): {output}"


def test_a_shutdown_that_never_comes_is_cut_short_after_the_grace_period() -> None:
    code, logged, output = run("raises", "deaf")
    assert code == EXIT_STATUS, output
    assert [line["event"] for line in logged if line["event"] == "task.exit_forced"], output
