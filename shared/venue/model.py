"""The mock venues' market: token prices, each venue's pools (fee, variance, depth), price impact, latency
and injected failure rates. Pure: the mock venue (`shared/venue/mock.py`) draws from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from shared.domain.events import Dex
from shared.runtime.config import Settings

PRICE_PLACES = Decimal("0.000000001")
AMOUNT_PLACES = Decimal("0.000000001")

# Reference USD prices for well-known Solana tokens; any other mint gets a stable hash-derived price.
USD_PRICES: dict[str, Decimal] = {
    "SOL": Decimal("150"),
    "USDC": Decimal("1"),
    "USDT": Decimal("1"),
    "JUP": Decimal("0.9"),
    "BONK": Decimal("0.00002"),
    "RAY": Decimal("2.5"),
    "WIF": Decimal("1.8"),
    "JTO": Decimal("2.7"),
    "PYTH": Decimal("0.35"),
    "ORCA": Decimal("3.1"),
}
KNOWN_TOKENS = frozenset(USD_PRICES)


MAJORS = frozenset({"SOL", "USDC", "USDT"})


@dataclass(frozen=True)
class VenuePool:
    dex: Dex
    variance: Decimal  # quotes fall uniformly within ±variance of the base price
    fee: Decimal  # pool fee taken from amountOut (Meteora: on pools of majors; see pool_fee)
    liquidity_usd: Decimal  # what a pool holds of tokenIn, in USD: sets the price impact

    def pool_fee(self, token_in: str, token_out: str) -> Decimal:
        if self.dex is Dex.METEORA and not {token_in.upper(), token_out.upper()} <= MAJORS:
            return Decimal("0.003")
        return self.fee


VENUES: dict[Dex, VenuePool] = {
    Dex.RAYDIUM: VenuePool(Dex.RAYDIUM, Decimal("0.025"), Decimal("0.0025"), Decimal(20_000_000)),
    Dex.METEORA: VenuePool(Dex.METEORA, Decimal("0.03"), Decimal("0.002"), Decimal(8_000_000)),
}
MAX_POOL_SHARE = Decimal("0.3")  # a trade above this share of the pool is refused


def price_impact(venue: VenuePool, usd_in: Decimal) -> Decimal:
    """The factor (≤ 1) a trade worth `usd_in` gets of the spot price in a constant-product pool."""
    return venue.liquidity_usd / (venue.liquidity_usd + usd_in)


@dataclass(frozen=True)
class FailureRates:
    """Injected failure probabilities (0..1) per call; all zero by default."""

    quote_transient: float = 0.0
    quote_permanent: float = 0.0
    swap_transient: float = 0.0
    swap_permanent: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FailureRates:
        return cls(
            quote_transient=settings.mock_quote_transient_error_rate,
            quote_permanent=settings.mock_quote_permanent_error_rate,
            swap_transient=settings.mock_swap_transient_error_rate,
            swap_permanent=settings.mock_swap_permanent_error_rate,
        )


@dataclass(frozen=True)
class Latency:
    """Simulated venue delays in seconds (min, max); (0, 0) makes the mock instant."""

    quote: tuple[float, float] = (0.1, 0.3)
    execution: tuple[float, float] = (2.0, 3.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Latency:
        return cls(
            quote=(settings.mock_quote_latency_min_ms / 1000, settings.mock_quote_latency_max_ms / 1000),
            execution=(
                settings.mock_execution_latency_min_ms / 1000,
                settings.mock_execution_latency_max_ms / 1000,
            ),
        )


def usd_price(token: str) -> Decimal:
    known = USD_PRICES.get(token.upper())
    if known is not None:
        return known
    digest = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big")
    return (Decimal(digest % 1_000_000) + 1) / Decimal(10_000)  # 0.0001 .. 100 USD


def base_price(token_in: str, token_out: str) -> Decimal:
    """How many tokenOut one tokenIn is worth, before venue variance and fees."""
    return usd_price(token_in) / usd_price(token_out)


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rem = divmod(number, 58)
        out = _B58[rem] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def swap_key(order_id: UUID) -> str:
    """The idempotency key of an order's swap: one order, one swap, whatever the attempt."""
    return f"swap:{order_id}"
