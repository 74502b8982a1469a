"""The messages that cross process boundaries: Kafka payloads and the HTTP/WebSocket views of an order.

One schema system for all of them (pydantic). On the wire: camelCase keys, amounts and prices as decimal
strings in plain notation ("0.000000001", never "1E-9"), timestamps in ISO 8601 UTC. A timestamp read without
its UTC offset is refused (AwareDatetime): a naive one would fail far from here, where it meets the clock (a
retry's `dueAt`, a delivery time). Every Kafka payload carries `v`; a contract changes only by adding
optional fields, a breaking change gets a new topic.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

from shared.domain.status import OrderStatus

SCHEMA_VERSION: Literal[1] = 1


def plain_decimal(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


Amount = Annotated[
    Decimal,
    PlainSerializer(plain_decimal, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?$"}, mode="serialization"),
]
"""A Decimal that travels as a plain decimal string and is never a float."""


BPS = Decimal(10_000)


def realised_slippage_bps(quoted: Decimal, executed: Decimal) -> Decimal:
    """How much less than quoted a swap returned, in bps (negative when it returned more): the `slippageBps`
    of a confirmed event, and what a client (orderflow, the console) shows from the amounts."""
    return ((quoted - executed) / quoted * BPS).quantize(Decimal("0.01"))


class Dex(StrEnum):
    RAYDIUM = "raydium"
    METEORA = "meteora"


class Wire(BaseModel):
    """Base of every wire model: camelCase aliases, immutable, JSON bytes in and out."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (as stored in JSONB and sent over WebSockets)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        return cls.model_validate_json(data)


class Quote(Wire):
    """One venue's answer for one order: what you would get, net of the pool fee."""

    dex: Dex
    price: Amount
    fee: Amount
    amount_out: Amount


SignedAmount = Annotated[
    Decimal,
    PlainSerializer(plain_decimal, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}, mode="serialization"),
]
"""A decimal string that may be negative (e.g. a slippage in the user's favour)."""


class StatusEvent(Wire):
    """One step in an order's life on `order.status` (docs/events.md). `seq` is 1 for pending and grows by
    one per event of that order: it makes replay, dedupe and WebSocket resume exact."""

    v: Literal[1] = SCHEMA_VERSION
    order_id: UUID
    seq: int
    status: OrderStatus
    at: AwareDatetime
    attempt: int = 0
    max_attempts: int
    next_retry_at: AwareDatetime | None = None
    dex: Dex | None = None
    quotes: dict[Dex, Quote] | None = None
    tx_hash: str | None = None
    executed_price: Amount | None = None
    amount_out: Amount | None = None
    failure_reason: str | None = None
    error: str | None = None
    correlation_id: str | None = None
    slippage_bps: SignedAmount | None = None
    """On confirmed: how much less than quoted the swap returned, in bps (negative: it returned more)."""


class OrderPlaced(Wire):
    """On `orders`: an accepted order, to be routed."""

    v: Literal[1] = SCHEMA_VERSION
    order_id: UUID
    type: Literal["market"] = "market"
    token_in: str
    token_out: str
    amount_in: Amount
    slippage: Amount
    created_at: AwareDatetime
    correlation_id: str | None = None


class ExecuteOrder(Wire):
    """On `orders.execute`: swap this order on the chosen venue."""

    v: Literal[1] = SCHEMA_VERSION
    order_id: UUID
    dex: Dex
    quote: Quote
    token_in: str
    token_out: str
    amount_in: Amount
    slippage: Amount
    attempt: int = 1
    created_at: AwareDatetime
    correlation_id: str | None = None


class RetryOrder(Wire):
    """On `orders.retry.<delay>`: route this order again (attempt `attempt`) once `due_at` has come."""

    v: Literal[1] = SCHEMA_VERSION
    order_id: UUID
    attempt: int
    due_at: AwareDatetime
    created_at: AwareDatetime
    """When the order was first accepted (the original timestamp: the deadline counts from it)."""
    error: str
    correlation_id: str | None = None


class AttemptError(Wire):
    attempt: int
    error: str
    failure_reason: str | None = None
    at: AwareDatetime


class DeadLetter(Wire):
    """On `orders.dlq`: an order that failed for good after retrying, with every error it met."""

    v: Literal[1] = SCHEMA_VERSION
    order_id: UUID
    token_in: str
    token_out: str
    amount_in: Amount
    slippage: Amount
    attempts: int
    max_attempts: int
    error: str
    failure_reason: str | None = None
    errors: list[AttemptError]
    created_at: AwareDatetime
    failed_at: AwareDatetime
    correlation_id: str | None = None
