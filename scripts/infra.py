"""Local infrastructure without Docker: Kafka (KRaft, jars from Maven Central: one node, or KAFKA_BROKERS=3
for a replicated cluster of three), PostgreSQL and Redis (Debian packages), and nginx as the one public
address.

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
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from aiokafka.client import AIOKafkaClient

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS.parent))
if str(SCRIPTS) not in sys.path:  # loaded by path rather than run (tests/fixtures/stack.py's load_script)
    sys.path.append(str(SCRIPTS))

from infra_install import (  # noqa: E402
    LOCAL,
    LOGS,
    ROOT,
    RUN,
    ensure_kafka_jars,
    ensure_packages,
    ensure_service_user,
    log,
    run,
)
from infra_services import (  # noqa: E402
    answers,
    postgres_down,
    postgres_up,
    redis_down,
    redis_up,
    stop_pid,
    wait_until,
)

from shared.runtime.cli import SERVICE_USER  # noqa: E402
from shared.runtime.config import Settings, min_insync_for, replication_for  # noqa: E402
from shared.runtime.health import check_postgres_url, check_redis_url  # noqa: E402

# Kafka stays in this file: tests/unit/test_deploy.py reads KAFKA_VERSION here, and
# tests/fixtures/throwaway.py starts its brokers with start_kafka_broker. Installs are in infra_install.py,
# Redis and PostgreSQL in infra_services.py.
KAFKA_VERSION = "4.0.2"
KAFKA_CLUSTER_ID = "b3JkZXItZW5naW5lLWxvYw"  # fixed, so `format --ignore-formatted` is idempotent


# ---------------------------------------------------------------- Kafka


class KafkaNode(NamedTuple):
    """One node of a local KRaft cluster: a broker and a controller in one process."""

    node_id: int
    port: int
    controller_port: int


def kafka_nodes(servers: list[str]) -> list[KafkaNode]:
    """The local nodes behind bootstrap `servers`, ids 1..n in their order, each node's controller on the
    port above its broker's (Settings' `local_kafka_servers` leaves that port free)."""
    nodes = []
    for node_id, server in enumerate(servers, 1):
        host, _, port = server.rpartition(":")
        if host not in ("127.0.0.1", "localhost"):
            raise SystemExit(f"[infra] Kafka at {server} does not answer and is not local: start it yourself")
        nodes.append(KafkaNode(node_id, int(port), int(port) + 1))
    return nodes


def render_kafka_config(
    port: int, controller_port: int, data: Path, *, node_id: int = 1, voters: dict[int, int] | None = None
) -> str:
    """infra/kafka/server.properties.in for one node. Without `voters` (node id -> controller port) it is a
    single node, a quorum of itself; with them, one node of that cluster: the same voters on every node,
    and replication and min.insync.replicas as Settings derives them for the cluster's size."""
    if voters:
        quorum = "controller.quorum.voters=" + ",".join(
            f"{voter}@127.0.0.1:{voter_port}" for voter, voter_port in sorted(voters.items())
        )
    else:
        quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}"
    replication = replication_for(len(voters or {1: controller_port}))
    values = {
        "NODE_ID": str(node_id),
        "QUORUM": quorum,
        "PORT": str(port),
        "CONTROLLER_PORT": str(controller_port),
        "DATA_DIR": str(data),
        "REPLICATION": str(replication),
        "MIN_ISR": str(min_insync_for(replication)),
    }
    text = (ROOT / "infra/kafka/server.properties.in").read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def start_kafka_broker(
    port: int,
    data: Path,
    config: Path,
    logs: Path,
    *,
    controller_port: int | None = None,
    node_id: int = 1,
    voters: dict[int, int] | None = None,
    heap_max: str = "512m",
    overrides: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Format (once) and start a KRaft broker+controller on 127.0.0.1:`port` (controller on
    `controller_port`, default port + 1), keeping its data in `data` and its logs in `logs`: a single node,
    or with `voters` node `node_id` of that cluster (render_kafka_config). `overrides` are appended to the
    rendered template. Returns the process without waiting: callers probe readiness their own way
    (`wait_until` here, asynchronously in tests/fixtures/throwaway.py, whose brokers a test may stop and
    start); a cluster's node answers only once a majority of its voters runs."""
    libs = ensure_kafka_jars(KAFKA_VERSION)
    for folder in (data, logs, config.parent):
        folder.mkdir(parents=True, exist_ok=True)
    text = render_kafka_config(port, controller_port or port + 1, data, node_id=node_id, voters=voters)
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
    # A single node bootstraps a dynamic quorum of itself; static voters are formatted as they are.
    quorum = [] if voters else ["--standalone"]
    run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            KAFKA_CLUSTER_ID,
            "-c",
            str(config),
            *quorum,
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


async def kafka_brokers(servers: list[str]) -> int:
    """How many brokers (registered and unfenced) the metadata of the first of `servers` to answer lists."""
    client = AIOKafkaClient(bootstrap_servers=servers, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(client.bootstrap(), 5)
        return len(client.cluster.brokers())
    finally:
        await client.close()


async def kafka_cluster_ready(servers: list[str], size: int) -> bool:
    """Whether each of `servers` lists `size` brokers. Each node learns of the others from the metadata log
    at its own pace (one may still lack a registration another has), and a client may ask any of them."""
    counts = await asyncio.gather(*(kafka_brokers([server]) for server in servers))
    return all(count >= size for count in counts)


def kafka_pidfile(node: KafkaNode, size: int) -> Path:
    """Where `up` notes a node's pid: kafka.pid for a single node, as ever; kafka-<id>.pid in a cluster."""
    return RUN / ("kafka.pid" if size == 1 else f"kafka-{node.node_id}.pid")


def kafka_started_pids() -> list[tuple[Path, int]]:
    """The Kafka nodes `up` started that still run (kafka.pid, or kafka-<node id>.pid for a cluster)."""
    started = []
    for pidfile in sorted(RUN.glob("kafka*.pid")):
        pid = int(pidfile.read_text())
        if Path(f"/proc/{pid}").exists():
            started.append((pidfile, pid))
    return started


def kafka_up(settings: Settings) -> bool:
    """Reuse the Kafka at KAFKA_BOOTSTRAP_SERVERS when it has KAFKA_BROKERS brokers, else start that many
    local nodes: one as ever (data in .local/kafka/data, logs in .local/logs), or a cluster, node n with
    its data in .local/kafka/node-n and its logs in .local/logs/kafka-n."""
    servers, size = settings.kafka_servers, settings.kafka_brokers
    found = 0
    with contextlib.suppress(Exception):  # not answering at all: start it
        found = asyncio.run(kafka_brokers(servers))
    if found >= size:
        log(f"Kafka answers at {','.join(servers)} with {found} broker(s): reusing it")
        return False
    if found:
        raise SystemExit(
            f"[infra] Kafka at {','.join(servers)} has {found} broker(s), KAFKA_BROKERS={size}: stop it first"
            " (`make infra-down`), or point KAFKA_BOOTSTRAP_SERVERS elsewhere"
        )
    nodes = kafka_nodes(servers)
    if len(nodes) != size:
        raise SystemExit(
            f"[infra] KAFKA_BROKERS={size} starts one node per server of KAFKA_BOOTSTRAP_SERVERS,"
            f" which names {len(nodes)}"
        )
    running = {pidfile for pidfile, _ in kafka_started_pids()}
    voters = {node.node_id: node.controller_port for node in nodes} if size > 1 else None
    for node in nodes:
        pidfile = kafka_pidfile(node, size)
        if size > 1 and pidfile in running:  # a node of this cluster still runs; the others rejoin it
            continue
        home = LOCAL / "kafka" if size == 1 else LOCAL / "kafka" / f"node-{node.node_id}"
        log(f"starting Kafka {KAFKA_VERSION} (KRaft) node {node.node_id} on 127.0.0.1:{node.port}")
        proc = start_kafka_broker(
            node.port,
            home / "data",
            home / "server.properties",
            LOGS if size == 1 else LOGS / f"kafka-{node.node_id}",
            controller_port=node.controller_port,
            node_id=node.node_id,
            voters=voters,
        )
        pidfile.write_text(str(proc.pid))

    wait_until(f"Kafka ({size} broker(s))", lambda: kafka_cluster_ready(servers, size), 90 + 30 * (size - 1))
    log(f"Kafka ready ({size} broker(s) in its metadata)")
    return True


def kafka_down(settings: Settings | None = None) -> None:
    """Stop the Kafka nodes `up` started: all of them, or only those `settings` describe (what a recorded
    `up` with the same environment started). A cluster's nodes are all told at once: a node stopped after
    the others would wait for a quorum that is gone."""
    pidfiles = None
    if settings is not None:
        pidfiles = {
            kafka_pidfile(node, settings.kafka_brokers) for node in kafka_nodes(settings.kafka_servers)
        }
    started = [
        (pidfile, pid) for pidfile, pid in kafka_started_pids() if pidfiles is None or pidfile in pidfiles
    ]
    for pidfile, pid in started:
        log(f"stopping Kafka {pidfile.stem} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for _, pid in started:
        stop_pid(pid, 30)
    for pidfile in RUN.glob("kafka*.pid") if pidfiles is None else pidfiles:
        pidfile.unlink(missing_ok=True)


# ---------------------------------------------------------------- commands


def up(record: Path | None) -> None:
    """Start what does not answer; with `record`, write the names of what this call started there."""
    settings = Settings()
    for folder in (RUN, LOGS):
        folder.mkdir(parents=True, exist_ok=True)
    ensure_packages()
    ensure_service_user(SERVICE_USER)
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
        if name == "kafka" and record is not None:
            kafka_down(Settings())  # this run's nodes, not another run's (a single node beside a cluster)
        else:
            STOPPERS[name]()


def status() -> None:
    settings = Settings()
    brokers = 0
    with contextlib.suppress(Exception):
        brokers = asyncio.run(kafka_brokers(settings.kafka_servers))
    state = "down" if not brokers else "up" if settings.kafka_brokers == 1 else f"up ({brokers} brokers)"
    print(f"kafka    {settings.kafka_bootstrap_servers:<40} {state}")
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
