"""orderflow: place, watch, list and cancel orders on the order execution engine.

  orderflow order --in SOL --out USDC --amount 1.5 --slippage 0.01 [--watch]
  orderflow watch ORDER_ID
  orderflow orders [--status failed] [--client-order-id X] [--limit 20] [--cursor C] [--all]
  orderflow cancel ORDER_ID

The server is --url, else $ORDERFLOW_URL, else http://127.0.0.1:3000; its WebSocket is the same address
with ws:// (https: wss://). A server with API keys needs one: --api-key, else $ORDERFLOW_API_KEY (the
better place: a flag shows in the process list), sent as `Authorization: Bearer` on every request and
handshake. --json (before or after the command) is for scripts: order --watch and watch print each
WebSocket message as one JSON line (the snapshot, then one status message per event, each event
once across reconnects), order prints the accepted order, orders prints {"orders": [...], "nextCursor": ...},
cancel prints the order; an error prints the server's error envelope as JSON on stderr.

exit codes:
  0  success; for order --watch and watch: the order was confirmed
  1  the order failed
  2  usage error (a missing or malformed argument)
  3  the order was cancelled
  4  the server refused the request (4xx; 5xx or 429 still after the retries): its error code, message and
     details are printed
  5  the server could not be reached
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import textwrap
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from rich.console import RenderableType
from rich.live import Live

from orderflow import __version__
from orderflow.client import TIMEOUT, NewOrder, OrdersClient
from orderflow.config import API_KEY_ENV, DEFAULT_URL, URL_ENV, api_key, auth_headers, base_url
from orderflow.errors import ExitCode, OrderflowError, ServerRefused, exit_code_for
from orderflow.output import Output, order_summary, orders_table
from orderflow.progress import Ticket, fold
from orderflow.progress_view import event_lines, render
from orderflow.stream import Connector, Message, Tracker, follow, open_socket, socket_opener

DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")
STATUSES = ("pending", "routing", "building", "submitted", "confirmed", "failed", "cancelled")
MAX_LIMIT = 100
HELP_WIDTH = 100
INTERRUPTED = 130  # the shell's code for SIGINT
EXIT_CODES = __doc__[__doc__.index("exit codes:") :] if __doc__ else ""


def decimal_text(value: str) -> str:
    """A decimal in plain notation, sent as typed (the server checks the ranges)."""
    if not DECIMAL.match(value):
        raise argparse.ArgumentTypeError(f"must be a decimal such as 1.5, not {value!r}")
    return value


def order_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an order id (a UUID), not {value!r}") from None


def limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}, not {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    url_help = f"the server (default: ${URL_ENV}, else {DEFAULT_URL})"
    json_help = "print JSON for scripts instead of tables and live progress"
    key_help = f"the API key, for a server with API keys (default: ${API_KEY_ENV})"
    # --url, --json and --api-key work before or after the command: the command's copies default to "not
    # given", so they leave the global values alone unless they are used.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=url_help)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)
    common.add_argument("--api-key", default=argparse.SUPPRESS, metavar="KEY", help=key_help)

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="orderflow", description=__doc__, formatter_class=formatter)
    parser.add_argument("--url", default=None, help=url_help)
    parser.add_argument("--json", action="store_true", default=False, help=json_help)
    parser.add_argument("--api-key", default=None, metavar="KEY", help=key_help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description="\n\n".join(
                [*(textwrap.fill(p, HELP_WIDTH) for p in description.split("\n\n")), EXIT_CODES]
            ),
            formatter_class=formatter,
        )

    order = command(
        "order",
        "place a market order",
        "Place a market order and print its id (with --watch: follow it until it is confirmed, failed or"
        " cancelled).\n\nThe order is sent with a fresh Idempotency-Key. A network error, a 5xx, a 429 or a"
        " 409 idempotency_in_progress is retried with the same key, after the server's Retry-After when it"
        " gives one, for at most 30 s in all: a retry replays the order if it was placed, and never places"
        " it twice.",
    )
    order.add_argument("--in", dest="token_in", required=True, metavar="TOKEN", help="token to sell (SOL)")
    order.add_argument("--out", dest="token_out", required=True, metavar="TOKEN", help="token to buy (USDC)")
    order.add_argument("--amount", required=True, type=decimal_text, help="amount of --in to sell (1.5)")
    order.add_argument(
        "--slippage", required=True, type=decimal_text, help="tolerated slippage, a fraction (0.01 = 1 %%)"
    )
    order.add_argument("--client-order-id", help="your own reference, stored with the order")
    order.add_argument(
        "--idempotency-key",
        help="the Idempotency-Key to send (default: a fresh UUID); repeat the one an interrupted order"
        " printed to learn its fate without placing it twice",
    )
    order.add_argument("--watch", action="store_true", help="follow the order until it is terminal")

    watch = command(
        "watch",
        "follow an order until it is terminal",
        "Follow an order's progress until it is confirmed, failed or cancelled. Where the stream drops, it"
        " reconnects and resumes after the last event seen (never showing one twice), giving up after 30 s"
        " without news from the server.",
    )
    watch.add_argument("order_id", metavar="ORDER_ID", type=order_id)

    listing = command(
        "orders",
        "list orders, newest first",
        "List orders, newest first, and print the cursor of the next page if there is one.",
    )
    listing.add_argument("--status", choices=STATUSES, help="only orders in this status")
    listing.add_argument("--client-order-id", help="only orders with this client order id")
    listing.add_argument(
        "--limit", type=limit, default=20, help=f"orders per page, 1-{MAX_LIMIT} (default 20)"
    )
    listing.add_argument("--cursor", help="the page after this cursor (printed by a previous call)")
    listing.add_argument("--all", action="store_true", help="follow the cursors to the last page")

    cancel = command(
        "cancel",
        "cancel an order",
        "Cancel an order that has not been submitted yet, and print it (409 too_late_to_cancel after that).",
    )
    cancel.add_argument("order_id", metavar="ORDER_ID", type=order_id)
    return parser


async def watch_order(base: str, ticket: Ticket, out: Output, connector: Connector = open_socket) -> ExitCode:
    """Follow the order to its end: NDJSON, a live view on a terminal, or plain lines for a log."""
    tracker = Tracker(ticket.order_id)
    if out.json_mode:

        def print_messages(update: list[Message]) -> None:
            for message in update:
                out.json(message)

        status = await follow(base, tracker, print_messages, connector=connector)
    elif out.tty:

        def view() -> RenderableType:
            return render(ticket, fold(tuple(tracker.events)), datetime.now(UTC), out.tz)

        with Live(console=out.console, get_renderable=view, refresh_per_second=8):
            status = await follow(base, tracker, lambda update: None, connector=connector)
    else:
        printed = 0

        def print_lines(update: list[Message]) -> None:
            nonlocal printed
            while printed < len(tracker.events):
                printed += 1
                for line in event_lines(ticket, tracker.events[:printed], out.tz):
                    out.line(line)

        status = await follow(base, tracker, print_lines, connector=connector)
    return exit_code_for(status)


async def place(
    client: OrdersClient, base: str, args: argparse.Namespace, out: Output, connector: Connector = open_socket
) -> ExitCode:
    key = args.idempotency_key or str(uuid.uuid4())
    order = NewOrder(args.token_in, args.token_out, args.amount, args.slippage, args.client_order_id)
    accepted = await client.place(order, key)
    placed = str(accepted.get("orderId", ""))
    if not args.watch:
        if out.json_mode:
            out.json(accepted)
        else:
            out.line(placed)
        return ExitCode.SUCCESS
    ticket = Ticket(placed, args.token_in, args.token_out, args.amount, Decimal(args.slippage))
    return await watch_order(base, ticket, out, connector)


async def watch(
    client: OrdersClient, base: str, args: argparse.Namespace, out: Output, connector: Connector = open_socket
) -> ExitCode:
    ticket = Ticket(args.order_id)
    if not out.json_mode:  # the header (pair, amount, tolerance) comes from the order itself
        ticket = Ticket.of_view(await client.get(args.order_id))
    return await watch_order(base, ticket, out, connector)


async def list_orders(client: OrdersClient, args: argparse.Namespace, out: Output) -> ExitCode:
    orders: list[Any] = []
    cursor: str | None = args.cursor
    followed: set[str] = set()
    while True:
        page = await client.list(
            status=args.status, client_order_id=args.client_order_id, limit=args.limit, cursor=cursor
        )
        items, cursor = page.get("orders"), page.get("nextCursor") or None
        if not isinstance(items, list):
            raise ServerRefused(None, {"error": "invalid_response", "message": "the page has no orders list"})
        orders.extend(items)
        if not args.all or cursor is None:
            break
        if cursor in followed:
            raise ServerRefused(None, {"error": "invalid_response", "message": f"cursor {cursor} came twice"})
        followed.add(cursor)
    if out.json_mode:
        out.json({"orders": orders, "nextCursor": cursor})
        return ExitCode.SUCCESS
    if orders:
        out.show(orders_table(orders, out.tz))
    else:
        out.line("no orders")
    if cursor is not None:
        out.line(f"next cursor: {cursor}")
    return ExitCode.SUCCESS


async def cancel(client: OrdersClient, args: argparse.Namespace, out: Output) -> ExitCode:
    view = await client.cancel(args.order_id)
    if out.json_mode:
        out.json(view)
    else:
        out.show(order_summary(view, out.tz))
    return ExitCode.SUCCESS


async def run(args: argparse.Namespace, base: str, out: Output, key: str | None = None) -> ExitCode:
    headers = {"User-Agent": f"orderflow/{__version__}", **auth_headers(key)}
    connector = socket_opener(auth_headers(key)) if key else open_socket
    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT, headers=headers) as http:
        client = OrdersClient(http)
        if args.command == "order":
            return await place(client, base, args, out, connector)
        if args.command == "watch":
            return await watch(client, base, args, out, connector)
        if args.command == "orders":
            return await list_orders(client, args, out)
        return await cancel(client, args, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        base = base_url(args.url, os.environ)
        key = api_key(args.api_key, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    out = Output(sys.stdout, sys.stderr, json_mode=args.json, tty=sys.stdout.isatty())
    try:
        return int(asyncio.run(run(args, base, out, key)))
    except OrderflowError as exc:
        out.error(exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        out.note("interrupted (the order, if placed, goes on: `orderflow watch ORDER_ID` follows it)")
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
