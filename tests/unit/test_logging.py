from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from shared.logging import configure_logging, get_logger, truncate_ip

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """What the service's logging writes, one parsed JSON object per line."""
    handler = configure_logging("test-service", "info")
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    logging.getLogger().handlers.clear()


def test_one_json_object_per_line_with_service_and_bound_context(lines: Lines) -> None:
    with structlog.contextvars.bound_contextvars(orderId="o-1", correlationId="c-1"):
        get_logger("x").info("order.routed", dex="raydium")
    [line] = lines()
    assert (
        line["event"],
        line["service"],
        line["orderId"],
        line["correlationId"],
        line["dex"],
        line["level"],
    ) == ("order.routed", "test-service", "o-1", "c-1", "raydium", "info")
    assert "ts" in line


def test_input_cannot_forge_or_break_a_line(lines: Lines) -> None:
    get_logger("x").info("quote.failed", error='boom\n{"level":"critical"}\x1b[31m' + "A" * 5000)
    [line] = lines()
    assert "\n" not in str(line["error"]) and "\x1b" not in str(line["error"])
    assert len(str(line["error"])) == 512


def test_access_lines_carry_fields_and_no_whole_client_address(lines: Lines) -> None:
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "203.0.113.77:51234", "POST", "/api/orders/execute?x=1", "1.1", 202
    )
    [line] = lines()
    assert (line["event"], line["method"], line["path"], line["status"], line["client"]) == (
        "http.request",
        "POST",
        "/api/orders/execute",
        202,
        "203.0.113.0/24",
    )
    assert "203.0.113.77" not in json.dumps(line)


@pytest.mark.parametrize(
    "raw,expected",
    [("10.1.2.3:5", "10.1.2.0/24"), ("2001:db8:1:2::9", "2001:db8:1::/48"), ("garbage", "unknown")],
)
def test_truncate_ip(raw: str, expected: str) -> None:
    assert truncate_ip(raw) == expected


def test_a_long_traceback_keeps_its_end_where_the_error_is(lines: Lines) -> None:
    def deep(n: int) -> None:
        if n == 0:
            raise ValueError("the actual error")
        deep(n - 1)

    try:
        deep(200)
    except ValueError:
        get_logger("x").exception("boom")
    [line] = lines()
    assert str(line["exception"]).rstrip().endswith("ValueError: the actual error")


@pytest.mark.parametrize(
    "msg,args,status",
    [('%s - "WebSocket %s" [accepted]', (), "accepted"), ('%s - "WebSocket %s" %d', (429,), 429)],
)
def test_websocket_handshakes_carry_no_whole_client_address(
    lines: Lines, msg: str, args: tuple[object, ...], status: object
) -> None:
    logging.getLogger("uvicorn.error").info(
        msg, "198.51.100.23:40000", "/api/orders/execute?orderId=x", *args
    )
    [line] = lines()
    assert (line["event"], line["method"], line["path"], line["status"], line["client"]) == (
        "http.request",
        "WEBSOCKET",
        "/api/orders/execute",
        status,
        "198.51.100.0/24",
    )
    assert "198.51.100.23" not in json.dumps(line)
