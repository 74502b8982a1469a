"""The orderflow CLI against the whole running pipeline, run as a user runs it (`python -m orderflow`, the
server named by ORDERFLOW_URL, stdout a pipe so progress comes as plain lines): an order watched to
confirmed, one that trips its slippage, watching an existing order, listing, cancelling, and the exit code
of each."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.orders import fetch
from tests.fixtures.stack import Stack, free_port, running_stack, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HAPPY_PATH = ["pending", "routing", "building", "submitted", "confirmed"]
ORDER = ["order", "--in", "SOL", "--out", "USDC", "--amount", "1.5", "--slippage", "0.01"]
# A plain progress line: "09:56:18.120   +0.00s pending    order ...".
STEP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}\s+\+\d+\.\d\ds (\w+)")
SLIPPAGE_TRIES = 20  # each order trips a 1 bps tolerance with probability ~1/2 under a ±1 % price move


@pytest.fixture(scope="module")
async def engine(infrastructure: object) -> AsyncIterator[Stack]:
    """A stack of its own (orders are listed per client, and every CLI run is 127.0.0.1), with quotes slow
    enough that an order waits in routing while a separate `orderflow cancel` process starts; the default
    ±1 % price move, so a 1 bps tolerance can trip."""
    async with running_stack(
        MOCK_QUOTE_LATENCY_MIN_MS="2500",
        MOCK_QUOTE_LATENCY_MAX_MS="3000",
        QUOTE_TIMEOUT_MS="6000",
        MOCK_PRICE_MOVE_BPS="100",
    ) as stack:
        yield stack


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]

    def steps(self) -> list[str]:
        """The status of each plain progress line, in order."""
        return [m.group(1) for m in map(STEP.match, self.out.splitlines()) if m]

    def __str__(self) -> str:
        return f"orderflow {' '.join(self.argv)} -> {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


async def orderflow(stack: Stack | str, *argv: str, timeout: float = 90.0) -> Run:
    """Run the CLI in a process of its own against `stack` (or a URL), stdout and stderr captured."""
    url = stack if isinstance(stack, str) else stack.base_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orderflow",
        *argv,
        cwd=ROOT,
        env={**os.environ, "ORDERFLOW_URL": url},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(
            f"orderflow {' '.join(argv)} still running after {timeout}s:\n{out!r}\n{err!r}"
        ) from None
    assert process.returncode is not None
    return Run(tuple(argv), process.returncode, out.decode(), err.decode())


async def get_order(stack: Stack, order_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        response = await client.get(f"/api/orders/{order_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def place(stack: Stack, *extra: str) -> str:
    """`orderflow order` without --watch: it prints the order id alone."""
    run = await orderflow(stack, *ORDER, *extra)
    assert run.code == 0, run
    return str(uuid.UUID(run.out.strip()))


def order_id_of(run: Run) -> str:
    found = re.search(r"order ([0-9a-f-]{36})", run.out)
    assert found, run
    return found.group(1)


async def test_order_watch_follows_the_order_to_confirmed(engine: Stack) -> None:
    run = await orderflow(engine, *ORDER, "--watch")

    assert run.code == 0, run
    assert run.steps() == HAPPY_PATH, run
    order = await get_order(engine, order_id_of(run))
    assert order["status"] == "confirmed" and order["txHash"]
    assert f"confirmed  tx {order['txHash']}" in run.out
    chosen = [line for line in run.out.splitlines() if line.endswith("<- chosen")]
    assert len(chosen) == 1 and f"* {order['dex']} " in chosen[0], run
    others = {"raydium", "meteora"} - {order["dex"]}
    assert any(f"  {dex} " in line for line in run.out.splitlines() for dex in others), "both quotes shown"
    assert re.search(r"slippage -?\d+(\.\d+)? bps \(tolerance 100 bps\)", run.out), run


async def test_order_watch_json_prints_the_snapshot_then_each_event_once(engine: Stack) -> None:
    run = await orderflow(engine, "--json", *ORDER, "--watch", "--client-order-id", "cli-json")

    assert run.code == 0, run
    messages = run.json_lines()
    assert messages[0]["type"] == "snapshot" and all(m["type"] == "status" for m in messages[1:]), run
    events = messages[0]["logs"] + messages[1:]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "each event once, in seq order"
    assert [e["status"] for e in events] == HAPPY_PATH
    assert events[-1]["txHash"]


async def test_an_order_beyond_its_slippage_fails_with_exit_1_and_says_why(engine: Stack) -> None:
    """A 1 bps tolerance under a ±1 % price move: about every other swap trips; place until one does."""
    runs: list[Run] = []
    while len(runs) < SLIPPAGE_TRIES and not any(r.code == 1 for r in runs):
        runs.append(await orderflow(engine, *ORDER[:-1], "0.0001", "--watch"))
        assert runs[-1].code in (0, 1), runs[-1]

    failed = next((r for r in runs if r.code == 1), None)
    assert failed is not None, f"none of {len(runs)} orders tripped its slippage"
    assert failed.steps()[-1] == "failed", failed
    last = failed.out.splitlines()[-1]
    assert re.search(
        r"failed\s+slippage_exceeded: the swap would return [\d.]+, below the minimum [\d.]+$", last
    )
    order = await get_order(engine, order_id_of(failed))
    assert (order["status"], order["error"]) == ("failed", "slippage_exceeded")
    assert order["failureReason"] in last


async def test_watch_follows_an_existing_order_and_refuses_an_unknown_one(engine: Stack) -> None:
    order_id = await place(engine)

    run = await orderflow(engine, "watch", order_id)
    assert run.code == 0, run
    assert run.steps() == HAPPY_PATH
    order = await get_order(engine, order_id)
    assert f"tx {order['txHash']}" in run.out
    assert "1.5 SOL -> USDC, slippage <= 100 bps" in run.out, "the header comes from the order itself"

    finished = await orderflow(engine, "watch", order_id, "--json")
    assert finished.code == 0, finished
    [snapshot] = finished.json_lines()
    assert (snapshot["type"], snapshot["status"]) == ("snapshot", "confirmed")
    assert [e["status"] for e in snapshot["logs"]] == HAPPY_PATH

    unknown = str(uuid.uuid4())
    for argv in (["watch", unknown], ["--json", "watch", unknown]):
        refused = await orderflow(engine, *argv)
        assert refused.code == 4 and "not_found" in refused.err and refused.out == "", refused
    envelope = json.loads((await orderflow(engine, "--json", "watch", unknown)).err)
    assert envelope["error"] == "not_found" and envelope["correlationId"]


async def test_orders_lists_newest_first_pages_and_filters(engine: Stack) -> None:
    ref = f"cli-{uuid.uuid4().hex[:8]}"
    first = order_id_of(await orderflow(engine, *ORDER, "--watch", "--client-order-id", ref))
    second = order_id_of(await orderflow(engine, *ORDER, "--watch", "--client-order-id", ref))

    run = await orderflow(engine, "orders", "--status", "confirmed", "--limit", "5", "--json")
    assert run.code == 0, run
    page = run.json_lines()[0]
    assert set(page) == {"orders", "nextCursor"}
    assert 2 <= len(page["orders"]) <= 5
    assert all(o["status"] == "confirmed" for o in page["orders"])
    assert [o["orderId"] for o in page["orders"][:2]] == [second, first], "newest first"
    created = [o["createdAt"] for o in page["orders"]]
    assert created == sorted(created, reverse=True)

    everything = await orderflow(
        engine, "--json", "orders", "--client-order-id", ref, "--limit", "1", "--all"
    )
    assert everything.code == 0, everything
    [listing] = everything.json_lines()
    assert [o["orderId"] for o in listing["orders"]] == [second, first] and listing["nextCursor"] is None

    table = await orderflow(engine, "orders", "--client-order-id", ref, "--limit", "1")
    assert table.code == 0, table
    assert second in table.out and first not in table.out
    assert re.search(r"^next cursor: \S+$", table.out, re.MULTILINE), table


async def test_cancel_stops_an_order_still_routing_and_watch_exits_3(engine: Stack) -> None:
    order_id = await place(engine)

    async def routing() -> bool:
        rows = await fetch(engine.settings, "SELECT status FROM orders WHERE id = $1", uuid.UUID(order_id))
        return bool(rows) and rows[0]["status"] in ("pending", "routing")

    await wait_for(routing, timeout=10, what="the order in pending or routing")
    run = await orderflow(engine, "cancel", order_id, "--json")

    assert run.code == 0, run
    [cancelled] = run.json_lines()
    assert (cancelled["orderId"], cancelled["status"]) == (order_id, "cancelled")
    assert [e["status"] for e in cancelled["logs"]][-1] == "cancelled"
    assert "submitted" not in [e["status"] for e in cancelled["logs"]]

    watched = await orderflow(engine, "watch", order_id)
    assert watched.code == 3, watched
    assert watched.steps()[-1] == "cancelled"


async def test_cancel_refuses_a_finished_order_and_an_unknown_one(engine: Stack) -> None:
    done = order_id_of(await orderflow(engine, *ORDER, "--watch"))

    late = await orderflow(engine, "cancel", done)
    assert late.code == 4, late
    assert late.err.startswith("error: too_late_to_cancel (HTTP 409)"), late

    unknown = await orderflow(engine, "--json", "cancel", str(uuid.uuid4()))
    assert unknown.code == 4 and json.loads(unknown.err)["error"] == "not_found", unknown


async def test_a_server_that_is_not_there_exits_5() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    run = await orderflow(nobody, "orders")
    assert run.code == 5, run
    assert run.err.startswith(f"error: cannot reach {nobody}"), run
