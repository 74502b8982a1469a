"""How many WebSockets a client may hold. The client is its API key's principal with API_KEYS, else its
address (shared.web.edge.client_address): notifier/handshake.py decides.

At most `WS_MAX_PER_ORDER_IP` (3) concurrent connections per orderId per client, and at most
`WS_MAX_CONNECTIONS` per process. Both are checked at the handshake, before anything is accepted or
subscribed; the count is per process (a client spread over several notifiers could hold 3 on each; the proxy
pins a client to one notifier only if configured to, see docs/architecture.md). Across notifiers, a client
holds at most WS_MAX_PER_IP sockets in all (notifier/iplimit.py, counted in Redis).
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from uuid import UUID


class Refusal(StrEnum):
    PER_ORDER_IP = "per_order_ip"  # per order and client (the name predates principals)
    PROCESS_FULL = "process_full"
    PER_IP = "per_ip"  # across every notifier (notifier/iplimit.py)


class ConnectionLimits:
    """Counts open connections; `acquire` and `release` run on the event loop without awaiting in between,
    so check-and-count is atomic."""

    def __init__(self, *, per_order_ip: int, per_process: int) -> None:
        self._per_order_ip = per_order_ip
        self._per_process = per_process
        self._by_key: Counter[tuple[str, UUID]] = Counter()
        self.open = 0

    def acquire(self, client: str, order_id: UUID) -> Refusal | None:
        if self.open >= self._per_process:
            return Refusal.PROCESS_FULL
        if self._by_key[(client, order_id)] >= self._per_order_ip:
            return Refusal.PER_ORDER_IP
        self._by_key[(client, order_id)] += 1
        self.open += 1
        return None

    def release(self, client: str, order_id: UUID) -> None:
        key = (client, order_id)
        self._by_key[key] -= 1
        if self._by_key[key] <= 0:
            del self._by_key[key]
        self.open -= 1
