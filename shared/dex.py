"""The mock Solana venues (seed §8): Raydium and Meteora quote around a base price with their own variance,
take their pool fee, and execute after a delay at a price that has moved a little since the quote.

With MOCK_SEED set every draw is a pure function of (seed, orderId, attempt, venue, purpose), so results do
not depend on timing or concurrency; without it the draws are truly random. Executions are idempotent: the
venue's ledger (table mock_dex_swaps) keeps one row per idempotency key, and a second execute with the same
key returns the first result instead of swapping again.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import asyncpg

from shared.config import Settings
from shared.errors import SlippageExceeded
from shared.events import Dex, Quote

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


@dataclass(frozen=True)
class Venue:
    dex: Dex
    variance: Decimal  # quotes fall uniformly within ±variance of the base price
    fee: Decimal  # pool fee taken from amountOut


VENUES: dict[Dex, Venue] = {
    Dex.RAYDIUM: Venue(Dex.RAYDIUM, Decimal("0.025"), Decimal("0.0025")),
    Dex.METEORA: Venue(Dex.METEORA, Decimal("0.03"), Decimal("0.002")),
}
EXECUTION_DRIFT = Decimal("0.005")  # the price moves up to ±0.5 % between quote and execution


@dataclass(frozen=True)
class SwapResult:
    dex: Dex
    tx_hash: str
    executed_price: Decimal
    amount_out: Decimal


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


class MockDex:
    def __init__(self, pool: asyncpg.Pool, *, seed: str | None, latency: Latency) -> None:
        self._pool = pool
        self._seed = seed
        self._latency = latency
        self._entropy = random.SystemRandom()

    def _rng(self, order_id: UUID, attempt: int, dex: Dex, purpose: str) -> random.Random:
        if self._seed is None:
            return self._entropy
        return random.Random(f"{self._seed}:{order_id}:{attempt}:{dex}:{purpose}")

    @staticmethod
    def _uniform(rng: random.Random, spread: Decimal) -> Decimal:
        """A draw in [-spread, +spread], exact to 1e-9 so seeded runs agree to the last digit."""
        return spread * (Decimal(rng.randint(-1_000_000_000, 1_000_000_000)) / Decimal(1_000_000_000))

    async def _delay(self, rng: random.Random, bounds: tuple[float, float]) -> None:
        low, high = bounds
        if high > 0:
            await asyncio.sleep(rng.uniform(low, high))

    async def quote(
        self, dex: Dex, *, order_id: UUID, token_in: str, token_out: str, amount_in: Decimal, attempt: int = 1
    ) -> Quote:
        venue = VENUES[dex]
        rng = self._rng(order_id, attempt, dex, "quote")
        await self._delay(rng, self._latency.quote)
        price = (base_price(token_in, token_out) * (1 + self._uniform(rng, venue.variance))).quantize(
            PRICE_PLACES
        )
        amount_out = (amount_in * price * (1 - venue.fee)).quantize(AMOUNT_PLACES)
        return Quote(dex=dex, price=price, fee=venue.fee, amount_out=amount_out)

    async def execute(
        self, quote: Quote, *, order_id: UUID, amount_in: Decimal, min_amount_out: Decimal, attempt: int = 1
    ) -> SwapResult:
        """Swap on the quote's venue. Idempotent per order: a repeat returns the first swap's result.

        Like an on-chain swap instruction, the swap carries the least output it accepts: if the price has
        moved so far that it would return less, the venue rejects it (SlippageExceeded) and nothing is
        swapped."""
        key = swap_key(order_id)
        done = await self.ledger_entry(key)
        if done is not None:
            return done
        venue = VENUES[quote.dex]
        rng = self._rng(order_id, attempt, quote.dex, "execute")
        await self._delay(rng, self._latency.execution)
        executed_price = (quote.price * (1 + self._uniform(rng, EXECUTION_DRIFT))).quantize(PRICE_PLACES)
        amount_out = (amount_in * executed_price * (1 - venue.fee)).quantize(AMOUNT_PLACES)
        if amount_out < min_amount_out:
            raise SlippageExceeded(str(min_amount_out), str(amount_out))
        tx_hash = b58encode(bytes(rng.getrandbits(8) for _ in range(64)))
        await self._pool.execute(
            "INSERT INTO mock_dex_swaps"
            " (idempotency_key, order_id, dex, amount_in, amount_out, executed_price, tx_hash)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING",
            key,
            order_id,
            quote.dex.value,
            amount_in,
            amount_out,
            executed_price,
            tx_hash,
        )
        settled = await self.ledger_entry(key)
        assert settled is not None
        return settled

    async def ledger_entry(self, key: str) -> SwapResult | None:
        row = await self._pool.fetchrow(
            "SELECT dex, tx_hash, executed_price, amount_out FROM mock_dex_swaps WHERE idempotency_key = $1",
            key,
        )
        if row is None:
            return None
        return SwapResult(Dex(row["dex"]), row["tx_hash"], row["executed_price"], row["amount_out"])
