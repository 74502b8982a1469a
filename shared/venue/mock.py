"""The mock Solana venues: Raydium and Meteora quote around a base price with their own variance,
take their pool fee, charge a price impact that grows with the trade's size, and execute after a delay at a
price that has moved since the quote (up to MOCK_PRICE_MOVE_BPS either way, so a tight slippage really trips).

Pool fees: Raydium 0.25 % on every pool; Meteora 0.2 % on pools of majors and stables (SOL, USDC, USDT) and
0.3 % on every other pool. Price impact is a constant-product pool's: a trade worth `v` USD against a pool
holding `L` USD of tokenIn gets `L / (L + v)` of the spot price (Raydium L = 20 M USD, Meteora 8 M USD); a
trade above 30 % of L is refused (insufficient liquidity).

Failure injection (settings, off by default): transient errors (a quote or swap that times out, a swap whose
blockhash expired) are retriable and leave nothing behind; permanent ones (no pool for the pair, insufficient
liquidity) are not. A swap also carries `valid_until`, like a Solana transaction's last valid block height:
the venue lands it only before that instant (checked atomically with the ledger insert), so once it has
passed, the ledger is final for that submission.

With MOCK_SEED set every draw is a pure function of (seed, orderId, attempt, venue, purpose), so results do
not depend on timing or concurrency; without it the draws are truly random. Executions are idempotent: the
venue's ledger (table mock_dex_swaps) keeps one row per idempotency key, and a second execute with the same
key returns the first result instead of swapping again.

Settlement: `settle(order, attempt)` answers whether that attempt landed, and makes the answer final. It
writes an `expired` row under the key, which waits for any swap of the key still being written and, once in,
makes that attempt's swap conflict; a swap of a later attempt replaces the `expired` row (the order's
retry). So an order has at most one swap, and a settled attempt that did not land never will.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from shared.domain.errors import (
    BlockhashExpired,
    DexError,
    InsufficientLiquidity,
    NoPool,
    SlippageExceeded,
    VenueTimeout,
)
from shared.domain.events import Dex, Quote
from shared.domain.order import SwapResult
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger
from shared.venue.ledger import Ledger, LedgerEntry, PostgresLedger
from shared.venue.model import (
    AMOUNT_PLACES,
    MAX_POOL_SHARE,
    PRICE_PLACES,
    VENUES,
    FailureRates,
    Latency,
    b58encode,
    base_price,
    price_impact,
    swap_key,
    usd_price,
)

logger = get_logger(__name__)


class MockDex:
    """Raydium and Meteora as the module docstring describes them: a `Venue`."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        seed: str | None,
        latency: Latency,
        price_move: Decimal = Decimal("0.01"),
        failures: FailureRates | None = None,
    ) -> None:
        self._ledger = ledger
        self._seed = seed
        self._latency = latency
        self._price_move = price_move
        self._failures = failures or FailureRates()
        # Seeded once from the OS: SystemRandom read os.urandom on every draw (a syscall, 5 % of a router).
        self._entropy = random.Random()

    @classmethod
    def from_settings(cls, pool: asyncpg.Pool, settings: Settings) -> MockDex:
        return cls(
            PostgresLedger(pool, batched=True),
            seed=settings.mock_seed,
            latency=Latency.from_settings(settings),
            price_move=Decimal(settings.mock_price_move_bps) / Decimal(10_000),
            failures=FailureRates.from_settings(settings),
        )

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
        wait = rng.uniform(low, high)  # drawn even when 0, so the draws after it do not depend on latency
        if high > 0:
            await asyncio.sleep(wait)

    @staticmethod
    def _inject(rng: random.Random, transient: float, permanent: float, errors: tuple[DexError, ...]) -> None:
        """Raise an injected failure: `errors` is (transient, transient, permanent, permanent)."""
        draw = rng.random()
        if draw < transient:
            raise errors[0] if rng.random() < 0.5 else errors[1]
        if draw < transient + permanent:
            raise errors[2] if rng.random() < 0.5 else errors[3]

    def quote_now(
        self, dex: Dex, *, order_id: UUID, token_in: str, token_out: str, amount_in: Decimal, attempt: int = 1
    ) -> Quote:
        """The quote without the venue's delay (what `quote` answers; tests compute expectations with it)."""
        venue = VENUES[dex]
        rng = self._rng(order_id, attempt, dex, "quote")
        rng.random()  # the delay's draw, so that quote() and quote_now() agree
        self._inject(
            self._rng(order_id, attempt, dex, "quote-failure"),
            self._failures.quote_transient,
            self._failures.quote_permanent,
            (
                VenueTimeout(f"{dex} quote timed out"),
                VenueTimeout(f"{dex} quote timed out"),
                NoPool(f"{dex} has no pool for {token_in}/{token_out}"),
                NoPool(f"{dex} has no pool for {token_in}/{token_out}"),
            ),
        )
        usd_in = amount_in * usd_price(token_in)
        if usd_in > venue.liquidity_usd * MAX_POOL_SHARE:
            raise InsufficientLiquidity(f"{dex} pool too shallow for {usd_in:.2f} USD")
        spot = base_price(token_in, token_out) * (1 + self._uniform(rng, venue.variance))
        price = (spot * price_impact(venue, usd_in)).quantize(PRICE_PLACES)
        fee = venue.pool_fee(token_in, token_out)
        amount_out = (amount_in * price * (1 - fee)).quantize(AMOUNT_PLACES)
        return Quote(dex=dex, price=price, fee=fee, amount_out=amount_out)

    async def quote(
        self, dex: Dex, *, order_id: UUID, token_in: str, token_out: str, amount_in: Decimal, attempt: int = 1
    ) -> Quote:
        await self._delay(self._rng(order_id, attempt, dex, "quote"), self._latency.quote)
        return self.quote_now(
            dex,
            order_id=order_id,
            token_in=token_in,
            token_out=token_out,
            amount_in=amount_in,
            attempt=attempt,
        )

    def execution_price(self, quote: Quote, *, order_id: UUID, attempt: int = 1) -> Decimal:
        """The price `execute` swaps `quote` at (pure under a seed: tests compute expectations with it)."""
        rng = self._rng(order_id, attempt, quote.dex, "execute")
        rng.random()  # the delay's draw
        return self._moved(rng, quote)

    def _moved(self, rng: random.Random, quote: Quote) -> Decimal:
        """Where the price has moved by the time the swap executes."""
        return (quote.price * (1 + self._uniform(rng, self._price_move))).quantize(PRICE_PLACES)

    async def execute(
        self,
        quote: Quote,
        *,
        order_id: UUID,
        amount_in: Decimal,
        min_amount_out: Decimal,
        attempt: int = 1,
        valid_until: datetime | None = None,
    ) -> SwapResult:
        """Swap on the quote's venue. Idempotent per order: a repeat returns the first swap's result.

        Like an on-chain swap instruction, the swap carries the least output it accepts: if the price has
        moved so far that it would return less, the venue rejects it (SlippageExceeded) and nothing is
        swapped. It lands only before `valid_until` and before the attempt is settled (BlockhashExpired
        afterwards, nothing swapped)."""
        key = swap_key(order_id)
        # The venue's own record of every swap sent to it, written before anything can land: the chaos
        # checker counts these per order (the ledger's key would hide a second swap sent for one order).
        logger.info("venue.execute", orderId=str(order_id), attempt=attempt, dex=quote.dex.value)
        rng = self._rng(order_id, attempt, quote.dex, "execute")
        await self._delay(rng, self._latency.execution)
        executed_price = self._moved(rng, quote)
        amount_out = (amount_in * executed_price * (1 - quote.fee)).quantize(AMOUNT_PLACES)
        try:
            self._inject(
                self._rng(order_id, attempt, quote.dex, "execute-failure"),
                self._failures.swap_transient,
                self._failures.swap_permanent,
                (
                    VenueTimeout(f"{quote.dex} swap timed out before it was sent"),
                    BlockhashExpired(f"{quote.dex} swap not included before its blockhash expired"),
                    NoPool(f"{quote.dex} pool closed"),
                    InsufficientLiquidity(f"{quote.dex} pool drained below the trade"),
                ),
            )
            if amount_out < min_amount_out:
                raise SlippageExceeded(str(min_amount_out), str(amount_out))
        except DexError:
            landed = await self._ledger.swap_of(key)  # an earlier submission of this order landed: its result
            if landed is not None:
                return landed
            raise
        tx_hash = b58encode(rng.randbytes(64))  # one draw (one urandom call unseeded), not 64
        entry = LedgerEntry(
            key, order_id, quote.dex, amount_in, amount_out, executed_price, tx_hash, valid_until, attempt
        )
        inserted = await self._ledger.land(entry)
        # Not inserted: past valid_until, or another submission of this order landed first (its result).
        settled = inserted or await self._ledger.swap_of(key)
        if settled is None:
            raise BlockhashExpired(f"{quote.dex} swap not included before {valid_until}")
        return settled

    async def settle(self, order_id: UUID, attempt: int) -> SwapResult | None:
        """The swap of `order_id` if one landed (in this attempt or an earlier one), else None; after None,
        this attempt's swap can never land. Waits for a swap of the order still being written."""
        return await self._ledger.settle(swap_key(order_id), order_id, attempt)

    async def close(self) -> None:
        await self._ledger.close()
