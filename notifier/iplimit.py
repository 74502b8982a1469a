"""How many WebSockets one client holds across every notifier: at most WS_MAX_PER_IP, counted in Redis. The
client is its API key's principal with API_KEYS, else its IP (notifier/handshake.py); a principal's name
never reads as an address, so the two never share a count.

A connection holds a lease: a member of the client's sorted set, scored with its expiry. One Lua script drops
expired leases, counts the rest and adds the new one if there is room, atomically, on Redis's clock (so
notifiers agree whatever their own clocks). Each notifier renews its leases every LEASE_RENEW_S and removes
one when its socket closes; a notifier that dies leaves leases that expire within LEASE_TTL_S.

Redis being unreachable fails open, as the ingress's rate limit does: the per-process limits still hold
(notifier/limits.py), and a live stream matters more than this count.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from redis.asyncio import Redis

from shared.runtime.logging import get_logger
from shared.runtime.tasks import cancel_and_wait
from shared.store.redis import FAILED as REDIS_FAILED

logger = get_logger(__name__)

LEASE_TTL_S = 30
LEASE_RENEW_S = 10

TAKE_LEASE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

RENEW_LEASES = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""


class IpLeases:
    def __init__(self, redis: Redis, *, limit: int, key_prefix: str) -> None:
        self._redis = redis
        self._limit = limit
        self._prefix = key_prefix
        self._take = redis.register_script(TAKE_LEASE)
        self._renew = redis.register_script(RENEW_LEASES)
        self._held: defaultdict[str, set[str]] = defaultdict(set)  # client -> this process's leases
        self._task: asyncio.Task[None] | None = None

    def _key(self, client: str) -> str:
        return f"{self._prefix}ws:client:{client}"

    async def acquire(self, client: str) -> str | None:
        """A lease for one more socket of `client`, or None when it holds WS_MAX_PER_IP already. Fails
        open."""
        lease = uuid.uuid4().hex
        try:
            granted = await self._take(
                keys=[self._key(client)], args=[self._limit, LEASE_TTL_S * 1000, lease]
            )
        except REDIS_FAILED as exc:
            logger.warning("ws.ip_limit_unavailable", error=repr(exc))
            return ""  # no lease to renew or release: the socket is let through uncounted
        if not granted:
            return None
        self._held[client].add(lease)
        return lease

    async def release(self, client: str, lease: str) -> None:
        if not lease:
            return
        held = self._held.get(client)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._held[client]
        try:
            await self._redis.zrem(self._key(client), lease)
        except REDIS_FAILED as exc:  # it expires within LEASE_TTL_S
            logger.warning("ws.ip_lease_release_failed", error=repr(exc))

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever(), name="ws-ip-leases")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            for client, leases in list(self._held.items()):
                try:
                    await self._renew(keys=[self._key(client)], args=[LEASE_TTL_S * 1000, *leases])
                except REDIS_FAILED as exc:
                    logger.warning("ws.ip_lease_renew_failed", error=repr(exc))
                    break
