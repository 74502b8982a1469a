"""The orderflow CLI's command line: exit codes, the server URL and its WebSocket twin, argument parsing."""

from __future__ import annotations

import pytest

from orderflow.__main__ import main
from orderflow.config import DEFAULT_URL, api_key, auth_headers, base_url, ws_url
from orderflow.errors import ExitCode, ServerRefused, Unreachable, exit_code_for
from tests.unit.orderflow_helpers import ORDER_ID, parse

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


def test_the_api_key_is_the_flag_else_the_environment_else_none() -> None:
    env = {"ORDERFLOW_API_KEY": "oe_from_env"}
    assert api_key("oe_flag", env) == "oe_flag"
    assert api_key(None, env) == "oe_from_env"
    assert api_key(None, {}) is None and api_key(None, {"ORDERFLOW_API_KEY": " "}) is None
    assert auth_headers("oe_k") == {"Authorization": "Bearer oe_k"} and auth_headers(None) == {}
    before, after = parse("--api-key", "oe_k", "orders"), parse("orders", "--api-key", "oe_k")
    assert before.api_key == after.api_key == "oe_k"
    assert parse("orders").api_key is None


@pytest.mark.parametrize("bad", ["oe secret", "oe_s\u00e9cret", "oe_\nsecret"])
def test_a_key_no_header_could_carry_is_a_usage_error_that_does_not_echo_it(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--api-key", bad, "orders"])
    assert exited.value.code == 2
    assert "secret" not in capsys.readouterr().err


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
