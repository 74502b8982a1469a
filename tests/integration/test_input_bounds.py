"""Values Postgres would refuse, sent by a client, are 400s naming their field (never a 500, nor a 503 that
invites the same request again), on a stack of ingress alone."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from tests.fixtures.orders import client_ip
from tests.fixtures.stack import Stack, running_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def ingress(infrastructure: object) -> AsyncIterator[Stack]:
    async with running_stack(services=("ingress",)) as started:
        yield started


def cursor_at(time: str) -> str:
    """A cursor as GET /api/orders writes them, holding `time`."""
    return base64.urlsafe_b64encode(orjson.dumps([time, str(uuid.uuid4())])).rstrip(b"=").decode()


async def list_orders(stack: Stack, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        return await client.get("/api/orders", params=params, headers={"X-Forwarded-For": client_ip()})


async def test_a_cursor_whose_time_has_no_utc_equivalent_is_a_400_naming_the_cursor(ingress: Stack) -> None:
    """Bug caught: the cursor decodes, but asyncpg cannot send its time (year 1 at +05:00 is before year 1 in
    UTC) and the query fails with DataError: a 500 (a 503 had DataError stayed "unreachable"). Mutants
    killed: decode_cursor without its conversion to UTC (a 400 at best from the store's safety net, naming
    no field)."""
    response = await list_orders(ingress, cursor=cursor_at("0001-01-01T00:00:00+05:00"))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_body"
    assert [d["field"] for d in body["details"]] == ["cursor"]
    assert (await list_orders(ingress, cursor=cursor_at("2026-01-01T00:00:00+05:00"))).status_code == 200


async def test_a_client_order_id_filter_postgres_cannot_store_is_a_400_naming_it(ingress: Stack) -> None:
    """Bug caught: a NUL in the filter reaching Postgres (CharacterNotInRepertoire, a DataError): a 500.
    Mutant killed: the filter without the pattern clientOrderId is placed with."""
    response = await list_orders(ingress, clientOrderId="ref\x00")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_body"
    assert [d["field"] for d in body["details"]] == ["clientOrderId"]
