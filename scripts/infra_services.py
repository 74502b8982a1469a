"""Starting and stopping the local Redis and PostgreSQL (Debian's cluster, run as the postgres user), and
the helpers every service start shares: probing until a service answers, stopping a process by its pid."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from infra_install import LOCAL, LOGS, RUN, log, run

from shared.runtime.config import Settings
from shared.runtime.health import check_postgres_url, check_redis_url

# Probes of a broker that is still starting log every refused connection; the wait loop reports instead.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def wait_until(what: str, probe: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if asyncio.run(probe()):  # type: ignore[operator]
                return
        except Exception as exc:  # a probe that raises just means "not yet"
            last = exc
        time.sleep(0.3)
    raise SystemExit(f"[infra] {what} did not become ready within {timeout:.0f}s (last error: {last})")


def answers(probe: object) -> bool:
    try:
        return bool(asyncio.run(probe()))  # type: ignore[operator]
    except Exception:
        return False


def stop_pid(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}/status").exists() else ""
        if "State:\tZ" in status:
            break
        time.sleep(0.2)
    else:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)


# ---------------------------------------------------------------- Redis


def redis_up(settings: Settings) -> bool:
    if answers(lambda: check_redis_url(settings.redis_url)):
        log(f"Redis answers at {settings.redis_url}: reusing it")
        return False
    host, port = settings.redis_address
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"[infra] Redis at {settings.redis_url} does not answer and is not local")
    data = LOCAL / "redis"
    data.mkdir(parents=True, exist_ok=True)
    log(f"starting Redis on {host}:{port}")
    run(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--daemonize",
            "yes",
            "--pidfile",
            str(RUN / "redis.pid"),
            "--logfile",
            str(LOGS / "redis.log"),
            "--save",
            "60 1000",
            "--appendonly",
            "no",
        ]
    )
    (RUN / "redis.started").touch()
    wait_until("Redis", lambda: check_redis_url(settings.redis_url), 20)
    log("Redis ready")
    return True


def redis_down() -> None:
    if not (RUN / "redis.started").exists():
        return
    pidfile = RUN / "redis.pid"
    if pidfile.exists():
        log("stopping Redis")
        stop_pid(int(pidfile.read_text()), 20)
    (RUN / "redis.started").unlink(missing_ok=True)


# ---------------------------------------------------------------- PostgreSQL


def as_postgres(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`cmd` as the postgres OS user (the cluster's superuser, by peer authentication); `stdin` is fed to it,
    which is how psql interpolates `-v` variables (it does not in `-c`)."""
    return run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, cwd="/", input=stdin)


# The role of DATABASE_URL, created or brought up to date. Its name and password reach the server only as
# psql variables, quoted by psql (:'var') and by format's %I and %L: a name or password holding quotes,
# semicolons or backslashes stays one identifier and one literal, never SQL.
PROVISION_ROLE = r"""
SELECT format(
    CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')
         THEN 'ALTER ROLE %I LOGIN PASSWORD %L CREATEDB'
         ELSE 'CREATE ROLE %I LOGIN PASSWORD %L CREATEDB' END,
    :'role', :'password') \gexec
"""


def postgres_up(settings: Settings) -> bool:
    if answers(lambda: check_postgres_url(settings.database_url)):
        log("PostgreSQL answers at DATABASE_URL: reusing it")
        return False
    host, port = settings.database_address
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit("[infra] PostgreSQL at DATABASE_URL does not answer and is not local")
    clusters = run(["pg_lsclusters", "--no-header"], capture_output=True).stdout.split()
    if not clusters:
        version = sorted(p.parent.parent.name for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
        log(f"creating PostgreSQL {version} cluster 'main' on port {port}")
        run(["pg_createcluster", version, "main", "--port", str(port)], stdout=subprocess.DEVNULL)
        clusters = run(["pg_lsclusters", "--no-header"], capture_output=True).stdout.split()
    version, name, cluster_port, status = clusters[0], clusters[1], clusters[2], clusters[3]
    if cluster_port != str(port):
        raise SystemExit(
            f"[infra] cluster {version}/{name} listens on {cluster_port}, DATABASE_URL wants {port}"
        )
    started = status != "online"
    if started:
        log(f"starting PostgreSQL cluster {version}/{name}")
        run(["pg_ctlcluster", version, name, "start"])
        (RUN / "postgres.started").write_text(f"{version} {name}")
    provision_database(settings)
    tune_cluster(port, version, name)
    wait_until("PostgreSQL", lambda: check_postgres_url(settings.database_url), 30)
    log("PostgreSQL ready")
    return started


def provision_database(settings: Settings) -> None:
    """Create the role and database of DATABASE_URL (user/password/order_engine by default)."""
    url = urlsplit(settings.database_url)
    # percent-decoded, as asyncpg reads them
    user = unquote(url.username or "user")
    password = unquote(url.password or "")
    db = unquote(url.path.lstrip("/")) or "order_engine"
    deadline = time.monotonic() + 30
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(url.port or 5432)]).returncode:
        if time.monotonic() > deadline:
            raise SystemExit("[infra] PostgreSQL did not accept connections")
        time.sleep(0.3)
    port = str(url.port or 5432)
    as_postgres(
        [
            "psql",
            "-qX",
            "-p",
            port,
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"role={user}",
            "-v",
            f"password={password}",
        ],
        PROVISION_ROLE,
    )
    exists = as_postgres(
        ["psql", "-qtAX", "-p", port, "-v", "ON_ERROR_STOP=1", "-v", f"db={db}"],
        "SELECT 1 FROM pg_database WHERE datname = :'db'",
    ).stdout.strip()
    if not exists:
        log(f"creating database {db}")
        as_postgres(["createdb", "-p", port, "-O", user, "--", db])
    # Its view, in this database (a superuser's step; the library itself is loaded by tune_cluster).
    as_postgres(
        [
            "psql",
            "-q",
            "-p",
            port,
            "-d",
            db,
            "-c",
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        ]
    )


def tune_cluster(port: int, version: str, name: str) -> None:
    """Settings of the local cluster this script runs (never of a Postgres it merely reuses): autovacuum
    looks every 5 s instead of every minute, so the outbox's and the orders' dead rows (migration 008) are
    cleared while a load runs, not after it; 300 connections, for the test stacks `make test` runs side by
    side (each process of a stack holds a pool); pg_stat_statements loaded, so what each statement costs can
    be read (docs/operations.md). The last two need a restart, once."""
    for sql in (
        "ALTER SYSTEM SET autovacuum_naptime = '5s'",
        "ALTER SYSTEM SET max_connections = 300",
        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
    ):
        as_postgres(["psql", "-q", "-p", str(port), "-c", sql])
    as_postgres(["psql", "-q", "-p", str(port), "-c", "SELECT pg_reload_conf()"])
    pending = as_postgres(
        ["psql", "-qtA", "-p", str(port), "-c", "SELECT bool_or(pending_restart) FROM pg_settings"]
    )
    if pending.stdout.strip() == "t":
        log(f"restarting PostgreSQL cluster {version}/{name} for its new settings")
        run(["pg_ctlcluster", version, name, "restart"])


def postgres_down() -> None:
    marker = RUN / "postgres.started"
    if not marker.exists():
        return
    version, name = marker.read_text().split()
    log(f"stopping PostgreSQL cluster {version}/{name}")
    subprocess.run(["pg_ctlcluster", version, name, "stop", "-m", "fast"], check=False)
    marker.unlink()
