"""What the orderflow unit tests share: an order's status events as the server sends them, a console that
renders to text, the argument parser, and a scripted HTTP server with a clock its retries advance."""

from __future__ import annotations

import argparse
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console, RenderableType

from orderflow.__main__ import build_parser
from orderflow.client import OrdersClient, RetryPolicy
from shared.domain.events import Dex, Quote, StatusEvent
from shared.domain.status import OrderStatus

ORDER_ID = "6f0c2b1e-5d7a-4c3b-9e8f-0a1b2c3d4e5f"
T0 = datetime(2026, 11, 26, 9, 56, 18, 120_000, tzinfo=UTC)
TX = "55Vu" + "x" * 84
QUOTES = {
    Dex.RAYDIUM: Quote(
        dex=Dex.RAYDIUM, price=Decimal("150.9"), fee=Decimal("0.0025"), amount_out=Decimal("225.9")
    ),
    Dex.METEORA: Quote(
        dex=Dex.METEORA, price=Decimal("151.1"), fee=Decimal("0.002"), amount_out=Decimal("226")
    ),
}


def event(seq: int, status: str, after_s: float = 0.0, **fields: Any) -> dict[str, Any]:
    """A status event as the server sends it (built with the wire model, so the CLI reads the real shape)."""
    model = StatusEvent(
        order_id=uuid.UUID(ORDER_ID),
        seq=seq,
        status=OrderStatus(status),
        at=T0 + timedelta(seconds=after_s),
        **{"attempt": 1, "max_attempts": 3, **fields},
    )
    return model.to_dict()


def confirmed_path(**confirmed: Any) -> list[dict[str, Any]]:
    """pending -> confirmed, meteora chosen (the better net amount); `confirmed` overrides the last event."""
    return [
        event(1, "pending", attempt=0),
        event(2, "routing", 0.03),
        event(3, "building", 0.28, dex=Dex.METEORA, quotes=QUOTES),
        event(4, "submitted", 0.30, dex=Dex.METEORA),
        event(
            5,
            "confirmed",
            2.59,
            **{
                "dex": Dex.METEORA,
                "tx_hash": TX,
                "executed_price": Decimal("150.47"),
                "amount_out": Decimal("225.14"),
                **confirmed,
            },
        ),
    ]


def text_of(renderable: RenderableType) -> str:
    console = Console(width=120, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


Reply = httpx.Response | Exception


class FakeTime:
    """A clock that the retry's sleeps advance."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class FakeServer:
    """Answers requests from a script (a reply, or an exception to raise), recording each request."""

    def __init__(self, *replies: Reply, forever: Reply | None = None) -> None:
        self.replies = list(replies)
        self.forever = forever
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if self.replies else self.forever
        assert reply is not None, "more requests than the script has replies"
        if isinstance(reply, Exception):
            raise reply
        return reply

    def client(self, time: FakeTime | None = None) -> OrdersClient:
        time = time or FakeTime()
        http = httpx.AsyncClient(base_url="http://engine.test", transport=httpx.MockTransport(self))
        return OrdersClient(http, retry=RetryPolicy(), sleep=time.sleep, clock=time.clock)


def refusal(status: int, code: str, headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    body = {"error": code, "message": f"{code} happened", "correlationId": "c-1", **extra}
    return httpx.Response(status, json=body, headers=headers)


ACCEPTED = httpx.Response(202, json={"orderId": ORDER_ID, "status": "pending", "clientOrderId": "mine-1"})
