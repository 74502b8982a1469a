"""The orderflow CLI without a server: the progress view as a function of the events, exit codes, the server
URL and its WebSocket twin, argument parsing, the POST retry that keeps one Idempotency-Key (httpx's
MockTransport), and the WebSocket bookkeeping that resumes with lastSeq and never shows an event twice."""

from __future__ import annotations

import argparse
import io
import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from rich.console import Console, RenderableType
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

from orderflow.__main__ import build_parser, list_orders, main, place
from orderflow.client import NewOrder, OrdersClient, RetryPolicy
from orderflow.config import DEFAULT_URL, base_url, ws_url
from orderflow.errors import ExitCode, ServerRefused, Unreachable, envelope_of, exit_code_for
from orderflow.output import Output, error_lines, orders_table
from orderflow.progress import Ticket, event_lines, fold, render, transcript
from orderflow.stream import Message, ReconnectPolicy, Tracker, follow
from shared.domain.events import Dex, Quote, StatusEvent
from shared.domain.status import OrderStatus

ORDER_ID = "6f0c2b1e-5d7a-4c3b-9e8f-0a1b2c3d4e5f"
T0 = datetime(2026, 11, 26, 9, 56, 18, 120_000, tzinfo=UTC)
TX = "55Vu" + "x" * 84
TICKET = Ticket(ORDER_ID, "SOL", "USDC", "1.5", Decimal("0.01"))
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


# --- the progress view ----------------------------------------------------------------------------------


def test_plain_lines_show_both_quotes_with_the_chosen_one_marked() -> None:
    lines = transcript(TICKET, confirmed_path(), UTC)

    assert lines[0] == (
        f"09:56:18.120   +0.00s pending    order {ORDER_ID}, 1.5 SOL -> USDC, slippage <= 100 bps"
    )
    assert lines[2] == "09:56:18.400   +0.28s building   best net amount on meteora"
    assert lines[3] == "      raydium  out 225.9 USDC  price 150.9  fee 0.25 %"
    assert lines[4] == "    * meteora  out 226 USDC  price 151.1  fee 0.2 %  <- chosen"
    assert lines[5] == "09:56:18.420   +0.30s submitted  swap sent to meteora"
    assert lines[6] == f"09:56:20.710   +2.59s confirmed  tx {TX}"


def test_the_live_view_puts_the_quotes_side_by_side_and_marks_the_chosen_one() -> None:
    text = text_of(render(TICKET, fold(confirmed_path()[:3]), T0, UTC))

    header = next(line for line in text.splitlines() if "raydium" in line and "meteora" in line)
    assert header.index("raydium") < header.index("✓ meteora (chosen)")
    assert "raydium (chosen)" not in text
    amounts = next(line for line in text.splitlines() if "amount out" in line)
    assert "225.9 USDC" in amounts and "226 USDC" in amounts
    assert "-0.1" in next(line for line in text.splitlines() if "vs chosen" in line)


def test_slippage_is_realised_against_the_chosen_venues_quote() -> None:
    """(quoted amountOut - amountOut) / quoted amountOut, in bps to the hundredth, as the executor computes
    it: (226 - 225.14) / 226 = 38.05 bps; the price moved (150.47 - 151.1) / 151.1 = -41.69 bps."""
    progress = fold(confirmed_path())

    assert progress.outcome is not None
    assert progress.outcome.quote is not None and progress.outcome.quote.dex == "meteora"
    assert progress.outcome.slippage_bps == Decimal("38.05")
    assert progress.outcome.price_move_bps == Decimal("-41.69")
    lines = transcript(TICKET, confirmed_path(), UTC)
    assert lines[-2:] == [
        "    executed price 150.47 vs quoted 151.1 (-41.69 bps)",
        "    amount out 225.14 USDC vs quoted 226 USDC -> slippage 38.05 bps (tolerance 100 bps)",
    ]
    live = text_of(render(TICKET, progress, T0, UTC))
    assert "✔ confirmed on meteora" in live and f"tx {TX}" in live
    assert "slippage 38.05 bps (tolerance 100 bps)" in live


def test_a_swap_that_returned_more_than_quoted_has_negative_slippage() -> None:
    progress = fold(confirmed_path(amount_out=Decimal("226.25")))
    assert progress.outcome is not None and progress.outcome.slippage_bps == Decimal("-11.06")


def test_without_the_quote_the_events_own_slippage_is_shown() -> None:
    """A watch that resumed past the routing event has no quote to compare with."""
    progress = fold(confirmed_path(slippage_bps=Decimal("12.5"))[3:])
    assert progress.outcome is not None and progress.outcome.quote is None
    assert progress.outcome.slippage_bps == Decimal("12.5")


