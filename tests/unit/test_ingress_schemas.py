"""The order body's rules and its canonical fingerprint, without services."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from ingress.schemas import PlaceOrder

BASE: dict[str, Any] = {
    "type": "market",
    "tokenIn": "SOL",
    "tokenOut": "USDC",
    "amountIn": "1.5",
    "slippage": "0.01",
}


def order(**changes: Any) -> PlaceOrder:
    body = {**BASE, **changes}
    return PlaceOrder.model_validate({k: v for k, v in body.items() if v is not None})


def test_json_numbers_are_read_exactly_as_written() -> None:
    placed = order(amountIn=0.1, slippage=0.005)
    assert placed.amount_in == Decimal("0.1") and placed.slippage_fraction == Decimal("0.005")


def test_basis_points_become_the_same_fraction() -> None:
    assert order(slippage=None, slippageBps=250).slippage_fraction == Decimal("0.025")


@pytest.mark.parametrize(
    "changes",
    [
        {"amountIn": "1.50"},
        {"amountIn": 1.5},
        {"amountIn": "01.5"},
        {"slippage": None, "slippageBps": 100},
        {"slippage": "0.010"},
    ],
)
def test_equivalent_bodies_share_a_fingerprint(changes: dict[str, Any]) -> None:
    assert order(**changes).fingerprint() == order().fingerprint()


@pytest.mark.parametrize(
    "changes", [{"amountIn": "1.51"}, {"slippage": "0.02"}, {"tokenOut": "USDT"}, {"clientOrderId": "a"}]
)
def test_different_orders_have_different_fingerprints(changes: dict[str, Any]) -> None:
    assert order(**changes).fingerprint() != order().fingerprint()


@pytest.mark.parametrize("amount", [1e-7, 1e20, float("inf"), "1E5", " 1", "1.", ".5"])
def test_amounts_outside_plain_decimal_notation_are_refused(amount: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        order(amountIn=amount)
    assert [e["loc"] for e in caught.value.errors()] == [("amountIn",)]


def test_a_base58_mint_is_a_token() -> None:
    mint = "So11111111111111111111111111111111111111112"
    assert order(tokenIn=mint).token_in == mint
