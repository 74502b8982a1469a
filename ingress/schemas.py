"""The HTTP bodies of the ingress API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from shared.events import Amount, Dex, OrderStatus, Quote, Wire
from shared.orders import OrderRecord


class PlaceOrder(BaseModel):
    """POST /api/orders/execute. Amounts are decimal strings (numbers are accepted and read exactly)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    type: Literal["market"]
    token_in: str = Field(min_length=1, max_length=44)
    token_out: str = Field(min_length=1, max_length=44)
    amount_in: Decimal = Field(gt=0, max_digits=38, decimal_places=18)
    slippage: Decimal = Field(gt=0, le=Decimal("0.5"))


class OrderAccepted(Wire):
    order_id: UUID
    status: OrderStatus


class OrderView(Wire):
    """GET /api/orders/{orderId}: the order as recorded, with its event log."""

    order_id: UUID
    type: str
    token_in: str
    token_out: str
    amount_in: Amount
    slippage: Amount
    status: OrderStatus
    seq: int
    attempt: int
    dex: Dex | None
    quotes: dict[Dex, Quote]
    executed_price: Amount | None
    amount_out: Amount | None
    tx_hash: str | None
    failure_reason: str | None
    error: str | None
    logs: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: OrderRecord) -> OrderView:
        return cls(
            order_id=order.id,
            type=order.type,
            token_in=order.token_in,
            token_out=order.token_out,
            amount_in=order.amount_in,
            slippage=order.slippage,
            status=order.status,
            seq=order.seq,
            attempt=order.attempt,
            dex=order.dex_used,
            quotes=order.quotes,
            executed_price=order.executed_price,
            amount_out=order.amount_out,
            tx_hash=order.tx_hash,
            failure_reason=order.failure_reason,
            error=order.error,
            logs=order.logs,
            created_at=order.created_at,
            updated_at=order.updated_at,
        )
