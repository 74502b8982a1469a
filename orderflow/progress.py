"""An order's progress, as a pure function of the status events seen so far.

`fold(events)` reads the events into a `Progress` (the steps, the latest quotes and the chosen venue, the
outcome with its realised slippage); `render` draws it for a terminal (rich, redrawn live, with a countdown
to a retry) and `event_lines` writes each event as plain lines for a log. Neither does any I/O: the clock
(`now`) and the time zone are arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.console import Group, RenderableType
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from orderflow.errors import TERMINAL
from shared.domain.events import BPS, realised_slippage_bps

CENTS = Decimal("0.01")
STATUS_STYLES = {
    "pending": "bright_black",
    "routing": "blue",
    "building": "magenta",
    "submitted": "cyan",
    "confirmed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
}


def price_move_bps(quoted: Decimal, executed: Decimal) -> Decimal:
    """How far the executed price is from the quoted one, in bps (positive: it rose)."""
    return ((executed - quoted) / quoted * BPS).quantize(CENTS)


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def plain(value: Decimal) -> str:
    """A decimal in plain notation without trailing zeros ("0.0025", "100", never "1E+2")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class Ticket:
    """What the order asked for, when known (from the command line or GET /api/orders/{id})."""

    order_id: str
    token_in: str | None = None
    token_out: str | None = None
    amount_in: str | None = None
    slippage: Decimal | None = None

    @classmethod
    def of_view(cls, view: Mapping[str, Any]) -> Ticket:
        return cls(
            order_id=str(view.get("orderId", "")),
            token_in=_text(view.get("tokenIn")),
            token_out=_text(view.get("tokenOut")),
            amount_in=_text(view.get("amountIn")),
            slippage=_decimal(view.get("slippage")),
        )

    @property
    def slippage_bps(self) -> Decimal | None:
        return None if self.slippage is None else self.slippage * BPS

    def describe(self, arrow: str = "->", at_most: str = "<=") -> str:
        parts = []
        if self.token_in and self.token_out:
            parts.append(f"{self.amount_in or '?'} {self.token_in} {arrow} {self.token_out}")
        if self.slippage_bps is not None:
            parts.append(f"slippage {at_most} {plain(self.slippage_bps)} bps")
        return ", ".join(parts)


@dataclass(frozen=True)
class QuoteView:
    dex: str
    price: Decimal
    fee: Decimal
    amount_out: Decimal

    @classmethod
    def parse(cls, dex: str, value: Any) -> QuoteView | None:
        if not isinstance(value, Mapping):
            return None
        price, fee, amount_out = (_decimal(value.get(k)) for k in ("price", "fee", "amountOut"))
        if price is None or fee is None or amount_out is None:
            return None
        return cls(dex=str(value.get("dex") or dex), price=price, fee=fee, amount_out=amount_out)


def _quotes(value: Any) -> tuple[QuoteView, ...]:
    if not isinstance(value, Mapping):
        return ()
    parsed = (QuoteView.parse(str(dex), quote) for dex, quote in value.items())
    return tuple(q for q in parsed if q is not None)


@dataclass(frozen=True)
class Step:
    """One status event, as shown."""

    seq: int
    status: str
    at: datetime | None
    attempt: int | None
    max_attempts: int | None
    dex: str | None
    next_retry_at: datetime | None
    error: str | None
    failure_reason: str | None
    tx_hash: str | None

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> Step:
        return cls(
            seq=_int(event.get("seq")) or 0,
            status=str(event.get("status", "?")),
            at=_instant(event.get("at")),
            attempt=_int(event.get("attempt")),
            max_attempts=_int(event.get("maxAttempts")),
            dex=_text(event.get("dex")),
            next_retry_at=_instant(event.get("nextRetryAt")),
            error=_text(event.get("error")),
            failure_reason=_text(event.get("failureReason")),
            tx_hash=_text(event.get("txHash")),
        )

    @property
    def is_retry(self) -> bool:
        """Back to pending after a retriable failure (the first pending has neither)."""
        return self.status == "pending" and (self.next_retry_at is not None or self.error is not None)

    @property
    def attempts(self) -> str:
        if self.attempt is None:
            return "?"
        return f"{self.attempt}/{self.max_attempts}" if self.max_attempts else str(self.attempt)


