from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from shared.runtime.logging import LineSink, configure_logging, get_logger, truncate_ip

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """What the service's logging writes, one parsed JSON object per line."""
    out = io.BytesIO()
    handler = configure_logging("test-service", "info", stream=out)

    def written() -> list[dict[str, Any]]:
        handler.flush()
        return [json.loads(line) for line in out.getvalue().splitlines()]

    yield written
    logging.getLogger().handlers.clear()


def test_one_json_object_per_line_with_service_and_bound_context(lines: Lines) -> None:
    with structlog.contextvars.bound_contextvars(orderId="o-1", correlationId="c-1", jobId="orders/0/7"):
        get_logger("x").info("order.routed", dex="raydium")
    [line] = lines()
    assert (
        line["event"],
        line["service"],
        line["orderId"],
        line["correlationId"],
        line["jobId"],
        line["dex"],
        line["level"],
        line["logger"],
    ) == ("order.routed", "test-service", "o-1", "c-1", "orders/0/7", "raydium", "info", "x")
    assert str(line["ts"]).endswith("Z")


def test_library_lines_carry_the_same_fields_and_keep_their_order_among_ours(lines: Lines) -> None:
    with structlog.contextvars.bound_contextvars(orderId="o-2", correlationId="c-2"):
        get_logger("ours").info("first")
        logging.getLogger("some.library").warning("second %s", "line")
        get_logger("ours").info("third")
    first, second, third = lines()
    assert [first["event"], second["event"], third["event"]] == ["first", "second line", "third"]
    assert (
        second["service"],
        second["orderId"],
        second["correlationId"],
        second["level"],
        second["logger"],
    ) == (
        "test-service",
        "o-2",
        "c-2",
        "warning",
        "some.library",
    )
    assert str(second["ts"]).endswith("Z")


def test_log_level_drops_lower_lines_of_ours_and_the_libraries() -> None:
    out = io.BytesIO()
    handler = configure_logging("test-service", "warning", stream=out)
    try:
        get_logger("quiet").info("dropped")
        get_logger("quiet").debug("dropped")
        logging.getLogger("uvicorn.access").info("dropped")
        get_logger("quiet").warning("kept")
        logging.getLogger("some.library").error("kept too")
        handler.flush()
        assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["kept", "kept too"]
    finally:
        configure_logging("test-service", "info", stream=io.BytesIO())
        logging.getLogger().handlers.clear()


def test_an_exception_passed_as_exc_info_is_rendered(lines: Lines) -> None:
    try:
        raise RuntimeError("relay down")
    except RuntimeError as exc:
        error = exc
    get_logger("x").error("outbox.relay_error", error=repr(error), exc_info=error)
    [line] = lines()
    assert line["level"] == "error"
    assert str(line["exception"]).rstrip().endswith("RuntimeError: relay down")


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


class CountingStream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


def test_outside_an_event_loop_each_line_is_written_at_once() -> None:
    out = CountingStream()
    sink = LineSink(out)
    sink.write(b"one\n")
    sink.write(b"two\n")
    assert (out.getvalue(), out.writes) == (b"one\ntwo\n", 2)


async def test_lines_of_one_loop_iteration_are_written_together_when_it_ends() -> None:
    out = CountingStream()
    sink = LineSink(out)
    for n in range(100):
        sink.write(b"%d\n" % n)
    assert out.writes == 0
    await asyncio.sleep(0)
    assert out.writes == 1 and out.getvalue().splitlines() == [b"%d" % n for n in range(100)]
    sink.write(b"next\n")
    await asyncio.sleep(0)
    assert out.writes == 2 and out.getvalue().endswith(b"99\nnext\n")


async def test_a_large_burst_is_written_before_the_iteration_ends() -> None:
    out = CountingStream()
    sink = LineSink(out)
    line = b"x" * 1000 + b"\n"
    for _ in range(LineSink.FLUSH_BYTES // len(line) + 1):
        sink.write(line)
    assert out.writes == 1


def test_a_broken_stdout_drops_lines_instead_of_raising_into_the_caller() -> None:
    out = io.BytesIO()
    out.close()
    LineSink(out).write(b"lost\n")


async def test_a_warning_or_a_library_line_is_written_at_once_after_what_waits() -> None:
    """A process can die before the loop's next iteration (uvicorn re-raises SIGTERM right after its last
    lines): what explains it is never held back."""
    out = CountingStream()
    configure_logging("test-service", "info", stream=out)
    try:
        get_logger("x").info("waits")
        assert out.writes == 0
        get_logger("x").warning("now")
        assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["waits", "now"]
        get_logger("x").info("waits again")
        logging.getLogger("uvicorn.error").info("Finished server process")
        assert json.loads(out.getvalue().splitlines()[-1])["event"] == "Finished server process"
        assert out.writes == 2
    finally:
        configure_logging("test-service", "info", stream=io.BytesIO())
        logging.getLogger().handlers.clear()
