"""Local infrastructure without Docker: Kafka (single-node KRaft, jars from Maven Central), PostgreSQL and
Redis (Debian packages), and nginx as the one public address.

    python scripts/infra.py up      # install what is missing, start what does not answer, wait until ready
    python scripts/infra.py down    # stop only what `up` started
    python scripts/infra.py status

Idempotent: whatever already answers at the configured URL is reused and left alone. Kafka and Redis keep
their data and logs under `.local/`; PostgreSQL runs as its own user in Debian's cluster (`pg_ctlcluster`),
because the server refuses to run as root and a clone's folder is often not readable by the postgres user.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.runtime.config import Settings  # noqa: E402
from shared.runtime.health import check_kafka, check_postgres_url, check_redis_url  # noqa: E402

LOCAL = ROOT / ".local"
RUN = LOCAL / "run"
LOGS = LOCAL / "logs"
KAFKA_VERSION = "4.0.2"
KAFKA_CLUSTER_ID = "b3JkZXItZW5naW5lLWxvYw"  # fixed, so `format --ignore-formatted` is idempotent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "order-engine"
KAFKA_LIBS = CACHE / f"kafka-{KAFKA_VERSION}" / "libs"
PG_VERSION_GLOB = "/usr/lib/postgresql/*/bin/pg_ctl"

# Probes of a broker that is still starting log every refused connection; the wait loop reports instead.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def log(msg: str) -> None:
    print(f"[infra] {msg}", flush=True)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)  # type: ignore[call-overload]


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


# ---------------------------------------------------------------- packages


_apt_updated = False


def apt_install(*packages: str) -> None:
    global _apt_updated
    if not _apt_updated:
        log("apt-get update")
        run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        _apt_updated = True
    log(f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # policy-rc.d 101 keeps the packages' own init scripts from starting servers we then fight with.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if created:
            policy.unlink()


def ensure_packages() -> None:
    missing = []
    if not list(Path("/").glob(PG_VERSION_GLOB.lstrip("/"))):
        missing += ["postgresql", "postgresql-contrib"]
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    if not shutil.which("nginx"):
        missing.append("nginx-light")
    if not shutil.which("prometheus"):  # only the tests use it: a real scrape of every service
        missing.append("prometheus")
    if not shutil.which("chromium"):  # only the tests use it: the console, in a real browser (Playwright)
        missing.append("chromium")
    if missing:
        apt_install(*missing)


def ensure_kafka_jars() -> Path:
    marker = KAFKA_LIBS / ".complete"
    if marker.exists():
        return KAFKA_LIBS
    log(f"resolving Kafka {KAFKA_VERSION} jars from Maven Central into {KAFKA_LIBS}")
    KAFKA_LIBS.mkdir(parents=True, exist_ok=True)
    run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(ROOT / "infra/kafka/pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-Dkafka.version={KAFKA_VERSION}",
            f"-DoutputDirectory={KAFKA_LIBS}",
        ]
    )
    marker.touch()
    return KAFKA_LIBS


# ---------------------------------------------------------------- Kafka


def kafka_started_pid() -> int | None:
    pidfile = RUN / "kafka.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        if Path(f"/proc/{pid}").exists():
            return pid
    return None


def start_kafka_broker(
    port: int,
    data: Path,
    config: Path,
    logs: Path,
    *,
    controller_port: int | None = None,
    heap_max: str = "512m",
    overrides: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Format (once) and start a single-node KRaft broker+controller on 127.0.0.1:`port` (controller on
    `controller_port`, default port + 1), keeping its data in `data` and its logs in `logs`; `overrides`
    are appended to infra/kafka/server.properties.in. Returns the process without waiting: callers probe
    readiness their own way (`wait_until` here, asynchronously in tests/fixtures/throwaway.py, whose
    brokers a test may stop and start)."""
    libs = ensure_kafka_jars()
    for folder in (data, logs, config.parent):
        folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "infra/kafka/server.properties.in").read_text()
    values = {"PORT": str(port), "CONTROLLER_PORT": str(controller_port or port + 1), "DATA_DIR": str(data)}
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    text += "".join(f"{key}={value}\n" for key, value in (overrides or {}).items())
    config.write_text(text)
    java = [
        "java",
        "-Xms256m",
        f"-Xmx{heap_max}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs}",
        f"-Dlog4j2.configurationFile={ROOT / 'infra/kafka/log4j2.yaml'}",
        "-cp",
        f"{libs}/*",
    ]
    run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            KAFKA_CLUSTER_ID,
            "-c",
            str(config),
            "--standalone",
            "--ignore-formatted",
        ],
        stdout=subprocess.DEVNULL,
    )
    with open(logs / "kafka.out", "ab") as out:
        return subprocess.Popen(
            [*java, "kafka.Kafka", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def kafka_up(settings: Settings) -> bool:
    servers = settings.kafka_servers
    if answers(lambda: check_kafka(servers)):
        log(f"Kafka answers at {servers[0]}: reusing it")
        return False
    host, _, port = servers[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"[infra] Kafka at {servers[0]} does not answer and is not local: start it yourself")
    data = LOCAL / "kafka" / "data"
    log(f"starting Kafka {KAFKA_VERSION} (KRaft) on {servers[0]}")
    proc = start_kafka_broker(int(port), data, LOCAL / "kafka" / "server.properties", LOGS)
    (RUN / "kafka.pid").write_text(str(proc.pid))
    wait_until("Kafka", lambda: check_kafka(servers), 90)
    log("Kafka ready (answers metadata)")
    return True


def kafka_down() -> None:
    pid = kafka_started_pid()
    if pid is None:
        return
    log(f"stopping Kafka (pid {pid})")
    stop_pid(pid, 30)
    (RUN / "kafka.pid").unlink(missing_ok=True)


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


def as_postgres(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, cwd="/")


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
    tune_cluster(port)
    wait_until("PostgreSQL", lambda: check_postgres_url(settings.database_url), 30)
    log("PostgreSQL ready")
    return started


def provision_database(settings: Settings) -> None:
    """Create the role and database of DATABASE_URL (the seed's user/password/order_engine by default)."""
    url = urlsplit(settings.database_url)
    user, password, db = url.username or "user", url.password or "", url.path.lstrip("/") or "order_engine"
    deadline = time.monotonic() + 30
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(url.port or 5432)]).returncode:
        if time.monotonic() > deadline:
            raise SystemExit("[infra] PostgreSQL did not accept connections")
        time.sleep(0.3)
    quoted_pw = password.replace("'", "''")
    sql = (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN "
        f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{quoted_pw}' CREATEDB; ELSE "
        f"ALTER ROLE \"{user}\" LOGIN PASSWORD '{quoted_pw}' CREATEDB; END IF; END $$;"
    )
    as_postgres(["psql", "-q", "-p", str(url.port or 5432), "-c", sql])
    exists = as_postgres(
        [
            "psql",
            "-tAq",
            "-p",
            str(url.port or 5432),
            "-c",
            f"SELECT 1 FROM pg_database WHERE datname = '{db}'",
        ]
    ).stdout.strip()
    if not exists:
        log(f"creating database {db}")
        as_postgres(["createdb", "-p", str(url.port or 5432), "-O", user, db])


