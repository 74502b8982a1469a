"""An order's progress, as a pure function of the status events seen so far.

`fold(events)` reads the events into a `Progress`: the steps, the latest quotes and the chosen venue, the
outcome with its realised slippage. It does no I/O; `orderflow.progress_view` draws the result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from orderflow.errors import TERMINAL
from shared.domain.events import BPS, realised_slippage_bps

CENTS = Decimal("0.01")


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


def parse_quotes(value: Any) -> tuple[QuoteView, ...]:
    """The quotes of an event's `quotes` field that parse, one per venue (none if it has none)."""
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
        found = parse_quotes(event.get("quotes"))
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
