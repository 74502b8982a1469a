from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from shared.domain.errors import DexError, InsufficientLiquidity, SlippageExceeded
from shared.domain.events import Dex, Quote
from shared.venue.mock import MockDex
from shared.venue.model import VENUES, FailureRates, Latency, b58encode, base_price, price_impact, usd_price
from tests.fixtures.venue import InMemoryLedger

INSTANT = Latency(quote=(0, 0), execution=(0, 0))
ORDER = uuid.UUID("0b7a3b43-5f6e-4d0a-9f1c-7c1d2b3a4e5f")


def dex(seed: str | None) -> MockDex:
    return MockDex(InMemoryLedger(), seed=seed, latency=INSTANT)


async def quote(venue: MockDex, which: Dex, order_id: uuid.UUID = ORDER, amount: str = "2") -> Any:
    return await venue.quote(
        which, order_id=order_id, token_in="SOL", token_out="USDC", amount_in=Decimal(amount)
    )


async def test_a_seed_makes_quotes_a_pure_function_of_the_order() -> None:
    first = [await quote(dex("s1"), d) for d in Dex]
    again = [await quote(dex("s1"), d) for d in Dex]
    assert first == again
    other_order = [await quote(dex("s1"), d, order_id=uuid.uuid4()) for d in Dex]
    assert other_order != first


async def test_other_seeds_give_other_prices() -> None:
    assert await quote(dex("s1"), Dex.RAYDIUM) != await quote(dex("s2"), Dex.RAYDIUM)


async def test_without_a_seed_prices_vary() -> None:
    prices = {(await quote(dex(None), Dex.METEORA)).price for _ in range(20)}
    assert len(prices) > 1


@pytest.mark.parametrize("which,spread", [(Dex.RAYDIUM, Decimal("0.025")), (Dex.METEORA, Decimal("0.03"))])
async def test_quotes_stay_within_the_venues_variance(which: Dex, spread: Decimal) -> None:
    base = base_price("SOL", "USDC")
    # a dust-sized trade: no price impact to speak of
    prices = [(await quote(dex(str(i)), which, amount="0.000001")).price for i in range(400)]
    assert all(base * (1 - spread) <= p <= base * (1 + spread) for p in prices)
    # and they use the whole band, not a sliver of it
    assert min(prices) < base * (1 - spread / 2) and max(prices) > base * (1 + spread / 2)


async def test_amount_out_is_net_of_the_pool_fee() -> None:
    q = await quote(dex("s"), Dex.RAYDIUM, amount="2")
    assert q.fee == VENUES[Dex.RAYDIUM].fee
    assert q.amount_out == (Decimal(2) * q.price * (1 - q.fee)).quantize(Decimal("0.000000001"))


def test_unknown_mints_get_a_stable_positive_price() -> None:
    mint = "So11111111111111111111111111111111111111112"
    assert usd_price(mint) == usd_price(mint) > 0
    assert usd_price("sol") == usd_price("SOL") == Decimal(150)


def test_base58_matches_known_vectors() -> None:
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert b58encode(b"\x00\x00\x01") == "112"


def test_price_impact_grows_with_the_trade() -> None:
    venue = VENUES[Dex.RAYDIUM]
    impacts = [price_impact(venue, Decimal(usd)) for usd in (100, 10_000, 1_000_000)]
    assert 1 > impacts[0] > impacts[1] > impacts[2] > 0


async def test_a_big_order_gets_a_worse_price_and_a_huge_one_is_refused() -> None:
    small = await quote(dex("s"), Dex.METEORA, amount="1")
    big = await quote(dex("s"), Dex.METEORA, amount="10000")
    assert big.price < small.price
    with pytest.raises(InsufficientLiquidity) as refused:
        await quote(dex("s"), Dex.METEORA, amount="100000")
    assert not refused.value.retriable


async def test_meteora_charges_more_outside_its_major_pools() -> None:
    venue = dex("s")
    major = await venue.quote(
        Dex.METEORA, order_id=ORDER, token_in="SOL", token_out="USDC", amount_in=Decimal(1)
    )
    other = await venue.quote(
        Dex.METEORA, order_id=ORDER, token_in="JUP", token_out="USDC", amount_in=Decimal(1)
    )
    assert (major.fee, other.fee) == (Decimal("0.002"), Decimal("0.003"))


async def test_each_attempt_draws_afresh_but_purely() -> None:
    first = await dex("s").quote(
        Dex.RAYDIUM, order_id=ORDER, token_in="SOL", token_out="USDC", amount_in=Decimal(1), attempt=1
    )
    second = await dex("s").quote(
        Dex.RAYDIUM, order_id=ORDER, token_in="SOL", token_out="USDC", amount_in=Decimal(1), attempt=2
    )
    again = dex("s").quote_now(
        Dex.RAYDIUM, order_id=ORDER, token_in="SOL", token_out="USDC", amount_in=Decimal(1), attempt=2
    )
    assert first != second == again


@pytest.mark.parametrize(
    "rates,retriable", [(FailureRates(quote_transient=1), True), (FailureRates(quote_permanent=1), False)]
)
async def test_injected_quote_failures_say_whether_a_retry_can_help(
    rates: FailureRates, retriable: bool
) -> None:
    venue = MockDex(InMemoryLedger(), seed="s", latency=INSTANT, failures=rates)
    with pytest.raises(DexError) as failed:
        await quote(venue, Dex.RAYDIUM)
    assert failed.value.retriable is retriable


async def test_injected_failures_are_off_by_default_and_follow_their_rate() -> None:
    venue = MockDex(InMemoryLedger(), seed=None, latency=INSTANT, failures=FailureRates(quote_transient=0.5))
    outcomes = []
    for _ in range(200):
        try:
            await quote(venue, Dex.RAYDIUM)
            outcomes.append(True)
        except DexError:
            outcomes.append(False)
    assert 50 < sum(outcomes) < 150
    # Off by default: 200 unseeded quotes all answer (a raise fails the test), each a fresh draw.
    quotes = [await quote(dex(None), Dex.RAYDIUM) for _ in range(200)]
    assert len({q.price for q in quotes}) > 150


async def test_a_swap_is_signed_like_solana_and_happens_once_per_order() -> None:
    ledger = InMemoryLedger()
    venue = MockDex(ledger, seed="s", latency=INSTANT)
    q: Quote = await quote(venue, Dex.RAYDIUM)
    first = await venue.execute(q, order_id=ORDER, amount_in=Decimal(2), min_amount_out=Decimal(0))
    again = await venue.execute(q, order_id=ORDER, amount_in=Decimal(2), min_amount_out=Decimal(0), attempt=2)
    assert first == again and len(ledger.swaps) == 1
    assert 87 <= len(first.tx_hash) <= 88 and set(first.tx_hash) <= set(
        "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    )


async def test_a_swap_below_the_minimum_output_is_refused_and_leaves_no_trace() -> None:
    ledger = InMemoryLedger()
    venue = MockDex(ledger, seed="s", latency=INSTANT)
    q: Quote = await quote(venue, Dex.RAYDIUM)
    with pytest.raises(SlippageExceeded) as refused:
        await venue.execute(q, order_id=ORDER, amount_in=Decimal(2), min_amount_out=q.amount_out * 2)
    assert not refused.value.retriable and not ledger.swaps
