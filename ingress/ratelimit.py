"""Per-client token bucket in Redis RATE_LIMIT tokens a minute, burst = RATE_LIMIT.

One Lua script reads the bucket, refills it for the time elapsed (Redis's own clock, so ingress processes
with skewed clocks agree), takes a token if there is one and writes it back, atomically: any number of
ingress processes share one limit per client. A bucket untouched for a full refill expires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.domain.errors import RateLimited, ServiceUnavailable
from shared.runtime.logging import get_logger
from shared.store.redis import FAILED as REDIS_FAILED

logger = get_logger(__name__)

POLICY = "per-ip"
WINDOW_S = 60

TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * per_ms)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
local full_ms = math.ceil((capacity - tokens) / per_ms)
return {allowed, math.floor(tokens), wait_ms, full_ms}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: int
    reset_s: int
    limit: int

    def headers(self) -> dict[str, str]:
        """IETF draft-ietf-httpapi-ratelimit-headers: the policy (quota q per window w seconds) and what is
        left of it (r) with the seconds until the bucket is full again (t)."""
        return {
            "RateLimit-Policy": f'"{POLICY}";q={self.limit};w={WINDOW_S}',
            "RateLimit": f'"{POLICY}";r={self.remaining};t={self.reset_s}',
        }

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as ASGI header pairs, to append to a response without a header-map round trip."""
        return [(name.lower().encode(), value.encode()) for name, value in self.headers().items()]


class RateLimiter:
    def __init__(self, redis: Redis, *, limit_per_minute: int, key_prefix: str, fail_open: bool) -> None:
        self._redis = redis
        self._limit = limit_per_minute
        self._prefix = f"{key_prefix}rate:"
        self.fail_open = fail_open
        self._script = redis.register_script(TOKEN_BUCKET)

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    def bucket_key(self, client: str) -> str:
        return f"{self._prefix}{client}"

    async def take(self, client: str) -> Decision | None:
        """Take one token for `client`; raise RateLimited if there is none. None when disabled, or when
        Redis is unreachable and the limiter fails open."""
        if not self.enabled:
            return None
        try:
            allowed, remaining, wait_ms, full_ms = await self._script(
                keys=[self.bucket_key(client)], args=[self._limit, self._limit / (WINDOW_S * 1000)]
            )
        except REDIS_FAILED as exc:
            if self.fail_open:
                logger.warning("ratelimit.redis_unavailable_fail_open", error=repr(exc))
                return None
            raise ServiceUnavailable("the rate limiter is unavailable") from exc
        decision = Decision(
            allowed=bool(allowed),
            remaining=int(remaining),
            retry_after_s=math.ceil(int(wait_ms) / 1000),
            reset_s=math.ceil(int(full_ms) / 1000),
            limit=self._limit,
        )
        if not decision.allowed:
            raise RateLimited(
                f"more than {self._limit} requests a minute from this client",
                retry_after=decision.retry_after_s,
                headers=decision.headers(),
            )
        return decision
