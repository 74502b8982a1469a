"""What the Redis-backed limits do when Redis cannot be reached: the ingress's rate limit fails open (the
default) or closed, as configured; the notifier's per-IP WebSocket count always fails open."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from ingress.ratelimit import RateLimiter
from notifier.iplimit import IpLeases
from shared.domain.errors import ServiceUnavailable
from shared.store.redis import open_redis
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
