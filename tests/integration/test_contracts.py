"""Real messages from a run honour the published JSON Schemas, and the example analytics consumer reports
what Postgres records."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from shared.messaging.contracts import CONTRACTS, schema_for
from shared.messaging.topics import ORDER_STATUS, ORDERS, ORDERS_EXECUTE
from shared.store.db import connect
from tests.fixtures.execution import run_analytics
from tests.fixtures.orders import topic_messages
from tests.fixtures.stack import Stack, running_stack
from tests.integration.test_order_flow import place, watch

pytestmark = pytest.mark.integration


async def test_every_message_of_a_run_matches_its_topics_schema(stack: Stack) -> None:
    await watch(stack, await place(stack))
    for spec in CONTRACTS:
        validator = Draft202012Validator(schema_for(spec))
        values = [m.value for m in await topic_messages(stack.settings, spec)]
        if spec in (
            ORDERS,
            ORDERS_EXECUTE,
            ORDER_STATUS,
        ):  # retry and DLQ topics see traffic only on failures
            assert values, f"no messages on {spec.name}"
        for value in values:
            errors = [e.message for e in validator.iter_errors(json.loads(value))]
            assert not errors, f"{spec.name}: {errors}"


async def test_the_analytics_consumer_reports_what_postgres_records(infrastructure: object) -> None:
    """On a stack of its own: the report covers the whole topic, so other tests' orders must not be in it."""
    async with running_stack() as stack:
        await check_the_report(stack)


async def check_the_report(stack: Stack) -> None:
    for order_id in [await place(stack) for _ in range(3)]:
        await watch(stack, order_id)
    summary, _ = await run_analytics(stack)

    conn = await connect(stack.settings.database_url, jsonb=False)
    try:
        counts = dict(await conn.fetch("SELECT status::text, count(*) FROM orders GROUP BY status"))
        dex = dict(
            await conn.fetch("SELECT dex_used, count(*) FROM orders WHERE status = 'confirmed' GROUP BY 1")
        )
    finally:
        await conn.close()
    assert summary["orders"] == sum(counts.values())
    assert summary["confirmed"] == counts.get("confirmed", 0) == 3
    assert summary["failed"] == counts.get("failed", 0)
    assert summary["dexShare"] == dex
    assert summary["fillRate"] == round(summary["confirmed"] / (summary["confirmed"] + summary["failed"]), 4)
    latency = summary["latencySeconds"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