def retrying() -> list[dict[str, Any]]:
    return [
        event(1, "pending", attempt=0),
        event(2, "routing", 0.03),
        event(
            3,
            "pending",
            0.5,
            attempt=2,
            error="venue_timeout",
            next_retry_at=T0 + timedelta(seconds=2.5),
        ),
    ]


def test_a_retry_shows_its_attempt_and_a_countdown_to_next_retry_at() -> None:
    assert transcript(TICKET, retrying(), UTC)[-1] == (
        "09:56:18.620   +0.50s pending    attempt 2/3 after venue_timeout, retry at 09:56:20.620 (in 2.0 s)"
    )
    progress = fold(retrying())
    assert progress.retry_pending is not None
    assert "↻ retry 2/3 after venue_timeout: in 1.5 s" in text_of(
        render(TICKET, progress, T0 + timedelta(seconds=1), UTC)
    )
    assert "↻ retry 2/3 after venue_timeout: now" in text_of(
        render(TICKET, progress, T0 + timedelta(seconds=3), UTC)
    )
    moved_on = fold([*retrying(), event(4, "routing", 2.6, attempt=2)])
    assert moved_on.retry_pending is None
    assert "↻" not in text_of(render(TICKET, moved_on, T0 + timedelta(seconds=3), UTC))


def failed_path() -> list[dict[str, Any]]:
    reason = "the swap would return 225.1, below the minimum 225.7"
    return [
        *confirmed_path()[:4],
        event(5, "failed", 2.4, dex=Dex.METEORA, error="slippage_exceeded", failure_reason=reason),
    ]


def test_a_failed_order_shows_its_failure_reason() -> None:
    reason = "the swap would return 225.1, below the minimum 225.7"
    assert transcript(TICKET, failed_path(), UTC)[-1] == (
        f"09:56:20.520   +2.40s failed     slippage_exceeded: {reason}"
    )
    live = text_of(render(TICKET, fold(failed_path()), T0, UTC))
    assert "✘ failed" in live and f"reason: {reason}" in live and "error: slippage_exceeded" in live


def test_a_cancelled_order_is_shown_as_such() -> None:
    events = [event(1, "pending", attempt=0), event(2, "cancelled", 0.4)]
    assert transcript(TICKET, events, UTC)[-1] == "09:56:18.520   +0.40s cancelled"
    assert "⊘ cancelled" in text_of(render(TICKET, fold(events), T0, UTC))


def test_each_events_lines_never_change_once_written() -> None:
    """A log gets event_lines of each new event: the whole transcript must be those, in order."""
    events = failed_path()
    written: list[str] = []
    for i in range(1, len(events) + 1):
        written.extend(event_lines(TICKET, events[:i], UTC))
        assert written == transcript(TICKET, events[:i], UTC)


# --- exit codes -----------------------------------------------------------------------------------------


def test_exit_codes() -> None:
    assert [exit_code_for(s) for s in ("confirmed", "failed", "cancelled")] == [0, 1, 3]
    with pytest.raises(ValueError, match="routing"):
        exit_code_for("routing")
    assert ServerRefused(409, {"error": "too_late_to_cancel", "message": "m"}).exit_code == 4
    assert Unreachable("http://x", "refused").exit_code == 5
    assert ExitCode.USAGE == 2


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["order", "--in", "SOL", "--out", "USDC", "--amount", "1.5"])
    assert exited.value.code == 2
    assert "--slippage" in capsys.readouterr().err


def test_help_documents_the_exit_codes_and_the_retry_budget(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["order", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "at most 30 s in all" in text
    for line in ("0 success", "1 the order failed", "2 usage error", "3 the order was cancelled"):
        assert line in text
    assert "4 the server refused" in text and "5 the server could not be reached" in text


# --- the server's address -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:3000", "ws://127.0.0.1:3000/api/orders/execute?orderId=ID"),
        ("http://127.0.0.1:3000/", "ws://127.0.0.1:3000/api/orders/execute?orderId=ID"),
        ("https://engine.example.com//", "wss://engine.example.com/api/orders/execute?orderId=ID"),
        ("https://example.com/engine/", "wss://example.com/engine/api/orders/execute?orderId=ID"),
    ],
)
def test_the_websocket_url_follows_the_http_one(base: str, expected: str) -> None:
    assert ws_url(base, "ID") == expected
    assert ws_url(base, "ID", last_seq=7) == expected + "&lastSeq=7"
    assert ws_url(base, "ID", last_seq=0) == expected + "&lastSeq=0"


def test_the_url_is_the_flag_else_the_environment_else_the_default() -> None:
    env = {"ORDERFLOW_URL": "https://env.example.com/"}
    assert base_url("http://flag:1/", env) == "http://flag:1"
    assert base_url(None, env) == "https://env.example.com"
    assert base_url(None, {}) == DEFAULT_URL
    assert base_url(None, {"ORDERFLOW_URL": ""}) == DEFAULT_URL


