"""Who the client is (behind trusted proxies) and how many WebSockets it may hold.

At most `WS_MAX_PER_ORDER_IP` (3) concurrent connections per orderId per client IP, and at most
`WS_MAX_CONNECTIONS` per process. Both are checked at the handshake, before anything is accepted or
subscribed; the count is per process (a client spread over several notifiers could hold 3 on each; the proxy
pins a client to one notifier only if configured to, see docs/architecture.md).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Sequence
from enum import StrEnum
from uuid import UUID

from shared.config import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(settings: Settings) -> list[Network]:
    """The proxies whose X-Forwarded-For we believe. Read through getattr: the setting is shared with ingress
    (issue 3), which may declare it on its own, as a list or a comma-separated string; either works."""
    value: str | Iterable[str] = getattr(settings, "trusted_proxies", None) or ("127.0.0.1/32",)
    cidrs = value.split(",") if isinstance(value, str) else value
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the right-most address of
    X-Forwarded-For that is not itself a trusted proxy (each proxy appends the address it saw, so the entries
    to the right of the first untrusted hop are the only ones we can vouch for)."""
    peer = peer or "unknown"
    address = _address(peer)
    if address is None or not forwarded_for or not any(address in net for net in trusted):
        return peer
    hops = [h for h in (_address(x) for x in forwarded_for.split(",")) if h is not None]
    for hop in reversed(hops):
        if not any(hop in net for net in trusted):
            return str(hop)
    return str(hops[0]) if hops else peer


class Refusal(StrEnum):
    PER_ORDER_IP = "per_order_ip"
    PROCESS_FULL = "process_full"


class ConnectionLimits:
    """Counts open connections; `acquire` and `release` run on the event loop without awaiting in between,
    so check-and-count is atomic."""

    def __init__(self, *, per_order_ip: int, per_process: int) -> None:
        self._per_order_ip = per_order_ip
        self._per_process = per_process
        self._by_key: Counter[tuple[str, UUID]] = Counter()
        self.open = 0

    def acquire(self, ip: str, order_id: UUID) -> Refusal | None:
        if self.open >= self._per_process:
            return Refusal.PROCESS_FULL
        if self._by_key[(ip, order_id)] >= self._per_order_ip:
            return Refusal.PER_ORDER_IP
        self._by_key[(ip, order_id)] += 1
        self.open += 1
        return None

    def release(self, ip: str, order_id: UUID) -> None:
        key = (ip, order_id)
        self._by_key[key] -= 1
        if self._by_key[key] <= 0:
            del self._by_key[key]
        self.open -= 1
