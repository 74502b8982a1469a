"""The generator's ceiling: the same workers, plan and bodies, offered to a trivial endpoint on this box (an
nginx of the bench's own that answers every POST 202 with a fixed orderId, as cheap a server as there is).
What it achieves there bounds what the bench can measure; it must be at least twice the best rate the
engine reached, or the engine's figures say more about the generator than about the engine."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from benchmarks.bench.loadgen import LoadPlan, LoadResult, run_load
from tests.fixtures.stack import ROOT, free_port

CONFIG = """\
{user}
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
daemon off;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 202 '{{"orderId":"00000000-0000-4000-8000-000000000000","status":"pending"}}';
        }}
    }}
}}
"""


@contextmanager
def trivial_server() -> Iterator[int]:
    """An nginx answering 202 to anything on a free port; yields the port."""
    port = free_port()
    run = ROOT / ".local" / "bench" / f"selfcheck-{port}"
    run.mkdir(parents=True, exist_ok=True)
    conf = Path(run / "nginx.conf")
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(CONFIG.format(user=user, run=run, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(conf)], stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the self-check nginx did not start: see {run}/error.log") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(run, ignore_errors=True)


async def generator_ceiling(plan: LoadPlan) -> LoadResult:
    """`plan` (its host and port replaced) offered to the trivial server; nothing is followed."""
    with trivial_server() as port:
        return await run_load(replace(plan, host="127.0.0.1", port=port, ws_every=0, ws_max=0))
