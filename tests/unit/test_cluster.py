"""The three-broker option, without starting a broker: the node configurations `scripts/infra.py` renders
(tests/integration/test_cluster.py starts them), the replication Settings derive from KAFKA_BROKERS, the
topic configs `ensure_topics` asks for, the compose override, and the chaos table's `pause s` column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import ValidationError

from shared.messaging import topics
from shared.runtime.config import Settings
from tests.chaos.checker import longest_pause
from tests.chaos.history import History, Post
from tests.fixtures.stack import load_script

ROOT = Path(__file__).resolve().parents[2]
KAFKA_ENV = (
    "KAFKA_BROKERS",
    "KAFKA_BOOTSTRAP_SERVERS",
    "TOPIC_REPLICATION_FACTOR",
    "MIN_INSYNC_REPLICAS",
)

# infra/kafka/server.properties.in as a single node rendered it before the cluster option (ports 9092/9093).
SINGLE_NODE_BEFORE = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.quorum.bootstrap.servers": "127.0.0.1:9093",
    "listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
    "advertised.listeners": "PLAINTEXT://127.0.0.1:9092",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "log.dirs": "/data/kafka",
    "num.partitions": "6",
    "default.replication.factor": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "true",
    "log.retention.hours": "24",
    "log.segment.bytes": "67108864",
}


@pytest.fixture(scope="module")
def infra() -> ModuleType:
    return load_script("infra")


@pytest.fixture(autouse=True)
def no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings under test come from each test, not from the shell that runs it."""
    for name in KAFKA_ENV:
        monkeypatch.delenv(name, raising=False)


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    found: dict[str, str] = {}
    for key, value in pairs:
        assert key not in found, f"{key} set twice"
        found[key] = value
    return found


def cluster_configs(infra: ModuleType) -> list[dict[str, str]]:
    """What `KAFKA_BROKERS=3 scripts/infra.py up` renders for its three nodes."""
    nodes = infra.kafka_nodes(Settings(_env_file=None, kafka_brokers=3).kafka_servers)
    voters = {node.node_id: node.controller_port for node in nodes}
    return [
        properties(
            infra.render_kafka_config(
                node.port,
                node.controller_port,
                Path(f"/data/node-{node.node_id}"),
                node_id=node.node_id,
                voters=voters,
            )
        )
        for node in nodes
    ]


def test_one_node_renders_as_before(infra: ModuleType) -> None:
    """KAFKA_BROKERS=1 keeps today's broker. The only new keys are min.insync.replicas=1, Kafka's default,
    and nothing else: a changed value or a dropped key fails here."""
    rendered = properties(infra.render_kafka_config(9092, 9093, Path("/data/kafka")))
    assert rendered == {**SINGLE_NODE_BEFORE, "min.insync.replicas": "1"}


def test_three_nodes_are_distinct_and_vote_in_one_quorum(infra: ModuleType) -> None:
    configs = cluster_configs(infra)
    assert [c["node.id"] for c in configs] == ["1", "2", "3"]
    for key in ("listeners", "advertised.listeners", "log.dirs"):
        assert len({c[key] for c in configs}) == 3, f"{key} shared between nodes"
    voters = {c["controller.quorum.voters"] for c in configs}
    assert voters == {"1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"}
    assert all("controller.quorum.bootstrap.servers" not in c for c in configs)
    for c in configs:  # each node's own controller listener is the one the others vote for
        node = c["node.id"]
        assert f"{node}@{c['listeners'].split('CONTROLLER://')[1]}" in c["controller.quorum.voters"]
    ports = [int(address.rsplit(":", 1)[1]) for c in configs for address in c["listeners"].split(",")]
    assert len(set(ports)) == 6


def test_three_nodes_replicate_every_topic_their_own_included(infra: ModuleType) -> None:
    for c in cluster_configs(infra):
        assert c["default.replication.factor"] == "3"
        assert c["offsets.topic.replication.factor"] == "3"
        assert c["transaction.state.log.replication.factor"] == "3"
        assert c["share.coordinator.state.topic.replication.factor"] == "3"
        assert c["min.insync.replicas"] == "2"  # faust's own topics get it from here
        assert c["transaction.state.log.min.isr"] == "2"
        assert c["share.coordinator.state.topic.min.isr"] == "2"


def test_nodes_come_from_the_bootstrap_servers(infra: ModuleType) -> None:
    servers = Settings(_env_file=None, kafka_brokers=3).kafka_servers
    assert servers == ["127.0.0.1:9092", "127.0.0.1:9094", "127.0.0.1:9096"]
    assert [tuple(node) for node in infra.kafka_nodes(servers)] == [
        (1, 9092, 9093),
        (2, 9094, 9095),
        (3, 9096, 9097),
    ]
    with pytest.raises(SystemExit, match="not local"):
        infra.kafka_nodes(["kafka.example:9092"])


