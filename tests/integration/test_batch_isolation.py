"""One client's hostile input must not fail other clients' orders that share its group commit: a burst of
POSTs straight to ingress (whose peer, 127.0.0.1, is a trusted proxy, so X-Forwarded-For is believed) with one
client address of ~8 KB, the group commit itself against Postgres with a row past the btree index limit, and
the notifier's handshake with the same header. On a stack of ingress and the notifier only: accepted orders
stay pending, which is all these tests look at."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ingress import repository
from ingress.repository import NewOrder, Placement
from ingress.schemas import PlaceOrder
from ingress.service import new_order
from shared.store.batching import Flushed, GroupCommit
from shared.store.db import create_pool
from tests.fixtures.orders import client_ip, fetch, order_body
from tests.fixtures.stack import Stack, running_stack

pytestmark = pytest.mark.integration

EXECUTE = "/api/orders/execute"
BURST = 120
# An IPv6 scope id (ipaddress accepts any length) of random text: Postgres cannot compress it into a btree
# row (at most ~2.7 KB), so without the edge's bound its order's INSERT fails.
HOSTILE_FORWARDED_FOR = "fe80::1%" + secrets.token_urlsafe(6000)[:8000]


@pytest.fixture(scope="module")
async def isolated(infrastructure: object) -> AsyncIterator[Stack]:
    # The header block with the hostile address (~8.2 KB) must pass HttpEdgeMiddleware's 431 to reach the
    # identity check this module is about.
    async with running_stack(
        services=("ingress", "notifier"), TRUSTED_PROXIES="127.0.0.1/32,::1/128", MAX_HEADER_BYTES="32768"
    ) as started:
        yield started


async def test_a_hostile_forwarded_for_in_a_burst_fails_only_its_own_post(isolated: Stack) -> None:
    """Given 120 concurrent POSTs, one with X-Forwarded-For `fe80::1%` + 8000 characters, when they share
    the group commit, then the 119 others are accepted (each under its canonical address) and the hostile
    one alone is a 400 naming the header.

    Bugs caught: the identity unbounded (the hostile row fails its batch's INSERT: 500 for it, and for all
    of its batch without the row-by-row retry), and left uncanonical. Mutants killed: `_forwarded_identity`
    without its length and scope checks (the hostile POST is a 500), `canonical_address` returning the text
    as given (the clients stored in their expanded spelling)."""
    clients = [client_ip() for _ in range(BURST)]
    hostile = BURST // 2
    # Each client written out in full and in capitals: one address, another spelling.
    sent = [ipaddress.IPv6Address(c).exploded.upper() for c in clients]
    sent[hostile] = HOSTILE_FORWARDED_FOR
    base_url = f"http://127.0.0.1:{isolated.settings.ingress_port}"
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post(EXECUTE, json=order_body(), headers={"X-Forwarded-For": ip}) for ip in sent)
        )
    statuses = [r.status_code for r in responses]
    expected = [202] * BURST
    expected[hostile] = 400
    assert statuses == expected, collections.Counter(statuses)
    body = responses.pop(hostile).json()
    assert body["error"] == "invalid_body"
    assert [d["field"] for d in body["details"]] == ["X-Forwarded-For"]
    del clients[hostile]
    placed = {uuid.UUID(r.json()["orderId"]): c for r, c in zip(responses, clients, strict=True)}
    rows = await fetch(isolated.settings, "SELECT id, client FROM orders WHERE id = ANY($1)", list(placed))
    assert {r["id"]: r["client"] for r in rows} == placed


async def test_a_row_past_the_index_limit_fails_alone_in_the_group_commit(isolated: Stack) -> None:
    """The safety net behind the edge's bound: the ingress group commit and its real statement, against
    Postgres, with one order whose client is past the btree row limit among 120. That order alone fails,
    with Postgres's error; the 119 others are written.

    Bug caught: `_flush_batch` setting one statement's exception on every future of the batch. Mutant
    killed: no row-by-row retry (all 120 get ProgramLimitExceededError)."""
    pool = await create_pool(isolated.settings.database_url, max_size=2)
    statements: list[int] = []

    async def insert(conn: asyncpg.Connection, orders: Sequence[NewOrder]) -> Flushed[Placement]:
        statements.append(len(orders))
        return await repository.insert_orders(conn, orders, key_ttl_s=60)

    writer: GroupCommit[NewOrder, Placement] = GroupCommit(pool, None, insert, name="isolation-test")
    request = PlaceOrder.model_validate(order_body())
    orders = [new_order(request, None, None, client=client_ip(), max_attempts=3) for _ in range(BURST)]
    poison = BURST // 2
    orders[poison] = dataclasses.replace(orders[poison], client=HOSTILE_FORWARDED_FOR)
    try:
        # Submitted in one loop iteration: the flusher starts once all of them are queued, one batch.
        outcomes = await asyncio.gather(*(writer.submit(o) for o in orders), return_exceptions=True)
    finally:
        await writer.stop()
        await pool.close()
    assert statements[0] == BURST, "the 120 shared one statement first"
    assert isinstance(outcomes.pop(poison), asyncpg.ProgramLimitExceededError)
    assert [getattr(o, "placed", o) for o in outcomes] == [True] * (BURST - 1)
    written = await fetch(
        isolated.settings, "SELECT id FROM orders WHERE id = ANY($1)", [o.placed.order_id for o in orders]
    )
    assert {r["id"] for r in written} == {o.placed.order_id for i, o in enumerate(orders) if i != poison}


async def test_the_notifier_refuses_the_same_header_at_the_handshake(isolated: Stack) -> None:
    """Ingress and the notifier share `client_address`: the handshake is refused with a 400 in the envelope
    (the socket never opens), before any limit or lease is taken for that address.

    Mutants killed: the handshake not answering `client_address`'s refusal (the app fails inside the
    handshake: no 400 envelope), no bound (the socket opens)."""
    url = f"ws://127.0.0.1:{isolated.settings.notifier_port}/api/orders/execute?orderId={uuid.uuid4()}"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers={"X-Forwarded-For": HOSTILE_FORWARDED_FOR}, open_timeout=10)
    response = refused.value.response
    assert response.status_code == 400
    body = json.loads(response.body or b"{}")
    assert body["error"] == "invalid_body" and body["correlationId"]
    assert [d["field"] for d in body["details"]] == ["X-Forwarded-For"]
