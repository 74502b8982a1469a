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
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS.parent))
if str(SCRIPTS) not in sys.path:  # loaded by path rather than run (tests/fixtures/stack.py's load_script)
    sys.path.append(str(SCRIPTS))

from infra_install import LOCAL, LOGS, ROOT, RUN, ensure_kafka_jars, ensure_packages, log, run  # noqa: E402
from infra_services import (  # noqa: E402
    answers,
    postgres_down,
    postgres_up,
    redis_down,
    redis_up,
    stop_pid,
    wait_until,
)

from shared.runtime.config import Settings  # noqa: E402
from shared.runtime.health import check_kafka, check_postgres_url, check_redis_url  # noqa: E402

# Kafka stays in this file: tests/unit/test_deploy.py reads KAFKA_VERSION here, and
# tests/fixtures/throwaway.py starts its brokers with start_kafka_broker. Installs are in infra_install.py,
# Redis and PostgreSQL in infra_services.py.
KAFKA_VERSION = "4.0.2"
KAFKA_CLUSTER_ID = "b3JkZXItZW5naW5lLWxvYw"  # fixed, so `format --ignore-formatted` is idempotent


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
    libs = ensure_kafka_jars(KAFKA_VERSION)
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
