"""Per-client token buckets in Redis: each client has two, one for writes and a larger one for reads.

- writes (POST and DELETE on ingress): RATE_LIMIT tokens a minute, burst RATE_LIMIT;
- reads (GET of one order or of the list, `/ready`, and the notifier's WebSocket handshake, itself a GET):
  READ_RATE_LIMIT tokens a minute (by default 20 x RATE_LIMIT), burst the same.

Reads cost less than a POST but are not free (each is a Postgres query, a handshake a subscription), and a
client polling its orders should not use up the tokens its next order needs, hence a bucket of their own.
The notifier takes handshake tokens from the same Redis keys as ingress takes GET tokens: one read budget
per client across every process.

One Lua script reads the bucket, refills it for the time elapsed (Redis's own clock, so processes with
skewed clocks agree), takes a token if there is one and writes it back, atomically: any number of processes
share one limit per client. A bucket untouched for a full refill expires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from shared.domain.errors import RateLimited, ServiceUnavailable
from shared.runtime.config import Settings
from shared.runtime.logging import get_logger
from shared.store.redis import FAILED as REDIS_FAILED

logger = get_logger(__name__)

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


class Bucket(StrEnum):
    """Which of a client's buckets a request takes its token from; the value names its policy in the
    RateLimit headers (`per-ip` kept for writes, the name clients have seen since before API keys)."""

    WRITE = "per-ip"
    READ = "reads"


READ_METHODS = frozenset({"GET", "HEAD"})


def bucket_for(method: str) -> Bucket:
    """Reads (GET, HEAD; a WebSocket handshake is a GET) take from the read bucket, anything else from the
    write bucket."""
    return Bucket.READ if method.upper() in READ_METHODS else Bucket.WRITE


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: int
    reset_s: int
    limit: int
    policy: str = Bucket.WRITE.value

    def headers(self) -> dict[str, str]:
        """IETF draft-ietf-httpapi-ratelimit-headers: the policy (quota q per window w seconds) and what is
        left of it (r) with the seconds until the bucket is full again (t)."""
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={WINDOW_S}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset_s}',
        }

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as ASGI header pairs, to append to a response without a header-map round trip."""
        return [(name.lower().encode(), value.encode()) for name, value in self.headers().items()]


class RateLimiter:
    def __init__(
        self,
        redis: Redis,
        *,
        limit_per_minute: int,
        key_prefix: str,
        fail_open: bool,
        bucket: Bucket = Bucket.WRITE,
    ) -> None:
        self._redis = redis
        self._limit = limit_per_minute
        self.bucket = bucket
        # The write bucket keeps the key it has always had; the read bucket's keys are apart from them.
        self._prefix = f"{key_prefix}rate:" if bucket is Bucket.WRITE else f"{key_prefix}rate:{bucket.value}:"
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
                logger.warning(
                    "ratelimit.redis_unavailable_fail_open", bucket=self.bucket.name, error=repr(exc)
                )
                return None
            raise ServiceUnavailable("the rate limiter is unavailable") from exc
        decision = Decision(
            allowed=bool(allowed),
            remaining=int(remaining),
            retry_after_s=math.ceil(int(wait_ms) / 1000),
            reset_s=math.ceil(int(full_ms) / 1000),
            limit=self._limit,
            policy=self.bucket.value,
        )
        if not decision.allowed:
            what = "requests" if self.bucket is Bucket.WRITE else "reads"
            raise RateLimited(
                f"more than {self._limit} {what} a minute from this client",
                retry_after=decision.retry_after_s,
                headers=decision.headers(),
            )
        return decision


def limiter(bucket: Bucket, redis: Redis, settings: Settings) -> RateLimiter:
    """The limiter of one of a client's buckets: writes (POST, DELETE) RATE_LIMIT a minute, reads (GETs,
    `/ready`, WebSocket handshakes) READ_RATE_LIMIT a minute."""
    per_minute = settings.rate_limit if bucket is Bucket.WRITE else settings.read_rate_limit_per_minute
    return RateLimiter(
        redis,
        limit_per_minute=per_minute,
        key_prefix=settings.redis_key_prefix,
        fail_open=settings.rate_limit_fail_open,
        bucket=bucket,
    )