@pytest.mark.parametrize("bad", ["ftp://h", "127.0.0.1:3000", "http://", "http://h/?a=1", "ws://h"])
def test_a_url_that_is_not_http_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        base_url(bad, {})
    with pytest.raises(SystemExit) as exited:
        main(["--url", bad, "orders"])
    assert exited.value.code == 2


# --- argument parsing -----------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_order_arguments() -> None:
    args = parse("order", "--in", "SOL", "--out", "USDC", "--amount", "1.50", "--slippage", "0.01", "--watch")
    assert (args.command, args.token_in, args.token_out, args.amount, args.slippage) == (
        "order",
        "SOL",
        "USDC",
        "1.50",
        "0.01",
    )
    assert (args.watch, args.client_order_id, args.json, args.url) == (True, None, False, None)


def test_json_and_url_work_before_and_after_the_command() -> None:
    before = parse("--json", "--url", "http://a", "orders")
    after = parse("orders", "--json", "--url", "http://a")
    assert (before.json, before.url) == (after.json, after.url) == (True, "http://a")
    assert parse("--json", "orders").json is True  # not reset by the command's own (absent) --json


def test_orders_defaults_and_choices() -> None:
    args = parse("orders")
    assert (args.status, args.client_order_id, args.limit, args.cursor, args.all) == (
        None,
        None,
        20,
        None,
        False,
    )
    assert parse("orders", "--status", "cancelled", "--limit", "100", "--all").limit == 100


@pytest.mark.parametrize(
    "argv",
    [
        ["orders", "--limit", "0"],
        ["orders", "--limit", "101"],
        ["orders", "--status", "lost"],
        ["watch", "not-a-uuid"],
        ["cancel", "../../health"],
        ["order", "--in", "SOL", "--out", "USDC", "--amount", "1e3", "--slippage", "0.01"],
        ["order", "--in", "SOL", "--out", "USDC", "--amount", "1.5", "--slippage", "-0.01"],
        [],
    ],
)
def test_malformed_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2


def test_an_order_id_is_normalised() -> None:
    assert parse("watch", ORDER_ID.upper()).order_id == ORDER_ID


# --- HTTP: the POST retry keeps its key -----------------------------------------------------------------


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
ORDER = NewOrder("SOL", "USDC", "1.50", "0.01", client_order_id="mine-1")


async def test_a_refused_or_lost_post_is_retried_with_the_same_idempotency_key() -> None:
    server = FakeServer(
        refusal(503, "service_unavailable"),
        refusal(429, "rate_limited", headers={"Retry-After": "2"}, retryAfter=2),
        httpx.ConnectError("connection refused"),
        refusal(409, "idempotency_in_progress", retryAfter=1),
        ACCEPTED,
    )
    time = FakeTime()
    key = str(uuid.uuid4())

    accepted = await server.client(time).place(ORDER, key)

    assert accepted["orderId"] == ORDER_ID
    assert [r.headers["Idempotency-Key"] for r in server.requests] == [key] * 5
    assert [json.loads(r.content) for r in server.requests] == [
        {
            "type": "market",
            "tokenIn": "SOL",
            "tokenOut": "USDC",
            "amountIn": "1.50",
            "slippage": "0.01",
            "clientOrderId": "mine-1",
        }
    ] * 5
    # backoff 0.5 s, then the server's Retry-After (header), backoff of the 3rd attempt, the envelope's
    assert time.waits == [0.5, 2.0, 2.0, 1.0]


async def test_a_request_the_server_refuses_for_good_is_not_retried() -> None:
    details = [{"field": "amountIn", "message": "must be greater than 0"}]
    server = FakeServer(refusal(400, "invalid_body", details=details))

    with pytest.raises(ServerRefused) as refused:
        await server.client().place(ORDER, "k")

    assert len(server.requests) == 1
    assert (refused.value.status, refused.value.code, refused.value.details) == (400, "invalid_body", details)
    assert error_lines(refused.value) == [
        "error: invalid_body (HTTP 400): invalid_body happened",
        "  amountIn: must be greater than 0",
        "  correlation id: c-1",
    ]


async def test_retries_stop_within_thirty_seconds_with_the_last_refusal() -> None:
    server = FakeServer(forever=refusal(503, "service_unavailable"))
    time = FakeTime()

    with pytest.raises(ServerRefused) as refused:
        await server.client(time).place(ORDER, "key-1")

    assert time.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]  # a 7th wait of 8 s would end past 30 s
    assert len(server.requests) == 7
    assert (refused.value.status, refused.value.code, refused.value.exit_code) == (
        503,
        "service_unavailable",
        4,
    )
    assert refused.value.hint is not None and "--idempotency-key key-1" in refused.value.hint


