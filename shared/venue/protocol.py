"""What the engine needs of a venue. The mock (`shared/venue/mock.py`) implements it; so would an adapter to
a real DEX's API. The router quotes through it, the executor swaps and settles through it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol
from uuid import UUID

from shared.domain.events import Dex, Quote
from shared.domain.order import SwapResult


class Venue(Protocol):
    async def quote(
        self, dex: Dex, *, order_id: UUID, token_in: str, token_out: str, amount_in: Decimal, attempt: int = 1
    ) -> Quote:
        """What `dex` would give for `amount_in` now, net of its fee. Raises DexError (`retriable` says
        whether asking again may help)."""
        ...

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
        """Swap on the quote's venue, at most once per order whatever the attempt (a repeat returns the first
        swap's result), returning no less than `min_amount_out` (else SlippageExceeded, nothing swapped), and
        only before `valid_until` (else BlockhashExpired)."""
        ...

    async def settle(self, order_id: UUID, attempt: int) -> SwapResult | None:
        """The order's swap if one landed; None means this attempt's swap never will (the retry may go)."""
        ...

    async def close(self) -> None: ...
