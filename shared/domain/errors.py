"""The project's error tree. Every error carries its API error code and HTTP status, and says whether retrying
can help; consumers route on `retriable`, the HTTP layer renders `code` in the one error envelope."""

from __future__ import annotations

from typing import Any, ClassVar


class EngineError(Exception):
    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidBody(EngineError):
    code = "invalid_body"
    http_status = 400


class NotFound(EngineError):
    code = "not_found"
    http_status = 404

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class MethodNotAllowed(EngineError):
    code = "method_not_allowed"
    http_status = 405


class ServiceUnavailable(EngineError):
    code = "service_unavailable"
    http_status = 503
    retriable = True


class StoreUnreachable(ServiceUnavailable):
    """Postgres did not answer (down, unreachable, out of connections): the request may be retried."""

    def __init__(self) -> None:
        super().__init__("the order store is unreachable")


class InvalidTransition(EngineError):
    code = "invalid_transition"

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"an order in {current} cannot move to {target}")


class DexError(EngineError):
    """A venue refused or failed a quote or a swap."""

    code = "dex_error"
    http_status = 502


class SlippageExceeded(DexError):
    code = "slippage_exceeded"

    def __init__(self, min_amount_out: str, amount_out: str) -> None:
        super().__init__(f"the swap would return {amount_out}, below the minimum {min_amount_out}")


class VenueTimeout(DexError):
    """The venue did not answer in time; nothing happened on its side."""

    code = "venue_timeout"
    retriable = True


class BlockhashExpired(DexError):
    """The swap's transaction was not included before its blockhash expired: it never landed."""

    code = "blockhash_expired"
    retriable = True


class NoPool(DexError):
    code = "no_pool"


class InsufficientLiquidity(DexError):
    code = "insufficient_liquidity"


class NoVenueCanQuote(DexError):
    """Every venue refused the pair for good (no pool, insufficient liquidity): retrying cannot help. Not
    `quote_unavailable`, which a retry may cure: a client reading the code knows which it met."""

    code = "no_route"


class OrderTimedOut(EngineError):
    """The order was not terminal within ORDER_DEADLINE_MS of its creation."""

    code = "timeout"

    def __init__(self) -> None:
        super().__init__("timeout")


class QuoteUnavailable(DexError):
    """No venue quoted, and at least one failure was transient: the order is retried."""

    code = "quote_unavailable"
    retriable = True


# Ingress: the HTTP contract's refusals, one per error code of the API.


class Unauthorized(EngineError):
    """API_KEYS is set and the request carries no key (no `Authorization: Bearer`, nor, on a WebSocket
    handshake, the `bearer.<key>` subprotocol)."""

    code = "unauthorized"
    http_status = 401

    def __init__(self) -> None:
        super().__init__("an API key is required: send Authorization: Bearer <key>")


class Forbidden(EngineError):
    """The request carries a key that is not in API_KEYS (unknown, revoked or mistyped)."""

    code = "forbidden"
    http_status = 403

    def __init__(self) -> None:
        super().__init__("the API key is not recognised")


class PayloadTooLarge(EngineError):
    code = "payload_too_large"
    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds {limit} bytes")


class UnsupportedMediaType(EngineError):
    code = "unsupported_media_type"
    http_status = 415

    def __init__(self, given: str) -> None:
        super().__init__(f"the body must be application/json, not {given or 'unspecified'}")


class HeadersTooLarge(EngineError):
    code = "headers_too_large"
    http_status = 431

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request headers exceed {limit} bytes")


class RetryLater(EngineError):
    """A refusal the client should retry after `retry_after` seconds (body `retryAfter`, header
    `Retry-After`); `headers` adds any others the response must carry."""

    retriable = True

    def __init__(self, message: str, *, retry_after: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.headers = headers or {}


class IdempotencyConflict(EngineError):
    code = "idempotency_conflict"
    http_status = 409

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different body")


class IdempotencyInProgress(RetryLater):
    code = "idempotency_in_progress"
    http_status = 409

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("a request with this Idempotency-Key is still in flight", retry_after=retry_after)


class TooLateToCancel(EngineError):
    code = "too_late_to_cancel"
    http_status = 409

    def __init__(self, status: str) -> None:
        super().__init__(f"the order is {status}: only a pending, routing or building order can be cancelled")


class RateLimited(RetryLater):
    code = "rate_limited"
    http_status = 429


class QueueFull(RetryLater):
    code = "queue_full"
    http_status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)


def status_codes() -> dict[int, str]:
    """The API's error code for each HTTP status, from the classes above: the first class declared with a
    status names it (409 is idempotency_conflict, 429 rate_limited). What a refusal that Starlette raises
    itself (404 for no route, 405) is called in the envelope."""
    codes: dict[int, str] = {EngineError.http_status: EngineError.code}
    pending = list(EngineError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        codes.setdefault(cls.http_status, cls.code)
        pending.extend(cls.__subclasses__())
    return codes
