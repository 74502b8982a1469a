"""The HTTP bodies of the ingress API, and the rules a placed order must satisfy."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from shared.domain.events import Amount, Dex, Quote, Wire, plain_decimal
from shared.domain.order import OrderRecord
from shared.domain.status import OrderStatus
from shared.venue.model import KNOWN_TOKENS

BASE58_MINT = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
DECIMAL_TEXT = re.compile(r"^[0-9]{1,40}(\.[0-9]{1,40})?$")
MAX_AMOUNT_IN = Decimal("1000000000000")  # 1e12 tokens: far above any real order, far below NUMERIC's range
MAX_FRACTION_DIGITS = 18
MAX_SLIPPAGE = Decimal("0.5")
BPS = Decimal(10_000)
CLIENT_ORDER_ID = re.compile(r"^[\x21-\x7e]{1,64}$")


def _token(value: str) -> str:
    if value in KNOWN_TOKENS or BASE58_MINT.match(value):
        return value
    raise PydanticCustomError(
        "token",
        "must be a known symbol ({symbols}) or a base58 mint address of 32-44 characters",
        {"symbols": ", ".join(sorted(KNOWN_TOKENS))},
    )


class _Marker:
    """Put in place of a slippage field by PlaceOrder's pre-check, so the error lands on that field while
    every other field is still validated."""


NO_SLIPPAGE, BOTH_SLIPPAGES = _Marker(), _Marker()


def _decimal(value: Any) -> Decimal:
    """A decimal string in plain notation, or a JSON number read exactly as written (never a float)."""
    if value is NO_SLIPPAGE:
        raise PydanticCustomError("missing", "required: give slippage (a fraction) or slippageBps")
    if isinstance(value, bool):
        raise PydanticCustomError("decimal", 'must be a decimal string such as "1.5"')
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        value = repr(value)
        if "e" in value or "inf" in value or "nan" in value:
            raise PydanticCustomError("decimal", 'must be a decimal in plain notation, such as "0.01"')
    if not isinstance(value, str) or not DECIMAL_TEXT.match(value):
        raise PydanticCustomError("decimal", 'must be a decimal string such as "1.5"')
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover (the pattern admits only valid decimals)
        raise PydanticCustomError("decimal", "must be a decimal string") from exc


def _not_both(value: Any) -> Any:
    if value is BOTH_SLIPPAGES:
        raise PydanticCustomError("slippage_choice", "give slippage or slippageBps, not both")
    return value


def _fraction_digits(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _amount_in(value: Decimal) -> Decimal:
    if value <= 0:
        raise PydanticCustomError("amount", "must be greater than 0")
    if value > MAX_AMOUNT_IN:
        raise PydanticCustomError("amount", "must be at most {max}", {"max": plain_decimal(MAX_AMOUNT_IN)})
    if _fraction_digits(value) > MAX_FRACTION_DIGITS:
        raise PydanticCustomError("amount", "must have at most 18 digits after the decimal point")
    return value


def _slippage(value: Decimal) -> Decimal:
    if not Decimal(0) < value <= MAX_SLIPPAGE:
        raise PydanticCustomError("slippage", "must be a fraction greater than 0 and at most 0.5")
    if _fraction_digits(value) > MAX_FRACTION_DIGITS:
        raise PydanticCustomError("slippage", "must have at most 18 digits after the decimal point")
    return value


Token = Annotated[
    str,
    AfterValidator(_token),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": sorted(KNOWN_TOKENS)},
                {"type": "string", "pattern": BASE58_MINT.pattern},
            ],
            "description": "A known symbol of the mock DEX, or a base58 mint address (32-44 characters).",
        }
    ),
]
_DECIMAL_SCHEMA = {"type": "string", "pattern": r"^[0-9]{1,13}(\.[0-9]{1,18})?$"}
AmountIn = Annotated[
    Decimal,
    BeforeValidator(_decimal),
    AfterValidator(_amount_in),
    WithJsonSchema(
        {
            "anyOf": [_DECIMAL_SCHEMA, {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12}],
            "description": "Positive decimal string (numbers are read exactly), at most 18 fractional digits,"
            " at most 1e12.",
            "examples": ["1.5"],
        }
    ),
]
Slippage = Annotated[
    Decimal,
    BeforeValidator(_decimal),
    AfterValidator(_slippage),
    WithJsonSchema(
        {
            "anyOf": [_DECIMAL_SCHEMA, {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5}],
            "description": "Tolerated slippage as a fraction: 0 < slippage <= 0.5 (0.01 = 1 %).",
            "examples": ["0.01"],
        }
    ),
]


class PlaceOrder(BaseModel):
    """POST /api/orders/execute. Give `slippage` (a fraction) or `slippageBps` (basis points), not both.
    Only the camelCase names are accepted; any other field is refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid", frozen=True)

    type: Literal["market"]
    token_in: Token
    token_out: Token
    amount_in: AmountIn
    slippage: Slippage | None = None
    slippage_bps: Annotated[int | None, BeforeValidator(_not_both)] = Field(
        None, ge=1, le=5000, strict=True, description="Slippage in basis points, 1-5000 (100 = 1 %)."
    )
    client_order_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=CLIENT_ORDER_ID.pattern,
        description="Your own reference (printable ASCII, no spaces, at most 64), stored and returned.",
    )

    @model_validator(mode="before")
    @classmethod
    def _mark_slippage_choice(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "slippage" not in data and "slippageBps" not in data:
            return {**data, "slippage": NO_SLIPPAGE}
        if data.get("slippage") is not None and data.get("slippageBps") is not None:
            return {**data, "slippageBps": BOTH_SLIPPAGES}
        return data

    @field_validator("token_out")
    @classmethod
    def _distinct_tokens(cls, value: str, info: Any) -> str:
        if value == info.data.get("token_in"):
            raise PydanticCustomError("token_pair", "must differ from tokenIn")
        return value

    @model_validator(mode="after")
    def _one_slippage(self) -> PlaceOrder:
        if (self.slippage is None) == (self.slippage_bps is None):
            raise PydanticCustomError(
                "slippage_choice", "give exactly one of slippage or slippageBps", {"field": "slippage"}
            )
        return self

    @property
    def slippage_fraction(self) -> Decimal:
        if self.slippage is not None:
            return self.slippage
        assert self.slippage_bps is not None
        return Decimal(self.slippage_bps) / BPS

    def fingerprint(self) -> str:
        """A digest of the canonical order: equal for bodies that mean the same order ("1.50" and 1.5,
        slippage 0.01 and slippageBps 100), different otherwise."""
        canonical = {
            "type": self.type,
            "tokenIn": self.token_in,
            "tokenOut": self.token_out,
            "amountIn": plain_decimal(self.amount_in),
            "slippage": plain_decimal(self.slippage_fraction),
            "clientOrderId": self.client_order_id,
        }
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


class OrderAccepted(Wire):
    order_id: UUID
    status: OrderStatus
    client_order_id: str | None = None


class OrderSummary(Wire):
    """An order as recorded, without its event log: an item of GET /api/orders."""

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
    client_order_id: str | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def fields_of(cls, order: OrderRecord) -> dict[str, Any]:
        return {
            "order_id": order.id,
            "type": order.type,
            "token_in": order.token_in,
            "token_out": order.token_out,
            "amount_in": order.amount_in,
            "slippage": order.slippage,
            "status": order.status,
            "seq": order.seq,
            "attempt": order.attempt,
            "dex": order.dex_used,
            "quotes": order.quotes,
            "executed_price": order.executed_price,
            "amount_out": order.amount_out,
            "tx_hash": order.tx_hash,
            "failure_reason": order.failure_reason,
            "error": order.error,
            "client_order_id": order.client_order_id,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
        }

    @classmethod
    def of(cls, order: OrderRecord) -> OrderSummary:
        return cls(**cls.fields_of(order))


class OrderView(OrderSummary):
    """GET /api/orders/{orderId} (and the answer of DELETE): the order as recorded, with its event log."""

    logs: list[dict[str, Any]]

    @classmethod
    def of(cls, order: OrderRecord) -> OrderView:
        return cls(**cls.fields_of(order), logs=order.logs)


class OrderPage(Wire):
    """GET /api/orders: a page of the caller's orders, newest first; `nextCursor` fetches the next page
    (null on the last)."""

    orders: list[OrderSummary]
    next_cursor: str | None


class Readiness(BaseModel):
    """GET /ready: each engine's state; 503 when one the ingress cannot take orders without is down.
    "degraded": Redis is down and the rate limit fails open (RATE_LIMIT_FAIL_OPEN), so orders are taken."""

    status: Literal["ready", "degraded", "not_ready"]
    checks: dict[str, Literal["ok", "down"]]