def tune_cluster(port: int) -> None:
    """Settings of the local cluster this script runs (never of a Postgres it merely reuses): autovacuum
    looks every 5 s instead of every minute, so the outbox's and the orders' dead rows (migration 008) are
    cleared while a load runs, not after it."""
    as_postgres(["psql", "-q", "-p", str(port), "-c", "ALTER SYSTEM SET autovacuum_naptime = '5s'"])
    as_postgres(["psql", "-q", "-p", str(port), "-c", "SELECT pg_reload_conf()"])


def postgres_down() -> None:
    marker = RUN / "postgres.started"
    if not marker.exists():
        return
    version, name = marker.read_text().split()
    log(f"stopping PostgreSQL cluster {version}/{name}")
    subprocess.run(["pg_ctlcluster", version, name, "stop", "-m", "fast"], check=False)
    marker.unlink()


# ---------------------------------------------------------------- commands


def up(record: Path | None) -> None:
    """Start what does not answer; with `record`, write the names of what this call started there."""
    settings = Settings()
    for folder in (RUN, LOGS):
        folder.mkdir(parents=True, exist_ok=True)
    ensure_packages()
    started = [
        name
        for name, start in (("postgres", postgres_up), ("redis", redis_up), ("kafka", kafka_up))
        if start(settings)
    ]
    if record is not None:
        record.write_text("\n".join(started))


STOPPERS = {"kafka": kafka_down, "redis": redis_down, "postgres": postgres_down}


def down(record: Path | None) -> None:
    """Stop what `up` started: everything it ever started here, or only what one recorded call did."""
    names = list(STOPPERS)
    if record is not None:
        names = list(reversed(record.read_text().split())) if record.exists() else []
        record.unlink(missing_ok=True)
    for name in names:
        STOPPERS[name]()


def status() -> None:
    settings = Settings()
    print(
        f"kafka    {settings.kafka_bootstrap_servers:<40} "
        f"{'up' if answers(lambda: check_kafka(settings.kafka_servers)) else 'down'}"
    )
    print(
        f"postgres {settings.database_url:<40} "
        f"{'up' if answers(lambda: check_postgres_url(settings.database_url)) else 'down'}"
    )
    print(
        f"redis    {settings.redis_url:<40} "
        f"{'up' if answers(lambda: check_redis_url(settings.redis_url)) else 'down'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--record", type=Path, help="up: note what this call started; down: stop only that")
    args = parser.parse_args()
    if args.command == "status":
        status()
    else:
        {"up": up, "down": down}[args.command](args.record)


if __name__ == "__main__":
    main()
