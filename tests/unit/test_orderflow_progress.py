"""The orderflow CLI's progress view as a function of the events: the plain lines for a log, the live view
with its quotes, retry countdown and outcome, and the realised slippage."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

from orderflow.progress import Ticket, fold
from orderflow.progress_view import event_lines, render, transcript
from shared.domain.events import Dex
from tests.unit.orderflow_helpers import ORDER_ID, T0, TX, confirmed_path, event, text_of

TICKET = Ticket(ORDER_ID, "SOL", "USDC", "1.5", Decimal("0.01"))


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
