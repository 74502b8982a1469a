"""Who a client is, end to end through the proxy (tests/fixtures/stack.py runs nginx from
infra/nginx.conf.in), on stacks of ingress and the notifier only (nothing routes an order, so each stays
pending and cancellable).

- Anonymous (no API_KEYS): a client is the peer the proxy saw. Clients come from loopback addresses of
  their own (tests/fixtures/clients.py); one sending `X-Forwarded-For: <another's address>` can neither
  list, cancel, reuse the Idempotency-Keys of, nor take the WebSocket places of that other client. GET of
  one order stays public by its id (README, "Look it up"). /metrics is not served through the proxy.
- API_KEYS: no key is 401, an unknown one 403 (HTTP and WebSocket handshake alike); the key's principal,
  not the address, scopes orders, Idempotency-Keys, rate limits and WebSocket places; the orderflow CLI
  takes a key; no key reaches a log.
- Reads (GETs, the WebSocket handshake) take from a bucket of their own (READ_RATE_LIMIT), shared by
  ingress and the notifier through Redis: past it they are 429 while POSTs still pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from shared.web.apikeys import key_line, new_key
from tests.fixtures.clients import http_from, ws_from
from tests.fixtures.orders import order_body
from tests.fixtures.stack import LOGS, ROOT, Stack, running_stack

pytestmark = [pytest.mark.integration]

EXECUTE = "/api/orders/execute"
VICTIM = "127.0.0.2"
STRANGER = "127.0.0.3"
# Where every local client comes from by default, and the trusted proxy's own address: a client here is
# the one an appended X-Forwarded-For let name anyone (the right-most untrusted entry was its forgery).
LOCAL = "127.0.0.1"
READS = 10  # READ_RATE_LIMIT of the keyed stack: one token back every 6 s, far slower than a test's burst
PRINCIPALS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


async def place(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.post(EXECUTE, json=order_body(), headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


async def listed(client: httpx.AsyncClient, **headers: str) -> set[str]:
    response = await client.get("/api/orders", params={"limit": 100}, headers=headers)
    assert response.status_code == 200, response.text
    return {order["orderId"] for order in response.json()["orders"]}


async def snapshot(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "snapshot", message
    return message


async def refused_handshake(opening: Any) -> InvalidStatus:
    """The refusal of a handshake that must be refused (`opening`: the connect coroutine)."""
    with pytest.raises(InvalidStatus) as refused:
        ws = await opening
        await ws.close()
    return refused.value


def envelope(refusal: InvalidStatus) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(refusal.response.body or b"{}")
    return body


# --- anonymous: the address the proxy saw ----------------------------------------------------------------


@pytest.fixture(scope="module")
async def anonymous(infrastructure: object) -> AsyncIterator[Stack]:
    async with running_stack(services=("ingress", "notifier")) as stack:
        yield stack


@pytest.mark.parametrize("forger", [LOCAL, STRANGER])
async def test_a_forged_x_forwarded_for_names_no_one_else(anonymous: Stack, forger: str) -> None:
    """Given the victim's pending order placed with an Idempotency-Key, a client elsewhere claiming the
    victim's address in X-Forwarded-For lists, cancels and replays as itself, not as the victim."""
    forged = {"X-Forwarded-For": VICTIM}
    key = f"key-{uuid.uuid4()}"
    async with http_from(anonymous, VICTIM) as victim, http_from(anonymous, forger) as other:
        theirs = await place(victim, **{"Idempotency-Key": key})
        mine = await place(other)

        seen = await listed(other, **forged)
        assert mine in seen and theirs not in seen
        cancel = await other.delete(f"/api/orders/{theirs}", headers=forged)
        assert cancel.status_code == 404 and cancel.json()["error"] == "not_found", cancel.text
        reuse = await other.post(
            EXECUTE, json=order_body(amountIn="2"), headers={**forged, "Idempotency-Key": key}
        )
        assert reuse.status_code == 202, reuse.text  # the forger's own key scope: neither 409 nor a replay
        assert reuse.json()["orderId"] != theirs and "idempotent-replayed" not in reuse.headers
        # Looking one order up is public by its id, as documented; it changes nothing.
        assert (await other.get(f"/api/orders/{theirs}", headers=forged)).json()["status"] == "pending"

        assert theirs in await listed(victim) and mine not in await listed(victim)
        own = await victim.delete(f"/api/orders/{theirs}")
        assert own.status_code == 200 and own.json()["status"] == "cancelled", own.text


