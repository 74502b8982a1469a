from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from shared.dex import VENUES, Latency, MockDex, b58encode, base_price, usd_price
from shared.events import Dex

INSTANT = Latency(quote=(0, 0), execution=(0, 0))
ORDER = uuid.UUID("0b7a3b43-5f6e-4d0a-9f1c-7c1d2b3a4e5f")


def dex(seed: str | None) -> MockDex:
    pool: Any = None  # quotes never touch the venue's ledger
    return MockDex(pool, seed=seed, latency=INSTANT)


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
    prices = [(await quote(dex(str(i)), which)).price for i in range(400)]
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
