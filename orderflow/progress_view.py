"""Draws an order's `Progress`: plain lines for a log, one event at a time (`event_lines`, `transcript`),
and the live view for a terminal (`render`, rich, redrawn with a countdown to a retry). Nothing here does
I/O: the clock (`now`) and the time zone are arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from rich.console import Group, RenderableType
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from orderflow.progress import Outcome, Progress, QuoteView, Step, Ticket, fold, parse_quotes, plain

STATUS_STYLES = {
    "pending": "bright_black",
    "routing": "blue",
    "building": "magenta",
    "submitted": "cyan",
    "confirmed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
}


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
    if parse_quotes(events[-1].get("quotes")):
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