async def test_a_retry_after_beyond_the_budget_is_not_waited_for() -> None:
    server = FakeServer(forever=refusal(429, "queue_full", headers={"Retry-After": "45"}))
    time = FakeTime()
    with pytest.raises(ServerRefused):
        await server.client(time).place(ORDER, "k")
    assert (len(server.requests), time.waits) == (1, [])


async def test_a_server_that_never_answers_is_unreachable() -> None:
    server = FakeServer(forever=httpx.ConnectError("connection refused"))
    time = FakeTime()
    with pytest.raises(Unreachable) as unreachable:
        await server.client(time).place(ORDER, "k")
    assert unreachable.value.exit_code == 5 and sum(time.waits) <= 30
    assert unreachable.value.envelope()["error"] == "unreachable"
    assert "ConnectError: connection refused" in unreachable.value.message


async def test_list_and_cancel_call_their_routes() -> None:
    page: dict[str, Any] = {"orders": [], "nextCursor": None}
    server = FakeServer(
        httpx.Response(200, json=page),
        refusal(409, "too_late_to_cancel"),
    )
    client = server.client()

    assert await client.list(status="failed", limit=5) == page
    with pytest.raises(ServerRefused) as refused:
        await client.cancel(ORDER_ID)

    listed, cancelled = server.requests
    assert (listed.method, listed.url.path, dict(listed.url.params)) == (
        "GET",
        "/api/orders",
        {"status": "failed", "limit": "5"},
    )
    assert (cancelled.method, cancelled.url.path) == ("DELETE", f"/api/orders/{ORDER_ID}")
    assert (refused.value.code, len(server.requests)) == ("too_late_to_cancel", 2)


def test_an_error_page_that_is_not_an_envelope_still_reads_as_one() -> None:
    assert envelope_of(502, b"<html><body>502 Bad Gateway</body></html>") == {
        "error": "http_502",
        "message": "Bad Gateway",
    }
    assert envelope_of(404, b'{"error":"not_found","message":"order x not found"}')["error"] == "not_found"


def output(*, json_mode: bool) -> tuple[Output, io.StringIO, io.StringIO]:
    stdout, stderr = io.StringIO(), io.StringIO()
    return Output(stdout, stderr, json_mode=json_mode, tty=False, tz=UTC), stdout, stderr


async def test_orders_all_follows_the_cursors() -> None:
    first, second = ({"orderId": f"o{i}", "status": "confirmed"} for i in (1, 2))
    server = FakeServer(
        httpx.Response(200, json={"orders": [first], "nextCursor": "c1"}),
        httpx.Response(200, json={"orders": [second], "nextCursor": None}),
    )
    out, stdout, _ = output(json_mode=True)

    code = await list_orders(server.client(), parse("--json", "orders", "--limit", "1", "--all"), out)

    assert code == 0
    assert json.loads(stdout.getvalue()) == {"orders": [first, second], "nextCursor": None}
    assert [r.url.params.get("cursor") for r in server.requests] == [None, "c1"]


async def test_orders_prints_a_table_and_the_next_cursor() -> None:
    orders = [
        {"orderId": "o-new", "status": "failed", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5"},
        {"orderId": "o-old", "status": "confirmed", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "2"},
    ]
    server = FakeServer(httpx.Response(200, json={"orders": orders, "nextCursor": "next-page"}))
    out, stdout, _ = output(json_mode=False)

    await list_orders(server.client(), parse("orders", "--status", "failed"), out)

    text = stdout.getvalue()
    assert text.index("o-new") < text.index("o-old")
    assert text.rstrip().endswith("next cursor: next-page")
    assert server.requests[0].url.params["status"] == "failed"
    assert "o-new" in text_of(orders_table(orders))


async def test_order_without_watch_prints_the_order_id_alone() -> None:
    server = FakeServer(ACCEPTED)
    out, stdout, _ = output(json_mode=False)
    args = parse("order", "--in", "SOL", "--out", "USDC", "--amount", "1.5", "--slippage", "0.01")

    assert await place(server.client(), "http://engine.test", args, out) == 0

    assert stdout.getvalue() == f"{ORDER_ID}\n"
    key = server.requests[0].headers["Idempotency-Key"]
    assert uuid.UUID(key).version == 4


def test_errors_print_the_envelope_as_json_for_scripts() -> None:
    out, stdout, stderr = output(json_mode=True)
    envelope = {"error": "not_found", "message": "order x not found", "correlationId": "c-9"}
    out.error(ServerRefused(404, envelope))
    assert (stdout.getvalue(), json.loads(stderr.getvalue())) == ("", envelope)


# --- WebSocket: resume with lastSeq, never an event twice -----------------------------------------------


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
