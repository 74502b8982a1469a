"""A three-node KRaft cluster of the test's own (tests/fixtures/throwaway.py; the nodes `KAFKA_BROKERS=3 make
run` starts, by the same code): it forms one quorum of three, the catalogue's topics are created on it
replicated three times with min.insync.replicas=2 and no unclean leader election, faust's and Kafka's own
topics are replicated too, and an order goes through a stack pointed at it. The shared single broker, for
contrast, gets the same topics with one copy each."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.messaging.topics import CATALOGUE, EXECUTOR_GROUP, ROUTER_GROUP, ensure_topics
from shared.runtime.config import Settings
from tests.fixtures.execution import wait_terminal
from tests.fixtures.orders import order_body
from tests.fixtures.stack import Stack, running_stack
from tests.fixtures.throwaway import ThrowawayKafkaCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]


@dataclass
class Described:
    """A topic as the cluster has it: each partition's replicas and in-sync replicas, and its configs."""

    replicas: dict[int, list[int]]
    isr: dict[int, list[int]]
    configs: dict[str, str]


async def describe(servers: list[str], names: list[str]) -> dict[str, Described]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        metadata = {t["topic"]: t for t in await admin.describe_topics(names)}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            entries: list[dict[str, Any]] = resource["config_entries"]
            configs[resource["resource_name"]] = {e["config_names"]: e["config_value"] for e in entries}
    found = {}
    for name in names:
        assert not metadata[name]["error_code"], f"{name}: {metadata[name]}"
        partitions = metadata[name]["partitions"]
        found[name] = Described(
            {p["partition"]: p["replicas"] for p in partitions},
            {p["partition"]: p["isr"] for p in partitions},
            configs[name],
        )
    return found


@pytest.fixture(scope="module")
async def cluster(infrastructure: object) -> AsyncIterator[ThrowawayKafkaCluster]:
    cluster = ThrowawayKafkaCluster()
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="module")
async def cluster_stack(cluster: ThrowawayKafkaCluster) -> AsyncIterator[Stack]:
    async with running_stack(**cluster.env, MOCK_PRICE_MOVE_BPS="0") as stack:
        yield stack


async def test_three_nodes_form_one_quorum(cluster: ThrowawayKafkaCluster) -> None:
    """Each node registered as a broker with the one active controller, which is one of the three."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.servers.split(","))
    await admin.start()
    try:
        brokers = (await admin.describe_cluster())["brokers"]
    finally:
        await admin.close()
    assert sorted((b["node_id"], b["port"]) for b in brokers) == [(n.node_id, n.port) for n in cluster.nodes]
    assert cluster.active_controller() in {1, 2, 3}


async def test_the_catalogue_is_on_three_brokers_and_a_write_needs_two(cluster_stack: Stack) -> None:
    settings = cluster_stack.settings
    assert (settings.topic_replication_factor, settings.min_insync_replicas) == (3, 2)
    names = [settings.topic(spec.name) for spec in CATALOGUE]
    for name, topic in (await describe(settings.kafka_servers, names)).items():
        assert all(sorted(replicas) == [1, 2, 3] for replicas in topic.replicas.values()), (name, topic)
        assert all(sorted(isr) == [1, 2, 3] for isr in topic.isr.values()), (name, topic)
        assert topic.configs["min.insync.replicas"] == "2", name
        assert topic.configs["unclean.leader.election.enable"] == "false", name


async def test_faust_and_kafka_keep_their_own_topics_on_three_brokers(cluster_stack: Stack) -> None:
    """The stages' group-leader topics (faust creates them, with TOPIC_REPLICATION_FACTOR) and the
    committed offsets (the brokers create them, with offsets.topic.replication.factor)."""
    settings = cluster_stack.settings
    own = [f"{settings.topic(group)}-__assignor-__leader" for group in (ROUTER_GROUP, EXECUTOR_GROUP)]
    for name, topic in (await describe(settings.kafka_servers, [*own, "__consumer_offsets"])).items():
        assert all(len(replicas) == 3 for replicas in topic.replicas.values()), (name, topic)
        assert topic.configs["min.insync.replicas"] == "2", name  # the brokers' default, from the template


async def test_an_order_goes_through_a_stack_on_the_cluster(cluster_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=cluster_stack.base_url, timeout=10) as client:
        response = await client.post("/api/orders/execute", json=order_body())
    assert response.status_code == 202, response.text
    order_id = str(response.json()["orderId"])
    rows = await wait_terminal(cluster_stack, [order_id], timeout=60)
    assert rows[order_id]["status"] == "confirmed", dict(rows[order_id])


async def test_one_broker_keeps_one_copy(infrastructure: Settings) -> None:
    """The shared single broker (KAFKA_BROKERS=1): what the catalogue got before, and still gets."""
    settings = Settings(
        _env_file=None,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        kafka_brokers=1,
        topic_prefix=f"test-{uuid.uuid4().hex[:10]}.",
        topic_partitions=1,
    )
    names = await ensure_topics(settings)
    try:
        for name, topic in (await describe(settings.kafka_servers, names)).items():
            assert list(topic.replicas.values()) == [[1]], (name, topic)
            assert topic.configs["min.insync.replicas"] == "1", name
            assert topic.configs["unclean.leader.election.enable"] == "false", name
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers)
        await admin.start()
        try:
            await admin.delete_topics(names)
        finally:
            await admin.close()
