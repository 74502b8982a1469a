"""Following one order over the WebSocket until it is terminal, through reconnects.

`Tracker` is the bookkeeping (pure): the events seen, each once and in seq order, and the `lastSeq` to resume
from. `follow` is the I/O around it: connect, feed every message to the tracker, and when the socket drops
before the terminal event (an abnormal close, 1011, 1013, 4408, a refused or lost connection) reconnect with
`lastSeq` after a short backoff; 4400 and 4404 are the server's answer and end it (ServerRefused)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from orderflow.config import ws_url
from orderflow.errors import TERMINAL, OrderflowError, ServerRefused, Unreachable, describe, envelope_of

Message = dict[str, Any]
Connector = Callable[[str], AbstractAsyncContextManager[AsyncIterable[str | bytes]]]

CLOSE_ABNORMAL = 1006  # no close frame: the connection was lost
REFUSAL_CLOSE_CODES = frozenset({4400, 4404})  # malformed orderId / lastSeq, unknown order
RETRIABLE_HANDSHAKE_STATUSES = frozenset({429, 502, 503, 504})  # per-order limit, notifier full or down
OPEN_TIMEOUT_S = 10.0


class Tracker:
    """What has been seen of one order's stream. `accept` takes each message and returns what is new, as
    messages to print: the first snapshot as received, then one `status` message per event not seen before
    (the events of a resumed snapshot become status messages, so a reader sees one snapshot whatever the
    reconnects). `events` is the order's history so far, without `type`."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        self.events: list[Message] = []
        self.status: str | None = None
        self.last_seq = 0
        self.error: Message | None = None  # the last error envelope the server sent
        self._snapshots = 0

    @property
    def resume_from(self) -> int | None:
        """`lastSeq` for the next connection: None until a snapshot came (then the next one is complete)."""
        return self.last_seq if self._snapshots else None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def accept(self, message: Message) -> list[Message]:
        kind = message.get("type")
        if kind == "snapshot":
            logs = message.get("logs")
            fresh = self._take(logs if isinstance(logs, list) else [])
            if isinstance(message.get("status"), str):
                self.status = message["status"]
            if isinstance(message.get("seq"), int):
                self.last_seq = max(self.last_seq, message["seq"])
            self._snapshots += 1
            if self._snapshots == 1:
                return [message]
            return [{"type": "status", **event} for event in fresh]
        if kind == "status":
            event = {k: v for k, v in message.items() if k != "type"}
            return [message] if self._take([event]) else []
        if kind == "error":
            self.error = {k: v for k, v in message.items() if k != "type"}
        return []  # ping, pong, error (reported when the close comes), and anything newer than this client

    def _take(self, events: list[Any]) -> list[Message]:
        fresh: list[Message] = []
        candidates = [e for e in events if isinstance(e, dict) and isinstance(e.get("seq"), int)]
        for event in sorted(candidates, key=lambda e: int(e["seq"])):
            if event["seq"] <= self.last_seq:
                continue
            self.events.append(event)
            self.last_seq = event["seq"]
            if isinstance(event.get("status"), str):
                self.status = event["status"]
            fresh.append(event)
        return fresh


@dataclass(frozen=True)
class ReconnectPolicy:
    """Waits between reconnects (the last one repeats); give up once `give_up_after_s` has passed without a
    message from the server."""

    delays_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0)
    give_up_after_s: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after `failures` (1, 2, ...) connections in a row that brought nothing."""
        return self.delays_s[min(failures, len(self.delays_s)) - 1]


def open_socket(url: str) -> AbstractAsyncContextManager[AsyncIterable[str | bytes]]:
    return connect(url, open_timeout=OPEN_TIMEOUT_S)


def socket_opener(headers: Mapping[str, str]) -> Connector:
    """A connector whose handshakes carry `headers` (the API key's Authorization)."""

    def open_with_headers(url: str) -> AbstractAsyncContextManager[AsyncIterable[str | bytes]]:
        return connect(url, open_timeout=OPEN_TIMEOUT_S, additional_headers=dict(headers))

    return open_with_headers


def decode(raw: str | bytes) -> Message | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


async def follow(
    base_url: str,
    tracker: Tracker,
    on_update: Callable[[list[Message]], None],
    *,
    connector: Connector = open_socket,
    policy: ReconnectPolicy | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Follow the order until it is terminal and return its status; `on_update` gets what `accept` returned
    for each message that brought something new."""
    policy = policy or ReconnectPolicy()
    failures = 0
    heard_at = clock()
    while True:
        url = ws_url(base_url, tracker.order_id, tracker.resume_from)
        tracker.error = None
        problem: OrderflowError
        try:
            async with connector(url) as socket:
                async for raw in socket:
                    message = decode(raw)
                    if message is None:
                        continue
                    failures, heard_at = 0, clock()
                    update = tracker.accept(message)
                    if update:
                        on_update(update)
                    if tracker.finished:
                        assert tracker.status is not None
                        return tracker.status
            problem = Unreachable(url, "the server closed the stream before the order finished")
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else CLOSE_ABNORMAL
            if code in REFUSAL_CLOSE_CODES:
                envelope = tracker.error or {
                    "error": f"closed_{code}",
                    "message": exc.rcvd.reason if exc.rcvd else "",
                }
                raise ServerRefused(None, envelope) from exc
            if tracker.error is not None:
                problem = ServerRefused(None, tracker.error)
            else:
                problem = Unreachable(url, f"the connection closed with {code}")
        except InvalidStatus as exc:
            status = exc.response.status_code
            refusal = ServerRefused(status, envelope_of(status, bytes(exc.response.body)))
            if status not in RETRIABLE_HANDSHAKE_STATUSES:
                raise refusal from exc
            problem = refusal
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            problem = Unreachable(url, describe(exc))
        if tracker.finished:  # the terminal event came, then the socket broke
            assert tracker.status is not None
            return tracker.status
        failures += 1
        wait = policy.delay(failures)
        if clock() - heard_at + wait > policy.give_up_after_s:
            raise problem
        await sleep(wait)
