"""What a chaos run records: every POST and its answers, what every WebSocket client saw, and afterwards what
the engine (Postgres, `order.status`) and the venue (its execute log, its ledger) say. The checker reads only
this record, so a finding can be traced to the answers and events behind it.

The clients behave as the README tells integrators to: a POST that gets no answer, a 5xx or a 429 is sent
again with the same Idempotency-Key until it gets a 2xx or a 4xx; a WebSocket that closes before the order's
terminal status is opened again with `lastSeq`, the last seq the client has seen.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiokafka.structs import ConsumerRecord
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from shared.messaging.topics import ORDER_STATUS
from tests.fixtures.orders import fetch, order_body, topic_messages
from tests.fixtures.stack import Stack, log_events

TERMINAL = frozenset({"confirmed", "failed"})
POST_BUDGET_S = 60.0  # a client gives up on a key after this long without an answer
FOLLOW_BUDGET_S = 120.0  # and on following an order after this long without its terminal status
RETRY_PAUSE_S = 0.2
UNCAPPED = httpx.Limits(max_connections=None, max_keepalive_connections=100)


@dataclass
class Post:
    """One Idempotency-Key: each answer it got (status code, or the transport error's name), and the order
    ids its 2xx answers named (more than one is an I4 violation)."""

    key: str
    answers: list[int | str] = field(default_factory=list)
    order_ids: set[str] = field(default_factory=set)
    replayed_after_failure: bool = False  # its order existed when an earlier attempt got no 2xx


@dataclass
class Follow:
    """What one client saw of one order, across its reconnections: every seq in the order it arrived."""

    order_id: str
    seqs: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    connections: int = 0
    note: str = ""  # why its last connection ended, if not with the terminal status

    @property
    def terminal(self) -> str | None:
        return self.statuses[-1] if self.statuses and self.statuses[-1] in TERMINAL else None


@dataclass
class History:
    scenario: str
    posts: list[Post] = field(default_factory=list)
    follows: dict[str, Follow] = field(default_factory=dict)
    fault_at: float | None = None  # wall time of the fault
    restarted: list[str] = field(default_factory=list)  # services the supervisor started again
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # Postgres's view, by order id
    topic: list[dict[str, Any]] = field(default_factory=list)  # `order.status`, in the order it was read
    executions: list[tuple[str, int]] = field(default_factory=list)  # (orderId, attempt) per venue.execute
    swaps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # the ledger's swap rows


class Clients:
    """The integrators of a run: place `count` orders at `rate` per second and follow each one."""

    def __init__(self, stack: Stack, history: History) -> None:
        self._stack = stack
        self._history = history
        # No cap on connections: while a fault holds answers, the POSTs still being sent must not queue for
        # one of a pool's few (httpx's PoolTimeout) as no integrator's separate clients would.
        self._http = httpx.AsyncClient(base_url=stack.base_url, timeout=5.0, limits=UNCAPPED)
        self._tasks: set[asyncio.Task[None]] = set()
        self.bursts: list[Post] = []  # the POSTs `burst` sent, also in the history's posts

    async def run(self, count: int, rate: float) -> None:
        started = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            task = asyncio.create_task(self._place())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        while self._tasks:
            await asyncio.gather(*self._tasks)
        await self._http.aclose()

    async def burst(self, count: int, base_url: str, headers: dict[int, dict[str, str]]) -> None:
        """`count` orders placed at once at `base_url` (while `run` goes on), the i-th with `headers[i]` on
        top of its key; each is followed, retried and recorded as any other."""
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0, limits=UNCAPPED) as http:
            posts = [Post(key=str(uuid.uuid4())) for _ in range(count)]
            self.bursts += posts
            await asyncio.gather(
                *(self._place(post, http, headers.get(i, {})) for i, post in enumerate(posts))
            )

    async def _place(
        self,
        post: Post | None = None,
        http: httpx.AsyncClient | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        post = post or Post(key=str(uuid.uuid4()))
        http = http or self._http
        self._history.posts.append(post)
        giving_up = time.monotonic() + POST_BUDGET_S
        while time.monotonic() < giving_up:
            try:
                response = await http.post(
                    "/api/orders/execute",
                    json=order_body(),
                    headers={"Idempotency-Key": post.key, **(headers or {})},
                )
            except httpx.TransportError as exc:
                post.answers.append(type(exc).__name__)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            post.answers.append(response.status_code)
            if response.status_code == 202:
                order_id = str(response.json()["orderId"])
                if response.headers.get("idempotent-replayed") == "true" and not post.order_ids:
                    post.replayed_after_failure = True
                if not post.order_ids:
                    task = asyncio.create_task(self._follow(order_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                post.order_ids.add(order_id)
                # Sent again now and then while the run goes on: a replay must name the same order.
                if len(post.answers) > 1 or uuid.UUID(post.key).int % 10:
                    return
                continue
            if response.status_code < 500 and response.status_code != 429:
                return  # a 4xx other than 429 is final
            await asyncio.sleep(RETRY_PAUSE_S)

    async def _follow(self, order_id: str) -> None:
        """Follow the order across reconnections for at most FOLLOW_BUDGET_S, a connection that stays open
        included (an order that never ends must not hold the run)."""
        follow = Follow(order_id)
        self._history.follows[order_id] = follow
        try:
            async with asyncio.timeout(FOLLOW_BUDGET_S):
                await self._follow_until_terminal(follow)
        except TimeoutError:
            follow.note = follow.note or "gave up following"

    async def _follow_until_terminal(self, follow: Follow) -> None:
        order_id = follow.order_id
        while follow.terminal is None:
            url = f"{self._stack.ws_url}?orderId={order_id}"
            if follow.seqs:
                url += f"&lastSeq={follow.seqs[-1]}"
            follow.connections += 1
            try:
                async with connect(url, open_timeout=5, close_timeout=2) as ws:
                    async for raw in ws:
                        message = orjson.loads(raw)
                        if message.get("type") == "snapshot":
                            events = message.get("logs") or []
                        elif message.get("type") == "status":
                            events = [message]
                        else:
                            continue
                        for event in events:
                            follow.seqs.append(int(event["seq"]))
                            follow.statuses.append(str(event["status"]))
                        if follow.terminal is not None:
                            break
            except (OSError, WebSocketException, TimeoutError) as exc:
                follow.note = type(exc).__name__
            if follow.terminal is None:
                await asyncio.sleep(RETRY_PAUSE_S)


def status_events(messages: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    """The messages that are status events, as JSON, in topic order. What a scenario wrote there that no
    reader can decode (poison) is left out: it names no accepted order."""
    events = []
    for message in messages:
        try:
            event = orjson.loads(message.value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and "orderId" in event and isinstance(event.get("seq"), int):
            events.append(event)
    return events


async def record_outcome(stack: Stack, history: History) -> None:
    """Read what the engine and the venue say happened, once the run is over."""
    rows = await fetch(
        stack.settings, "SELECT id, status, seq, logs, tx_hash, error, created_at, updated_at FROM orders"
    )
    history.orders = {str(r["id"]): dict(r) for r in rows}
    history.topic = status_events(await topic_messages(stack.settings, ORDER_STATUS))
    swaps = await fetch(stack.settings, "SELECT * FROM mock_dex_swaps WHERE kind = 'swap'")
    for row in swaps:
        history.swaps.setdefault(str(row["order_id"]), []).append(dict(row))
    for entry in log_events(stack, "venue.execute", "executor"):
        history.executions.append((str(entry["orderId"]), int(entry["attempt"])))