@pytest.mark.parametrize(
    ("brokers", "replication", "min_insync", "servers"),
    [
        (1, 1, 1, ["127.0.0.1:9092"]),
        (3, 3, 2, ["127.0.0.1:9092", "127.0.0.1:9094", "127.0.0.1:9096"]),
    ],
)
def test_replication_follows_the_cluster_size(
    monkeypatch: pytest.MonkeyPatch, brokers: int, replication: int, min_insync: int, servers: list[str]
) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", str(brokers))
    settings = Settings(_env_file=None)
    assert (settings.topic_replication_factor, settings.min_insync_replicas) == (replication, min_insync)
    assert settings.kafka_servers == servers


def test_what_is_set_explicitly_wins() -> None:
    settings = Settings(
        _env_file=None, kafka_brokers=3, kafka_bootstrap_servers="k1:9092,k2:9092", topic_replication_factor=2
    )
    assert settings.kafka_servers == ["k1:9092", "k2:9092"]
    assert (settings.topic_replication_factor, settings.min_insync_replicas) == (2, 1)


def test_settings_that_could_never_write_are_refused() -> None:
    with pytest.raises(ValidationError, match="quorum of two"):
        Settings(_env_file=None, kafka_brokers=2)
    with pytest.raises(ValidationError, match="MIN_INSYNC_REPLICAS"):
        Settings(_env_file=None, topic_replication_factor=1, min_insync_replicas=2)


class FakeAdmin:
    """Stands in for aiokafka's admin client at ensure_topics' edge: no topic exists, creations recorded."""

    created: ClassVar[list[Any]] = []

    def __init__(self, **_: object) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, new_topics: list[Any], timeout_ms: int) -> None:
        FakeAdmin.created += new_topics


@pytest.mark.parametrize(("brokers", "replication", "min_insync"), [(1, 1, "1"), (3, 3, "2")])
async def test_every_topic_is_created_replicated_as_the_cluster_allows(
    monkeypatch: pytest.MonkeyPatch, brokers: int, replication: int, min_insync: str
) -> None:
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", FakeAdmin)
    monkeypatch.setattr(FakeAdmin, "created", [])
    await topics.ensure_topics(Settings(_env_file=None, kafka_brokers=brokers))
    assert len(FakeAdmin.created) == len(topics.CATALOGUE)
    for topic in FakeAdmin.created:
        assert topic.replication_factor == replication, topic.name
        assert topic.topic_configs["min.insync.replicas"] == min_insync, topic.name
        assert topic.topic_configs["unclean.leader.election.enable"] == "false", topic.name


def test_the_compose_cluster_override_runs_three_voters() -> None:
    """`docker compose -f docker-compose.yml -f docker-compose.cluster.yml up`: `kafka` becomes node 1 of
    three, and every engine process is told of all three and of the cluster's size."""
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    override = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())["services"]
    nodes = {name: override[name]["environment"] for name in ("kafka", "kafka-2", "kafka-3")}
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in nodes.values()) == [1, 2, 3]
    assert len({env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in nodes.values()}) == 1
    assert len({env["CLUSTER_ID"] for env in nodes.values()}) == 1
    assert len({env["KAFKA_LOG_DIRS"] for env in nodes.values()}) == 1  # one per container, each a volume
    voters = next(iter(nodes.values()))["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters == "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
    for name, env in nodes.items():
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 2
        assert "healthcheck" in override[name] or "healthcheck" in base.get(name, {})
        assert override[name].get("image", base["kafka"]["image"]) == base["kafka"]["image"]
    app = {name for name, svc in base.items() if svc.get("image") == "order-engine:latest"}
    for name in app:
        env = override[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092,kafka-2:9092,kafka-3:9092"
        assert Settings(_env_file=None, kafka_brokers=env["KAFKA_BROKERS"]).topic_replication_factor == 3
    for name in ("kafka-2", "kafka-3"):
        assert override["setup"]["depends_on"][name]["condition"] == "service_healthy"


def pause_history(ends_s: list[float], last_created_s: float) -> History:
    """Accepted orders that ended `ends_s` seconds into the run, the last created at `last_created_s`."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    history = History("pause")
    for n, end in enumerate(ends_s):
        order_id = f"order-{n}"
        history.posts.append(Post(f"key-{n}", [202], {order_id}))
        history.orders[order_id] = {
            "status": "confirmed",
            "created_at": start + timedelta(seconds=min(end, last_created_s)),
            "updated_at": start + timedelta(seconds=end),
        }
    return history


def test_the_longest_pause_is_the_widest_gap_between_ends_while_orders_arrive() -> None:
    # ends every 0.5 s, then nothing from 3.0 s to 9.5 s while orders were still created until 6 s
    history = pause_history([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 9.5, 10.0, 10.5, 30.0], last_created_s=6.0)
    assert longest_pause(history) == 6.5  # the tail's 19.5 s wait (retry delays after the load) is not one


def test_the_longest_pause_counts_only_accepted_orders_that_ended() -> None:
    history = pause_history([1.0, 2.0, 3.0, 4.0], last_created_s=4.0)
    history.orders["order-1"]["status"] = "submitted"  # open: its updated_at is no end
    # an order no client was told of, ending in that gap: not an accepted order's end either
    history.orders["stray"] = {
        **history.orders["order-0"],
        "updated_at": history.orders["order-1"]["updated_at"],
    }
    assert longest_pause(history) == 2.0
    assert longest_pause(pause_history([1.0], last_created_s=1.0)) is None
