"""The orderflow WebSocket follower: the bookkeeping that resumes with lastSeq and never shows an event twice,
and the reconnects, with their backoff, over scripted connections."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

from orderflow.errors import ServerRefused, Unreachable
from orderflow.stream import Message, ReconnectPolicy, Tracker, follow
from tests.unit.orderflow_helpers import ORDER_ID, FakeTime, confirmed_path


def snapshot(status: str, seq: int, logs: list[dict[str, Any]]) -> Message:
    return {"type": "snapshot", "orderId": ORDER_ID, "status": status, "seq": seq, "logs": logs}


def status(event: dict[str, Any]) -> Message:
    return {"type": "status", **event}


def test_the_tracker_keeps_each_event_once_and_knows_where_to_resume() -> None:
    events = confirmed_path()
    tracker = Tracker(ORDER_ID)
    assert tracker.resume_from is None  # no snapshot yet: the next one must be whole

    first = snapshot("routing", 2, events[:2])
    assert tracker.accept(first) == [first]
    assert tracker.accept(status(events[2])) == [status(events[2])]
    assert tracker.accept(status(events[1])) == []  # old news
    assert tracker.accept({"type": "ping"}) == []
    assert tracker.resume_from == 3

    # the resumed snapshot repeats seq 3 (it should not, but a client cannot count on it) and brings 4
    assert tracker.accept(snapshot("submitted", 4, events[2:4])) == [status(events[3])]
    assert tracker.accept(status(events[3])) == []
    assert not tracker.finished
    assert tracker.accept(status(events[4])) == [status(events[4])]
    assert tracker.finished and tracker.status == "confirmed"
    assert [e["seq"] for e in tracker.events] == [1, 2, 3, 4, 5]


Script = list[Message | BaseException] | BaseException


class FakeSockets:
    """A connector whose n-th connection plays the n-th script: messages, then maybe an exception (a close
    code, a lost connection); a script that is an exception fails the handshake."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.urls: list[str] = []

    def __call__(self, url: str) -> AbstractAsyncContextManager[AsyncIterable[str | bytes]]:
        self.urls.append(url)
        return self._connect(self.scripts.pop(0))

    @asynccontextmanager
    async def _connect(self, script: Script) -> AsyncIterator[AsyncIterable[str | bytes]]:
        if isinstance(script, BaseException):
            raise script

        async def messages() -> AsyncIterator[str]:
            for item in script:
                if isinstance(item, BaseException):
                    raise item
                yield json.dumps(item)

        yield messages()


def closed(code: int, reason: str = "") -> ConnectionClosedError:
    return ConnectionClosedError(Close(code, reason), None)


def handshake_refused(code: int, error: str) -> InvalidStatus:
    body = json.dumps({"error": error, "message": f"{error} happened"}).encode()
    return InvalidStatus(Response(code, "refused", Headers(), body))


async def follow_with(sockets: FakeSockets, time: FakeTime | None = None) -> tuple[str, list[Message]]:
    """Follow the order over `sockets`; returns its final status and every message printed for it."""
    time = time or FakeTime()
    printed: list[Message] = []
    tracker = Tracker(ORDER_ID)
    final = await follow(
        "http://engine.test", tracker, printed.extend, connector=sockets, sleep=time.sleep, clock=time.clock
    )
    return final, printed


def seqs(messages: list[Message]) -> list[int]:
    """The seq of every event in printed messages, in the order printed."""
    out: list[int] = []
    for message in messages:
        if message["type"] == "snapshot":
            out.extend(e["seq"] for e in message["logs"])
        else:
            out.append(message["seq"])
    return out


async def test_a_dropped_stream_resumes_after_the_last_seq_without_repeating_an_event() -> None:
    events = confirmed_path()
    unavailable = {"type": "error", "error": "service_unavailable", "message": "db down"}
    sockets = FakeSockets(
        [snapshot("building", 3, events[:3]), unavailable, closed(1011)],
        OSError("connection refused"),  # the notifier restarts
        handshake_refused(503, "service_unavailable"),  # then is full for a moment
        [snapshot("submitted", 4, events[2:4]), status(events[3]), closed(1013)],  # 3 again; too slow
        [snapshot("confirmed", 5, events[4:]), status(events[4]), ConnectionClosedOK(Close(1000, ""), None)],
    )
    time = FakeTime()

    final, printed = await follow_with(sockets, time)

    assert final == "confirmed"
    assert seqs(printed) == [1, 2, 3, 4, 5]
    assert [m["type"] for m in printed] == [
        "snapshot",
        "status",
        "status",
    ]  # one snapshot, whatever the drops
    base = "ws://engine.test/api/orders/execute?orderId=" + ORDER_ID
    assert sockets.urls == [
        base,
        f"{base}&lastSeq=3",
        f"{base}&lastSeq=3",
        f"{base}&lastSeq=3",
        f"{base}&lastSeq=4",
    ]
    assert time.waits == [0.2, 0.5, 1.0, 0.2]  # the backoff starts over once a connection brought something


async def test_a_connection_lost_before_the_first_snapshot_starts_over_without_last_seq() -> None:
    events = confirmed_path()
    sockets = FakeSockets([ConnectionClosedError(None, None)], [snapshot("confirmed", 5, events)])
    final, printed = await follow_with(sockets)
    assert final == "confirmed" and seqs(printed) == [1, 2, 3, 4, 5]
    assert "lastSeq" not in sockets.urls[1]


async def test_an_unknown_order_ends_the_watch_with_not_found() -> None:
    not_found = {"type": "error", "error": "not_found", "message": "order not found", "correlationId": "c"}
    sockets = FakeSockets([not_found, closed(4404)])
    with pytest.raises(ServerRefused) as refused:
        await follow_with(sockets)
    assert (refused.value.code, refused.value.exit_code, len(sockets.urls)) == ("not_found", 4, 1)


async def test_a_handshake_refused_for_good_is_not_retried() -> None:
    sockets = FakeSockets(handshake_refused(400, "invalid_body"))
    with pytest.raises(ServerRefused) as refused:
        await follow_with(sockets)
    assert (refused.value.status, refused.value.code) == (400, "invalid_body")


async def test_a_server_gone_for_good_ends_the_watch_as_unreachable() -> None:
    sockets = FakeSockets(*[OSError("connection refused")] * 20)
    time = FakeTime()
    with pytest.raises(Unreachable):
        await follow_with(sockets, time)
    assert time.waits == [0.2, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert sum(time.waits) <= ReconnectPolicy().give_up_after_s