@dataclass(frozen=True)
class Outcome:
    """The terminal event, set against the quote of the venue that swapped."""

    status: str
    dex: str | None
    tx_hash: str | None
    executed_price: Decimal | None
    amount_out: Decimal | None
    quote: QuoteView | None
    failure_reason: str | None
    error: str | None
    reported_slippage_bps: Decimal | None  # the event's own `slippageBps`, if it has one

    @property
    def slippage_bps(self) -> Decimal | None:
        if self.quote is not None and self.amount_out is not None and self.quote.amount_out:
            return realised_slippage_bps(self.quote.amount_out, self.amount_out)
        return self.reported_slippage_bps

    @property
    def price_move_bps(self) -> Decimal | None:
        if self.quote is not None and self.executed_price is not None and self.quote.price:
            return price_move_bps(self.quote.price, self.executed_price)
        return None


@dataclass(frozen=True)
class Progress:
    steps: tuple[Step, ...]
    quotes: tuple[QuoteView, ...]  # the latest routing's, one per venue
    quotes_attempt: int | None
    chosen: str | None  # the venue the latest routing chose
    outcome: Outcome | None

    @property
    def current(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def retry_pending(self) -> Step | None:
        """The retry the order is waiting for now, if it is."""
        current = self.current
        return current if current is not None and current.is_retry else None

    @property
    def started_at(self) -> datetime | None:
        return next((s.at for s in self.steps if s.at is not None), None)


def fold(events: Sequence[Mapping[str, Any]]) -> Progress:
    steps = tuple(Step.parse(e) for e in events)
    quotes: tuple[QuoteView, ...] = ()
    quotes_attempt: int | None = None
    chosen: str | None = None
    for event, step in zip(events, steps, strict=True):
        found = _quotes(event.get("quotes"))
        if found:
            quotes, quotes_attempt, chosen = found, step.attempt, step.dex
    outcome = None
    if steps and steps[-1].status in TERMINAL:
        last, final = events[-1], steps[-1]
        dex = final.dex or chosen
        outcome = Outcome(
            status=final.status,
            dex=dex,
            tx_hash=final.tx_hash,
            executed_price=_decimal(last.get("executedPrice")),
            amount_out=_decimal(last.get("amountOut")),
            quote=next((q for q in quotes if q.dex == dex), None),
            failure_reason=final.failure_reason,
            error=final.error,
            reported_slippage_bps=_decimal(last.get("slippageBps")),
        )
    return Progress(steps, quotes, quotes_attempt, chosen, outcome)


# --- shared wording -------------------------------------------------------------------------------------


def clock(at: datetime | None, tz: tzinfo | None) -> str:
    if at is None:
        return "--:--:--.---"
    return at.astimezone(tz).strftime("%H:%M:%S.%f")[:-3]


def elapsed(at: datetime | None, start: datetime | None) -> str:
    if at is None or start is None:
        return ""
    return f"+{(at - start).total_seconds():.2f}s"


def percent(fraction: Decimal) -> str:
    return f"{plain(fraction * 100)} %"


def signed(value: Decimal) -> str:
    return f"+{plain(value)}" if value > 0 else plain(value)


def short(tx_hash: str) -> str:
    return tx_hash if len(tx_hash) <= 16 else f"{tx_hash[:6]}…{tx_hash[-6:]}"


def step_detail(
    step: Step,
    ticket: Ticket,
    *,
    introduce: bool,
    arrow: str = "->",
    at_most: str = "<=",
    brief: bool = False,
) -> str:
    """What a step adds, in words (the retry's countdown is added by whoever knows the time). `introduce`:
    the first pending names the order (where no header does); `brief`: the tx hash shortened (where the
    outcome shows it whole)."""
    if step.status == "pending":
        if step.is_retry:
            return f"attempt {step.attempts} after {step.error or 'an error'}"
        if not introduce:
            return "accepted"
        return ", ".join(p for p in (f"order {ticket.order_id}", ticket.describe(arrow, at_most)) if p)
    if step.status == "routing":
        return "asking the venues for quotes" + (
            f" (attempt {step.attempts})" if (step.attempt or 0) > 1 else ""
        )
    if step.status == "building":
        return f"best net amount on {step.dex}" if step.dex else "building the swap"
    if step.status == "submitted":
        return f"swap sent to {step.dex}" if step.dex else "swap sent"
    if step.status == "confirmed":
        if step.tx_hash:
            return f"tx {short(step.tx_hash) if brief else step.tx_hash}"
        return ""
    if step.status in ("failed", "cancelled"):
        return ": ".join(p for p in (step.error, step.failure_reason) if p)
    return ""


def outcome_lines(outcome: Outcome, ticket: Ticket, *, arrow: str = "->") -> list[str]:
    """The executed figures against the quote (confirmed), or why it ended (failed, cancelled)."""
    lines: list[str] = []
    if outcome.status == "confirmed":
        unit = f" {ticket.token_out}" if ticket.token_out else ""
        if outcome.executed_price is not None:
            line = f"executed price {plain(outcome.executed_price)}"
            if outcome.quote is not None:
                line += f" vs quoted {plain(outcome.quote.price)}"
            if outcome.price_move_bps is not None:
                line += f" ({signed(outcome.price_move_bps)} bps)"
            lines.append(line)
        if outcome.amount_out is not None:
            line = f"amount out {plain(outcome.amount_out)}{unit}"
            if outcome.quote is not None:
                line += f" vs quoted {plain(outcome.quote.amount_out)}{unit}"
            slippage = outcome.slippage_bps
            if slippage is not None:
                line += f" {arrow} slippage {plain(slippage)} bps"
                if ticket.slippage_bps is not None:
                    line += f" (tolerance {plain(ticket.slippage_bps)} bps)"
            lines.append(line)
    else:
        if outcome.failure_reason:
            lines.append(f"reason: {outcome.failure_reason}")
        if outcome.error:
            lines.append(f"error: {outcome.error}")
    return lines


# --- plain lines, for logs ------------------------------------------------------------------------------


def event_lines(ticket: Ticket, events: Sequence[Mapping[str, Any]], tz: tzinfo | None = None) -> list[str]:
    """The lines for the last of `events` (the ones before it give the context: the start time, the chosen
    quote). Printing this for each new event writes every event once, and the same lines on any run."""
    progress = fold(events)
    step = progress.current
    if step is None:
        return []
    head = f"{clock(step.at, tz)} {elapsed(step.at, progress.started_at):>8} {step.status:<10} "
    detail = step_detail(step, ticket, introduce=True)
    if step.is_retry and step.next_retry_at is not None:
        detail += f", retry at {clock(step.next_retry_at, tz)}"
        if step.at is not None:
            detail += f" (in {(step.next_retry_at - step.at).total_seconds():.1f} s)"
    lines = [(head + detail).rstrip()]
    indent = " " * 4
    if _quotes(events[-1].get("quotes")):
        for quote in progress.quotes:
            mark = "* " if quote.dex == progress.chosen else "  "
            lines.append(indent + mark + _quote_line(quote, ticket) + ("  <- chosen" if mark == "* " else ""))
    if progress.outcome is not None and progress.outcome.status == "confirmed":
        lines.extend(indent + line for line in outcome_lines(progress.outcome, ticket))
    return lines


def _quote_line(quote: QuoteView, ticket: Ticket) -> str:
    unit = f" {ticket.token_out}" if ticket.token_out else ""
    price, fee = plain(quote.price), percent(quote.fee)
    return f"{quote.dex:<8} out {plain(quote.amount_out)}{unit}  price {price}  fee {fee}"


def transcript(ticket: Ticket, events: Sequence[Mapping[str, Any]], tz: tzinfo | None = None) -> list[str]:
    """Every event's lines, in order: what a log shows once the events have come."""
    return [line for i in range(1, len(events) + 1) for line in event_lines(ticket, events[:i], tz)]


# --- the live view, for a terminal ----------------------------------------------------------------------


def render(ticket: Ticket, progress: Progress, now: datetime, tz: tzinfo | None = None) -> RenderableType:
    """The whole view at instant `now`: header, steps, quotes side by side, retry countdown, outcome."""
    parts: list[RenderableType] = []
    header = Text.assemble(("Order ", "bold"), (ticket.order_id, "bold"))
    described = ticket.describe("→", "≤")
    if described:
        header.append(f"  {described}", style="dim")
    parts.append(header)

    steps = Table.grid(padding=(0, 2))
    for column in ("time", "elapsed", "status", "detail"):
        steps.add_column(column, justify="right" if column == "elapsed" else "left")
    started = progress.started_at
    for step in progress.steps:
        style = "yellow" if step.is_retry else STATUS_STYLES.get(step.status, "")
        steps.add_row(
            clock(step.at, tz),
            elapsed(step.at, started),
            Text(step.status, style=style),
            step_detail(step, ticket, introduce=False, arrow="→", at_most="≤", brief=True),
        )
    parts.append(steps)

    if progress.quotes:
        parts.append(quotes_table(progress, ticket))

    retry = progress.retry_pending
    if retry is not None:
        parts.append(retry_line(retry, now))

    outcome = progress.outcome
    if outcome is not None:
        parts.append(outcome_view(outcome, ticket))
    elif retry is None and progress.current is not None:
        parts.append(Spinner("dots", text=Text(f"{progress.current.status}…", style="dim")))
    elif progress.current is None:
        parts.append(Spinner("dots", text=Text("connecting…", style="dim")))
    return Group(*parts)


def quotes_table(progress: Progress, ticket: Ticket) -> Table:
    """One column per venue, the chosen one marked."""
    title = "Quotes" + (f", attempt {progress.quotes_attempt}" if progress.quotes_attempt else "")
    table = Table(title=title, title_justify="left", title_style="bold")
    table.add_column("")
    for quote in progress.quotes:
        marked = quote.dex == progress.chosen
        table.add_column(
            f"✓ {quote.dex} (chosen)" if marked else quote.dex,
            justify="right",
            header_style="bold green" if marked else "bold",
            style="green" if marked else "",
        )
    unit = f" {ticket.token_out}" if ticket.token_out else ""
    table.add_row("amount out", *(f"{plain(q.amount_out)}{unit}" for q in progress.quotes))
    table.add_row("price", *(plain(q.price) for q in progress.quotes))
    table.add_row("fee", *(percent(q.fee) for q in progress.quotes))
    chosen = next((q for q in progress.quotes if q.dex == progress.chosen), None)
    if chosen is not None and len(progress.quotes) > 1:
        table.add_row(
            "vs chosen",
            *("" if q is chosen else signed(q.amount_out - chosen.amount_out) for q in progress.quotes),
            style="dim",
        )
    return table


def retry_line(step: Step, now: datetime) -> Text:
    text = Text(f"↻ retry {step.attempts} after {step.error or 'an error'}", style="yellow")
    if step.next_retry_at is not None:
        left = (step.next_retry_at - now).total_seconds()
        text.append(f": in {left:.1f} s" if left > 0 else ": now", style="bold yellow")
    return text


def outcome_view(outcome: Outcome, ticket: Ticket) -> RenderableType:
    marks = {"confirmed": "✔", "failed": "✘", "cancelled": "⊘"}
    head = Text(
        f"{marks.get(outcome.status, '•')} {outcome.status}", style=STATUS_STYLES.get(outcome.status, "")
    )
    if outcome.status == "confirmed" and outcome.dex:
        head.append(f" on {outcome.dex}")
    lines: list[RenderableType] = [head]
    if outcome.tx_hash:
        lines.append(Text.assemble("  tx ", (outcome.tx_hash, "bold")))
    lines.extend(Text("  " + line) for line in outcome_lines(outcome, ticket, arrow="→"))
    return Group(*lines)
