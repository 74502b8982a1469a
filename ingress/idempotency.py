"""Idempotency-Key (seed §5): the first request with a key claims it atomically (Redis SET NX, TTL
IDEMPOTENCY_TTL_S) together with the orderId it will create and a fingerprint of its canonical body; the
claim is scoped per client (the auth principal, today the client IP).

Later requests with the key: a different fingerprint is a conflict (409); the same fingerprint gets the
first answer again once it is recorded, or 409 in progress while the first request is still running. A
claim whose request failed before its commit is released, so the client can retry with the same key.
Every path fails closed: without Redis no request with a key is accepted (503).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import ServiceUnavailable
from shared.logging import get_logger

logger = get_logger(__name__)

RELEASE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """What a key holds: the order the first request creates, its body's fingerprint and, once the first
    request answered, that answer."""

    order_id: UUID
    fingerprint: str
    status: int | None = None
    body: dict[str, Any] | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {"orderId": str(self.order_id), "fp": self.fingerprint, "status": self.status, "body": self.body}
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Claim:
        data = orjson.loads(raw)
        return cls(UUID(data["orderId"]), data["fp"], data.get("status"), data.get("body"))


class IdempotencyStore:
    def __init__(self, redis: Redis, *, key_prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}idem:"
        self._ttl_s = ttl_s
        self._release = redis.register_script(RELEASE_IF_OURS)

    def redis_key(self, scope: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:40]
        return f"{self._prefix}{scope}:{digest}"

    async def claim(self, scope: str, key: str, claim: Claim) -> Claim | None:
        """Claim `key` for `claim`; None if it is ours now, else the claim that holds it."""
        name = self.redis_key(scope, key)
        try:
            if await self._redis.set(name, claim.encode(), nx=True, ex=self._ttl_s):
                return None
            existing = await self._redis.get(name)
        except (RedisError, OSError, TimeoutError) as exc:
            raise ServiceUnavailable("idempotency keys cannot be checked right now") from exc
        if existing is None:  # expired between SET and GET: try once more
            return await self.claim(scope, key, claim)
        return Claim.decode(existing)

    async def record(self, scope: str, key: str, claim: Claim) -> None:
        """Store the first answer under the key (keeping its TTL). The order is already committed, so a
        failure here is only logged: a replay then finds the order in Postgres (see service.place_order)."""
        try:
            await self._redis.set(self.redis_key(scope, key), claim.encode(), xx=True, keepttl=True)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("idempotency.record_failed", error=repr(exc))

    async def release(self, scope: str, key: str, claim: Claim) -> None:
        """Give the key back after a request that created nothing, if it is still ours."""
        # If Redis fails here the key expires with its TTL; until then retries see "in progress".
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._release(keys=[self.redis_key(scope, key)], args=[claim.encode()])