async def test_a_forged_x_forwarded_for_takes_no_one_elses_websocket_places(anonymous: Stack) -> None:
    """WS_MAX_PER_ORDER_IP (3) is per client: three sockets that claim to be the victim's are counted as the
    forger's, and the victim still gets in."""
    async with http_from(anonymous, VICTIM) as victim:
        order = await place(victim)
    forged = {"X-Forwarded-For": VICTIM}
    sockets = [await ws_from(anonymous, order, LOCAL, additional_headers=forged) for _ in range(3)]
    try:
        for ws in sockets:
            await snapshot(ws)
        fourth = await refused_handshake(ws_from(anonymous, order, LOCAL, additional_headers=forged))
        assert fourth.response.status_code == 429 and envelope(fourth)["error"] == "rate_limited"
        own = await ws_from(anonymous, order, VICTIM)
        try:
            assert (await snapshot(own))["orderId"] == order
        finally:
            await own.close()
    finally:
        for ws in sockets:
            await ws.close()


@pytest.mark.parametrize(
    "path", ["/metrics", "/metrics/", "/%6detrics", "/metrics?name=orders_accepted_total"]
)
async def test_metrics_are_not_served_through_the_proxy(anonymous: Stack, path: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        public = await client.get(f"{anonymous.base_url}{path}")
        assert public.status_code == 404, public.text[:200]
        assert public.json()["error"] == "not_found"
        assert public.json()["correlationId"] == public.headers["x-request-id"]
        private = await client.get(f"http://127.0.0.1:{anonymous.settings.ingress_port}/metrics")
        assert (
            private.status_code == 200 and "orders_accepted_total" in private.text
        )  # where Prometheus looks


# --- API keys: the principal -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyed:
    stack: Stack
    keys: dict[str, str]

    def client(self, principal: str, address: str = LOCAL) -> httpx.AsyncClient:
        return http_from(self.stack, address, headers={"Authorization": f"Bearer {self.keys[principal]}"})

    def offer(self, principal: str) -> list[Subprotocol]:
        """The subprotocols a browser offers its key as."""
        return [Subprotocol("bearer"), Subprotocol(f"bearer.{self.keys[principal]}")]


@pytest.fixture(scope="module")
async def keyed(infrastructure: object, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Keyed]:
    keys = {principal: new_key() for principal in PRINCIPALS}
    path = tmp_path_factory.mktemp("identity") / "api-keys"
    path.write_text(
        "# test_identity's principals\n" + "".join(f"{key_line(p, k)}\n" for p, k in keys.items())
    )
    async with running_stack(
        services=("ingress", "notifier"), API_KEYS=str(path), RATE_LIMIT="1000", READ_RATE_LIMIT=str(READS)
    ) as stack:
        yield Keyed(stack, keys)


async def test_no_key_is_401_and_an_unknown_key_403_over_http_and_websocket(keyed: Keyed) -> None:
    unknown = {"Authorization": f"Bearer {new_key()}"}
    some_id = uuid.uuid4()
    calls = [("POST", EXECUTE), ("GET", "/api/orders"), ("GET", f"/api/orders/{some_id}")]
    calls.append(("DELETE", f"/api/orders/{some_id}"))
    async with http_from(keyed.stack, LOCAL) as anyone:
        for method, path in calls:
            body = order_body() if method == "POST" else None
            missing = await anyone.request(method, path, json=body)
            assert (missing.status_code, missing.json()["error"]) == (401, "unauthorized"), (method, path)
            assert missing.headers["www-authenticate"].startswith("Bearer ")
            wrong = await anyone.request(method, path, json=body, headers=unknown)
            assert (wrong.status_code, wrong.json()["error"]) == (403, "forbidden"), (method, path)
    async with http_from(keyed.stack, "127.0.0.9") as checker:
        assert (await checker.get("/ready")).status_code == 200  # health checks hold no key

    async with keyed.client("alice") as alice:
        order = await place(alice)
    stack = keyed.stack
    missing_ws = await refused_handshake(ws_from(stack, order, LOCAL))
    assert missing_ws.response.status_code == 401 and envelope(missing_ws)["error"] == "unauthorized"
    offered_unknown = [Subprotocol("bearer"), Subprotocol(f"bearer.{new_key()}")]
    wrong_ws = await refused_handshake(ws_from(stack, order, LOCAL, subprotocols=offered_unknown))
    assert wrong_ws.response.status_code == 403 and envelope(wrong_ws)["error"] == "forbidden"
    async with connect(f"{stack.ws_url}?orderId={order}", subprotocols=keyed.offer("alice")) as ws:
        assert ws.subprotocol == "bearer"  # as a browser offers it; the key is not echoed
        assert (await snapshot(ws))["orderId"] == order


async def test_a_principal_lists_cancels_and_replays_only_its_own_from_any_address(keyed: Keyed) -> None:
    """alice and bob come from the same address: their keys, not the address, tell them apart."""
    key = f"key-{uuid.uuid4()}"
    async with keyed.client("alice") as alice, keyed.client("bob") as bob:
        theirs = await place(alice, **{"Idempotency-Key": key})
        reuse = await bob.post(EXECUTE, json=order_body(amountIn="2"), headers={"Idempotency-Key": key})
        assert reuse.status_code == 202 and reuse.json()["orderId"] != theirs, reuse.text
        bobs = reuse.json()["orderId"]

        assert await listed(bob) == {bobs}
        cancel = await bob.delete(f"/api/orders/{theirs}")
        assert cancel.status_code == 404 and cancel.json()["error"] == "not_found"
        assert (await bob.get(f"/api/orders/{theirs}")).status_code == 200  # public by id, to any key holder

    async with keyed.client("alice", address=STRANGER) as alice_elsewhere:
        assert theirs in await listed(alice_elsewhere) and bobs not in await listed(alice_elsewhere)
        own = await alice_elsewhere.delete(f"/api/orders/{theirs}")
        assert own.status_code == 200 and own.json()["status"] == "cancelled"


async def test_websocket_places_are_counted_per_principal(keyed: Keyed) -> None:
    async with keyed.client("carol") as carol:
        order = await place(carol)
    stack = keyed.stack
    sockets = [await ws_from(stack, order, LOCAL, subprotocols=keyed.offer("carol")) for _ in range(3)]
    try:
        for ws in sockets:
            await snapshot(ws)
        fourth = await refused_handshake(ws_from(stack, order, LOCAL, subprotocols=keyed.offer("carol")))
        assert fourth.response.status_code == 429 and envelope(fourth)["error"] == "rate_limited"
        other = await ws_from(stack, order, LOCAL, subprotocols=keyed.offer("dave"))  # same address
        try:
            await snapshot(other)
        finally:
            await other.close()
    finally:
        for ws in sockets:
            await ws.close()


# --- reads: a bucket of their own ------------------------------------------------------------------------


async def drain_reads(client: httpx.AsyncClient, order: str) -> tuple[list[httpx.Response], float]:
    """GET the order and the list in turn until one is 429 (at most 3 x READS): the answers and how long
    it took."""
    answers: list[httpx.Response] = []
    started = time.monotonic()
    for i in range(3 * READS):
        answer = await client.get(f"/api/orders/{order}" if i % 2 == 0 else "/api/orders")
        answers.append(answer)
        if answer.status_code != 200:
            break
    return answers, time.monotonic() - started


async def test_reads_past_their_own_limit_are_429_while_orders_still_pass(keyed: Keyed) -> None:
    """GET one and the list share READ_RATE_LIMIT; the notifier's handshake takes from the same bucket in
    Redis; POST keeps its own (RATE_LIMIT); another principal's reads are its own."""
    async with keyed.client("erin") as erin:
        order = await place(erin)
        answers, elapsed = await drain_reads(erin, order)
        refused, passed = answers[-1], answers[:-1]
        assert refused.status_code == 429, [a.status_code for a in answers]
        assert READS <= len(passed) <= READS + int(elapsed // (60 / READS)), (len(passed), elapsed)
        assert {a.headers["ratelimit-policy"] for a in passed} == {f'"reads";q={READS};w=60'}
        body = refused.json()
        assert body["error"] == "rate_limited" and refused.headers["retry-after"] == str(body["retryAfter"])
        assert refused.headers["ratelimit"].startswith('"reads";r=0;')

        assert (await erin.post(EXECUTE, json=order_body())).status_code == 202  # writes: another bucket

        await drain_reads(erin, order)  # in case a token came back meanwhile
        handshake = await refused_handshake(
            ws_from(keyed.stack, order, LOCAL, subprotocols=keyed.offer("erin"))
        )
        assert handshake.response.status_code == 429 and envelope(handshake)["error"] == "rate_limited"
        assert int(handshake.response.headers["retry-after"]) >= 1

    async with keyed.client("frank") as frank:
        assert (await frank.get(f"/api/orders/{order}")).status_code == 200


# --- the CLI, and the logs -------------------------------------------------------------------------------


async def orderflow(stack: Stack, *argv: str, key: str | None) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "ORDERFLOW_API_KEY"}
    environ["ORDERFLOW_URL"] = stack.base_url
    if key is not None:
        environ["ORDERFLOW_API_KEY"] = key
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow", *argv, cwd=ROOT, env=environ,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_orderflow_sends_its_key_on_requests_and_on_the_websocket(keyed: Keyed) -> None:
    """Given ORDERFLOW_API_KEY, `order` places, `watch` follows (its handshake carries the key: without
    it the notifier answers 401), and `cancel` ends the watch with exit code 3."""
    key = keyed.keys["grace"]
    code, out, err = await orderflow(keyed.stack, "order", "--in", "SOL", "--out", "USDC", "--amount", "1.5",
                                     "--slippage", "0.01", key=key)  # fmt: skip
    assert code == 0, err
    order = out.strip()
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow", "--json", "--api-key", key, "watch", order, cwd=ROOT,
        env={**os.environ, "ORDERFLOW_URL": keyed.stack.base_url},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert watcher.stdout is not None
        first = json.loads(await asyncio.wait_for(watcher.stdout.readline(), 30) or b"{}")
        assert first.get("type") == "snapshot" and first["orderId"] == order, first
        code, _, err = await orderflow(keyed.stack, "cancel", order, key=key)
        assert code == 0, err
        assert await asyncio.wait_for(watcher.wait(), 30) == 3  # exit code: cancelled
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()

    code, _, err = await orderflow(keyed.stack, "orders", key=None)
    assert code == 4 and "unauthorized" in err
    unknown = new_key()
    code, out, err = await orderflow(keyed.stack, "--api-key", unknown, "orders", key=None)
    assert code == 4 and "forbidden" in err and unknown not in out + err


async def test_no_key_reaches_a_log(keyed: Keyed) -> None:
    """Keys good and bad, as headers and as subprotocols, leave no trace in any process's log."""
    unknown = new_key()
    async with keyed.client("heidi") as heidi:
        order = await place(heidi)
        await heidi.get("/api/orders", headers={"Authorization": f"Bearer {unknown}"})
    async with connect(f"{keyed.stack.ws_url}?orderId={order}", subprotocols=keyed.offer("heidi")) as ws:
        await snapshot(ws)
    offered = [Subprotocol("bearer"), Subprotocol(f"bearer.{unknown}")]
    await refused_handshake(ws_from(keyed.stack, order, LOCAL, subprotocols=offered))

    logs: list[Path] = sorted((LOGS / keyed.stack.run_id).glob("*.log"))
    assert {log.stem for log in logs} >= {"ingress", "notifier", "proxy"}
    text = "\n".join(log.read_text(errors="replace") for log in logs)
    assert "orderId" in text  # the logs were written (the check below could not pass on empty files)
    for secret in [*keyed.keys.values(), unknown]:
        assert secret not in text
