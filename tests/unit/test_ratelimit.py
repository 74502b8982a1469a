"""The Redis-backed limits without a Redis server: which of a client's two buckets a request takes from (reads
and writes never share one), and what happens when Redis cannot be reached: the rate limits fail open (the
default) or closed, as configured; the notifier's per-client WebSocket count always fails open."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from notifier.iplimit import IpLeases
from shared.domain.errors import RateLimited, ServiceUnavailable
from shared.runtime.config import Settings
from shared.store.redis import open_redis
from shared.web.ratelimit import Bucket, RateLimiter, bucket_for, limiter
from tests.fixtures.stack import free_port


@pytest.fixture
async def unreachable() -> Redis:
    return open_redis(f"redis://127.0.0.1:{free_port()}", timeout_s=1.0)


async def test_fail_open_admits_without_a_decision(unreachable: Redis) -> None:
    limiter = RateLimiter(unreachable, limit_per_minute=30, key_prefix="t:", fail_open=True)
    assert await limiter.take("198.51.100.1") is None
    await unreachable.aclose()


async def test_fail_closed_refuses_with_503(unreachable: Redis) -> None:
    limiter = RateLimiter(unreachable, limit_per_minute=30, key_prefix="t:", fail_open=False)
    with pytest.raises(ServiceUnavailable):
        await limiter.take("198.51.100.1")
    await unreachable.aclose()


async def test_zero_disables_the_limit(unreachable: Redis) -> None:
    limiter = RateLimiter(unreachable, limit_per_minute=0, key_prefix="t:", fail_open=False)
    assert await limiter.take("198.51.100.1") is None
    await unreachable.aclose()


async def test_ip_leases_let_a_socket_through_uncounted(unreachable: Redis) -> None:
    leases = IpLeases(unreachable, limit=1, key_prefix="t:")
    lease = await leases.acquire("198.51.100.1")
    assert lease == ""  # admitted, and nothing to renew or release
    await leases.release("198.51.100.1", lease)
    assert await leases.acquire("198.51.100.1") == ""  # the limit of one does not count uncounted sockets
    await unreachable.aclose()


# --- which bucket -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "bucket"),
    [
        *[(m, Bucket.READ) for m in ("GET", "get", "HEAD")],
        *[(m, Bucket.WRITE) for m in ("POST", "DELETE", "PUT", "PATCH", "OPTIONS")],
    ],
)
def test_reads_take_from_the_read_bucket_and_everything_else_from_the_write_bucket(
    method: str, bucket: Bucket
) -> None:
    assert bucket_for(method) is bucket


class BucketsInMemory:
    """The token-bucket script's behaviour without its refill (a test lasts far less than a token's refill):
    a bucket starts with `capacity` tokens and each call takes one while any is left."""

    def __init__(self) -> None:
        self.tokens: dict[str, float] = {}

    def register_script(self, _source: str) -> Any:
        async def run(*, keys: list[str], args: list[float]) -> list[int]:
            capacity = int(args[0])
            left = self.tokens.setdefault(keys[0], capacity)
            if left >= 1:
                self.tokens[keys[0]] = left - 1
                return [1, int(left - 1), 0, 2000]
            return [0, 0, 1500, 2000]

        return run


async def test_a_client_that_used_up_its_reads_can_still_place_orders_and_the_other_way_round() -> None:
    """The two buckets are separate Redis keys with their own quotas: READ_RATE_LIMIT for reads, RATE_LIMIT
    for writes (a mutant that gave both the same key, or the same quota, fails here)."""
    redis = BucketsInMemory()
    settings = Settings(_env_file=None, rate_limit=2, read_rate_limit=5, redis_key_prefix="t:")
    reads = limiter(Bucket.READ, redis, settings)  # type: ignore[arg-type]
    writes = limiter(Bucket.WRITE, redis, settings)  # type: ignore[arg-type]
    assert reads.bucket_key("alice") != writes.bucket_key("alice")
    assert writes.bucket_key("alice") == "t:rate:alice"  # where the write bucket has always been

    for _ in range(5):
        assert await reads.take("alice") is not None
    with pytest.raises(RateLimited) as refused:
        await reads.take("alice")
    assert refused.value.headers["RateLimit-Policy"] == '"reads";q=5;w=60'
    assert refused.value.retry_after == 2 and "reads" in refused.value.message
    assert await reads.take("bob") is not None  # another client's reads are its own

    placed = [await writes.take("alice") for _ in range(2)]
    assert [d.headers()["RateLimit-Policy"] for d in placed if d] == ['"per-ip";q=2;w=60'] * 2
    with pytest.raises(RateLimited):
        await writes.take("alice")
    with pytest.raises(RateLimited):
        await reads.take("alice")  # and the writes gave the reads nothing back
