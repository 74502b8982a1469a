from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import uvloop

from shared.domain.events import Dex, OrderPlaced, Quote, StatusEvent
from shared.domain.status import OrderStatus
from shared.runtime.clock import sleep_until, utcnow


def make_event(**overrides: object) -> StatusEvent:
    fields: dict[str, object] = {
        "order_id": uuid.UUID("8d3c1e0a-7f43-4c8e-9a53-2b1f1e6f9a10"),
        "seq": 3,
        "status": OrderStatus.BUILDING,
        "at": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        "max_attempts": 3,
        "dex": Dex.RAYDIUM,
        "quotes": {
            Dex.RAYDIUM: Quote(
                dex=Dex.RAYDIUM, price=Decimal("150.1"), fee=Decimal("0.0025"), amount_out=Decimal("224.5")
            )
        },
    }
    fields.update(overrides)
    return StatusEvent.model_validate(fields)


@pytest.mark.parametrize("text", ["0.000000001", "123456789.123456789", "1.5", "100", "0.1"])
def test_amounts_round_trip_as_plain_decimal_strings(text: str) -> None:
    event = make_event(amount_out=Decimal(text), executed_price=Decimal(text))
    wire = json.loads(event.to_json())
    assert wire["amountOut"] == text
    assert wire["executedPrice"] == text
    assert StatusEvent.from_json(event.to_json()).amount_out == Decimal(text)


def test_trailing_zeros_are_not_part_of_the_value() -> None:
    assert json.loads(make_event(amount_out=Decimal("1.500")).to_json())["amountOut"] == "1.5"


def test_status_event_speaks_camel_case_with_every_field_of_the_contract() -> None:
    wire = json.loads(make_event().to_json())
    assert set(wire) == {
        "v",
        "orderId",
        "seq",
        "status",
        "at",
        "attempt",
        "maxAttempts",
        "nextRetryAt",
        "dex",
        "quotes",
        "txHash",
        "executedPrice",
        "amountOut",
        "failureReason",
        "error",
        "correlationId",
        "slippageBps",  # an optional field added to the contract
    }
    assert wire["v"] == 1
    assert wire["quotes"]["raydium"] == {
        "dex": "raydium",
        "price": "150.1",
        "fee": "0.0025",
        "amountOut": "224.5",
    }
    assert wire["at"] == "2026-11-26T12:00:00Z"


def test_an_event_survives_a_round_trip_unchanged() -> None:
    event = make_event(tx_hash="abc", amount_out=Decimal("0.000000001"))
    assert StatusEvent.from_json(event.to_json()) == event


def test_amounts_are_never_floats_on_the_wire() -> None:
    placed = OrderPlaced(
        order_id=uuid.uuid4(),
        token_in="SOL",
        token_out="USDC",
        amount_in=Decimal("1.5"),
        slippage=Decimal("0.01"),
        created_at=datetime.now(UTC),
    )
    wire = json.loads(placed.to_json())
    assert wire["amountIn"] == "1.5" and wire["slippage"] == "0.01"


def test_terminal_statuses() -> None:
    assert {s for s in OrderStatus if s.terminal} == {
        OrderStatus.CONFIRMED,
        OrderStatus.FAILED,
        OrderStatus.CANCELLED,
    }


def test_sleep_until_never_returns_before_its_instant_on_uvloop() -> None:
    """uvloop's timers round to milliseconds and may fire early; a retry that woke early was dropped as not
    yet due (and waited for the sweep)."""

    async def early() -> list[float]:
        missed = []
        for delay_ms in [0.4 + n * 1.3 for n in range(40)]:
            instant = utcnow() + timedelta(milliseconds=delay_ms)
            await sleep_until(instant, cap_s=1)
            if utcnow() < instant:
                missed.append(delay_ms)
        return missed

    assert uvloop.run(early()) == []


async def test_sleep_until_gives_up_after_its_cap() -> None:
    started = time.monotonic()
    await sleep_until(utcnow() + timedelta(hours=1), cap_s=0.05)
    assert 0.05 <= time.monotonic() - started < 1
