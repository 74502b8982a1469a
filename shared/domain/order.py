"""An order as the engine holds it (one row of `orders`), and what follows from it: its deadline, its latest
event, the errors it met, and the order once a step is applied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from shared.domain.events import AttemptError, Dex, Quote, StatusEvent
from shared.domain.status import OrderStatus, check_transition
from shared.runtime.clock import utcnow


@dataclass(frozen=True)
class SwapResult:
    """A swap that landed."""

    dex: Dex
    tx_hash: str
    executed_price: Decimal
    amount_out: Decimal


@dataclass(frozen=True)
class OrderRecord:
    """One row of `orders`."""

    id: UUID
    type: str
    token_in: str
    token_out: str
    amount_in: Decimal
    slippage: Decimal
    status: OrderStatus
    seq: int
    attempt: int
    dex_used: Dex | None
    quotes: dict[Dex, Quote]
    executed_price: Decimal | None
    amount_out: Decimal | None
    tx_hash: str | None
    failure_reason: str | None
    error: str | None
    logs: list[dict[str, Any]]
    correlation_id: str | None
    client_order_id: str | None
    created_at: datetime
    updated_at: datetime
    latest: StatusEvent | None = None
    """The latest event when the writer knows it already (after its own step); else read from `logs`."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OrderRecord:
        """From a row of `orders` (any mapping of its columns: an asyncpg Record, a dict in a test)."""
        quotes = {
            dex: Quote.model_validate(row[f"{dex.value}_quote"])
            for dex in Dex
            if row[f"{dex.value}_quote"] is not None
        }
        return cls(
            id=row["id"],
            type=row["type"],
            token_in=row["token_in"],
            token_out=row["token_out"],
            amount_in=row["amount_in"],
            slippage=row["slippage"],
            status=OrderStatus(row["status"]),
            seq=row["seq"],
            attempt=row["attempt"],
            dex_used=Dex(row["dex_used"]) if row["dex_used"] else None,
            quotes=quotes,
            executed_price=row["executed_price"],
            amount_out=row["amount_out"],
            tx_hash=row["tx_hash"],
            failure_reason=row["failure_reason"],
            error=row["error"],
            logs=row["logs"],
            correlation_id=row["correlation_id"],
            client_order_id=row["client_order_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def deadline(self, deadline_ms: int) -> datetime:
        return self.created_at + timedelta(milliseconds=deadline_ms)

    def error_history(self) -> list[AttemptError]:
        """Every error this order met, one per failed attempt (from its events)."""
        history = []
        for event in (StatusEvent.model_validate(entry) for entry in self.logs):
            if event.error is None or event.status not in (OrderStatus.PENDING, OrderStatus.FAILED):
                continue
            # a retry event carries the attempt to come; the error is the previous attempt's
            failed = event.attempt - 1 if event.status is OrderStatus.PENDING else event.attempt
            history.append(
                AttemptError(
                    attempt=failed, error=event.error, failure_reason=event.failure_reason, at=event.at
                )
            )
        return history

    def latest_event(self) -> StatusEvent:
        """The event with this order's current seq (the last one in `logs`)."""
        return self.latest if self.latest is not None else StatusEvent.model_validate(self.logs[-1])

    def advanced(self, event: StatusEvent) -> OrderRecord:
        """This order once `event` is applied (what the conditional UPDATE wrote, without reading it back)."""
        failed = event.status is OrderStatus.FAILED
        return replace(
            self,
            status=event.status,
            seq=event.seq,
            attempt=event.attempt,
            dex_used=event.dex or self.dex_used,
            quotes={**self.quotes, **(event.quotes or {})},
            tx_hash=event.tx_hash or self.tx_hash,
            executed_price=event.executed_price if event.executed_price is not None else self.executed_price,
            amount_out=event.amount_out if event.amount_out is not None else self.amount_out,
            failure_reason=(event.failure_reason or self.failure_reason) if failed else None,
            error=(event.error or self.error) if failed else None,
            logs=[],
            latest=event,
            updated_at=event.at,
        )

    def next_event(
        self,
        status: OrderStatus,
        *,
        max_attempts: int,
        attempt: int | None = None,
        next_retry_at: datetime | None = None,
        dex: Dex | None = None,
        quotes: dict[Dex, Quote] | None = None,
        tx_hash: str | None = None,
        executed_price: Decimal | None = None,
        amount_out: Decimal | None = None,
        slippage_bps: Decimal | None = None,
        error: str | None = None,
        failure_reason: str | None = None,
    ) -> StatusEvent:
        """The event that moves this order to `status`, numbered seq + 1. `OrderRules` says which fields
        each step sets; an unknown field is a TypeError (and a mypy error), not silently dropped."""
        check_transition(self.status, status)
        return StatusEvent(
            order_id=self.id,
            seq=self.seq + 1,
            status=status,
            at=utcnow(),
            attempt=self.attempt if attempt is None else attempt,
            max_attempts=max_attempts,
            next_retry_at=next_retry_at,
            dex=dex,
            quotes=quotes,
            tx_hash=tx_hash,
            executed_price=executed_price,
            amount_out=amount_out,
            slippage_bps=slippage_bps,
            error=error,
            failure_reason=failure_reason,
            correlation_id=self.correlation_id,
        )
