"""Properties of the order body's validator, over generated input (hypothesis): exact decimals in, exact
decimals kept; anything else refused as a ValidationError naming the field, never another exception."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ingress.schemas import DECIMAL_TEXT, MAX_AMOUNT_IN, PlaceOrder

BASE: dict[str, Any] = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "slippage": "0.01"}

# Positive amounts up to 1e12 with at most 18 fractional digits: what the contract accepts.
amounts = st.decimals(
    min_value=Decimal("1e-18"), max_value=MAX_AMOUNT_IN, places=18, allow_nan=False, allow_infinity=False
)
# What JSON a request can carry (orjson reads integers past 64 bits as floats: those are covered by floats).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def plain(value: Decimal) -> str:
    return format(value, "f")


def validate(body: Any) -> PlaceOrder:
    """As the ingress does: from the request's JSON bytes."""
    return PlaceOrder.model_validate(orjson.loads(orjson.dumps(body)))


@given(amounts)
def test_a_plain_decimal_string_is_kept_exactly(amount: Decimal) -> None:
    text = plain(amount)
    assert validate({**BASE, "amountIn": text}).amount_in == Decimal(text)


@given(amounts, st.integers(min_value=1, max_value=6))
def test_trailing_zeros_change_neither_the_amount_nor_the_fingerprint(amount: Decimal, zeros: int) -> None:
    text = plain(amount)
    padded = text + ("0" * zeros if "." in text else "." + "0" * zeros)
    one, other = validate({**BASE, "amountIn": text}), validate({**BASE, "amountIn": padded})
    assert one.amount_in == other.amount_in and one.fingerprint() == other.fingerprint()


@given(st.text(max_size=30).filter(lambda s: not DECIMAL_TEXT.match(s)))
def test_text_outside_plain_decimal_notation_is_refused_on_its_field(text: str) -> None:
    try:
        validate({**BASE, "amountIn": text})
    except ValidationError as exc:
        assert [error["loc"] for error in exc.errors()] == [("amountIn",)]
    else:
        raise AssertionError(f"{text!r} was accepted")


@given(st.integers(min_value=1, max_value=5000))
def test_basis_points_and_the_fraction_they_mean_are_one_order(bps: int) -> None:
    by_bps = validate({**BASE, "slippage": None, "slippageBps": bps, "amountIn": "2"})
    by_fraction = validate({**BASE, "slippage": plain(Decimal(bps) / 10_000), "amountIn": "2"})
    assert by_bps.slippage_fraction == by_fraction.slippage_fraction == Decimal(bps) / 10_000
    assert by_bps.fingerprint() == by_fraction.fingerprint()


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6))
def test_slippage_outside_0_to_half_is_refused(slippage: Decimal) -> None:
    body = {**BASE, "amountIn": "1", "slippage": plain(slippage)}
    if Decimal(0) < slippage <= Decimal("0.5"):
        assert validate(body).slippage_fraction == slippage
    else:
        try:
            validate(body)
        except ValidationError as exc:
            assert ("slippage",) in [error["loc"] for error in exc.errors()]
        else:
            raise AssertionError(f"slippage {slippage} was accepted")


@given(json_values)
def test_any_json_body_is_an_order_or_a_validation_error(body: Any) -> None:
    with contextlib.suppress(ValidationError):
        validate(body)


@given(st.dictionaries(st.sampled_from([*BASE, "amountIn", "slippageBps", "clientOrderId"]), json_values))
def test_any_values_under_the_contracts_names_are_an_order_or_a_validation_error(
    body: dict[str, Any],
) -> None:
    try:
        placed = validate(body)
    except ValidationError:
        return
    assert placed.amount_in > 0 and Decimal(0) < placed.slippage_fraction <= Decimal("0.5")
