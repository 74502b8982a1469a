"""The limiter's behaviour when Redis cannot be reached: open (the default) or closed, as configured."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from ingress.ratelimit import RateLimiter
from shared.domain.errors import ServiceUnavailable
from tests.fixtures.stack import free_port


@pytest.fixture
async def unreachable() -> Redis:
    return Redis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=1, socket_timeout=1)


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
