"""The engine's HTTP API, as the CLI uses it. Placing an order is retried with one Idempotency-Key, so a
retry either replays the order that was placed or places it now, never a second one (README, "Errors,
idempotency and rate limits"); the other calls answer at once. httpx's errors stop here: callers see
`ServerRefused` (an error envelope) or `Unreachable`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from orderflow.config import EXECUTE_PATH
from orderflow.errors import ServerRefused, Unreachable, describe

ORDERS_PATH = "/api/orders"
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
# Answers that refuse only this request: the same request, with the same key, may succeed later. 409
# idempotency_in_progress is one too: the key is being written by another request (it carries Retry-After).
RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRIABLE_CONFLICT = "idempotency_in_progress"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a POST stop once `budget_s` has passed since the first attempt (a wait that would end
    past it is not started). Without Retry-After, waits double from `first_backoff_s` to `max_backoff_s`."""

    budget_s: float = 30.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1, 2, ...)."""
        return min(self.first_backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


@dataclass(frozen=True)
class NewOrder:
    token_in: str
    token_out: str
    amount_in: str  # decimal strings, sent as typed
    slippage: str
    client_order_id: str | None = None

    def body(self) -> dict[str, str]:
        body = {
            "type": "market",
            "tokenIn": self.token_in,
            "tokenOut": self.token_out,
            "amountIn": self.amount_in,
            "slippage": self.slippage,
        }
        if self.client_order_id is not None:
            body["clientOrderId"] = self.client_order_id
        return body


def retry_after_s(response: httpx.Response, refusal: ServerRefused, now: datetime) -> float | None:
    """The server's Retry-After (seconds or an HTTP date), else the envelope's `retryAfter`."""
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            return max(0.0, (parsedate_to_datetime(header) - now).total_seconds())
        except (TypeError, ValueError):
            pass
    return refusal.retry_after


def _retriable(response: httpx.Response, refusal: ServerRefused) -> bool:
    return response.status_code in RETRIABLE_STATUSES or (
        response.status_code == 409 and refusal.code == RETRIABLE_CONFLICT
    )


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        envelope = {
            "error": "invalid_response",
            "message": f"HTTP {response.status_code} without a JSON object",
        }
        raise ServerRefused(response.status_code, envelope)
    return body


class OrdersClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._server = str(http.base_url).rstrip("/")
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    async def place(self, order: NewOrder, idempotency_key: str) -> dict[str, Any]:
        """POST the order; returns the 202 body (`orderId`, `status`, `clientOrderId`?). A transport error,
        429, 5xx or 409 idempotency_in_progress is retried with the same key within the retry budget."""
        hint = (
            "the order may or may not have been placed: repeat the command with"
            f" --idempotency-key {idempotency_key} to find out without placing it twice"
        )
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            failure: ServerRefused | Unreachable
            try:
                response = await self._http.post(
                    EXECUTE_PATH, json=order.body(), headers={"Idempotency-Key": idempotency_key}
                )
            except httpx.TransportError as exc:
                failure = Unreachable(self._server, describe(exc), hint=hint)
                wait = self._retry.backoff(attempt)
            else:
                if response.is_success:
                    return _json_object(response)
                failure = ServerRefused.of(response.status_code, response.content)
                if not _retriable(response, failure):
                    raise failure
                failure.hint = hint
                given = retry_after_s(response, failure, datetime.now(UTC))
                wait = self._retry.backoff(attempt) if given is None else given
            if self._clock() - started + wait > self._retry.budget_s:
                raise failure
            await self._sleep(wait)

    async def get(self, order_id: str) -> dict[str, Any]:
        return await self._call("GET", f"{ORDERS_PATH}/{order_id}")

    async def list(
        self,
        *,
        status: str | None = None,
        client_order_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page: `{"orders": [...], "nextCursor": str | None}`, newest first."""
        params = {"status": status, "clientOrderId": client_order_id, "limit": limit, "cursor": cursor}
        return await self._call("GET", ORDERS_PATH, params={k: v for k, v in params.items() if v is not None})

    async def cancel(self, order_id: str) -> dict[str, Any]:
        return await self._call("DELETE", f"{ORDERS_PATH}/{order_id}")

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, params=params)
        except httpx.TransportError as exc:
            raise Unreachable(self._server, describe(exc)) from exc
        if not response.is_success:
            raise ServerRefused.of(response.status_code, response.content)
        return _json_object(response)
