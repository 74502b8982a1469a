"""Redis: how the project opens a client, and which errors mean "Redis did not answer".

Redis holds only what may be lost (rate-limit buckets, WebSocket leases per IP): every caller fails open or
answers 503 on `FAILED`, and none treats it as a bug."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

# redis-py raises its own ConnectionError and TimeoutError, but a socket that dies mid-read can surface as
# a bare OSError, and a deadline around a call as the builtin TimeoutError.
FAILED: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def open_redis(url: str, *, timeout_s: float, max_connections: int | None = None) -> Redis:
    """A client whose every command gives up after `timeout_s`. With `max_connections`, a command waits
    (up to `timeout_s`) for a free connection instead of failing: redis-py's default pool refuses past
    its limit, which a burst of requests reaches."""
    if max_connections is None:
        return Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return Redis.from_pool(pool)
