"""Where results go: JSON for scripts (`--json`: one object per line on stdout, error envelopes on stderr),
tables and plain lines for people. The views here are pure (`orders_table`, `order_summary`,
`error_lines`); `Output` only writes them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any, TextIO

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from orderflow.errors import OrderflowError, ServerRefused
from orderflow.progress_view import STATUS_STYLES

LOG_WIDTH = 200  # not a terminal: wide enough that a table of orders is not wrapped


def _when(value: Any, tz: tzinfo | None) -> str:
    if not isinstance(value, str):
        return ""
    try:
        return datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def orders_table(orders: Sequence[Mapping[str, Any]], tz: tzinfo | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for name in ("created", "order", "status", "pair", "amount in", "amount out", "dex", "client order id"):
        table.add_column(name, no_wrap=name in ("created", "order"))
    for order in orders:
        status = _cell(order.get("status"))
        table.add_row(
            _when(order.get("createdAt"), tz),
            _cell(order.get("orderId")),
            Text(status, style=STATUS_STYLES.get(status, "")),
            f"{_cell(order.get('tokenIn'))}→{_cell(order.get('tokenOut'))}",
            _cell(order.get("amountIn")),
            _cell(order.get("amountOut")),
            _cell(order.get("dex")),
            _cell(order.get("clientOrderId")),
        )
    return table


def order_summary(view: Mapping[str, Any], tz: tzinfo | None = None) -> Table:
    """An order view as label / value lines (what `cancel` prints)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    status = _cell(view.get("status"))
    rows: list[tuple[str, RenderableType]] = [
        ("order", _cell(view.get("orderId"))),
        ("status", Text(status, style=STATUS_STYLES.get(status, ""))),
        (
            "pair",
            f"{_cell(view.get('amountIn'))} {_cell(view.get('tokenIn'))} → {_cell(view.get('tokenOut'))}",
        ),
    ]
    optional = {
        "client order id": view.get("clientOrderId"),
        "dex": view.get("dex"),
        "tx": view.get("txHash"),
        "amount out": view.get("amountOut"),
        "reason": view.get("failureReason"),
        "error": view.get("error"),
    }
    rows.extend((label, str(value)) for label, value in optional.items() if value not in (None, ""))
    rows.append(("updated", _when(view.get("updatedAt"), tz)))
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def error_lines(exc: OrderflowError) -> list[str]:
    """How an error reads to a person: the code and message, each detail, the correlation id, a hint."""
    if isinstance(exc, ServerRefused):
        status = f" (HTTP {exc.status})" if exc.status is not None else ""
        envelope = exc.envelope()
        lines = [f"error: {exc.code}{status}: {envelope.get('message', '')}"]
        for detail in exc.details:
            if isinstance(detail, Mapping) and "message" in detail:
                field = f"{detail['field']}: " if detail.get("field") else ""
                lines.append(f"  {field}{detail['message']}")
            else:
                lines.append(f"  {json.dumps(detail)}")
        if envelope.get("correlationId"):
            lines.append(f"  correlation id: {envelope['correlationId']}")
    else:
        lines = [f"error: {exc.message}"]
    if exc.hint:
        lines.append(f"  {exc.hint}")
    return lines


class Output:
    def __init__(
        self, stdout: TextIO, stderr: TextIO, *, json_mode: bool, tty: bool, tz: tzinfo | None = None
    ) -> None:
        self.json_mode = json_mode
        self.tty = tty
        self.tz = tz
        self._stdout = stdout
        self._stderr = stderr
        self.console = Console(file=stdout, highlight=False, width=None if tty else LOG_WIDTH)

    def json(self, value: Any) -> None:
        self.line(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def line(self, text: str) -> None:
        self._stdout.write(text + "\n")
        self._stdout.flush()  # a log or a pipe sees each line as it comes

    def show(self, renderable: RenderableType) -> None:
        self.console.print(renderable)

    def error(self, exc: OrderflowError) -> None:
        if self.json_mode:
            text = json.dumps(exc.envelope(), separators=(",", ":"), ensure_ascii=False)
        else:
            text = "\n".join(error_lines(exc))
        self._stderr.write(text + "\n")
        self._stderr.flush()

    def note(self, text: str) -> None:
        """A remark for people, on stderr (stdout stays what the command prints)."""
        self._stderr.write(text + "\n")
        self._stderr.flush()
