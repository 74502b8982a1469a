"""The pure arithmetic of the bench: percentiles, the error code of a refusal, what became of an order, and
the summaries of a run's samples. No I/O here, so tests/unit can check every rule."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

TERMINAL = ("confirmed", "failed")
STRAIGHT_THROUGH = ("pending", "routing", "building", "submitted", "confirmed")
HOPS = {
    "accept": (None, "pending"),  # the POST's due time → ingress's commit
    "relay": ("pending", "orders"),  # ingress's outbox relay → sent to `orders`
    "to router": ("orders", "routing"),  # Kafka, the router's fetch, batch and transition
    "quotes": ("routing", "building"),  # both venues' quotes (the mock's 100-300 ms) and the transition
    "relay ex": ("building", "orders.execute"),  # the router's outbox relay → sent to `orders.execute`
    "to executor": ("orders.execute", "submitted"),  # Kafka, the executor's fetch, batch, slot, transition
    "swap": ("submitted", "confirmed"),  # the venue's swap (the mock's 2-3 s) and the transition
}
"""Where an order's end-to-end time goes: each hop runs from one event's `at` to the next one's."""
PERCENTILES = (50, 95, 99)
SERVICES = ("ingress", "router", "executor", "notifier")  # replicas are `ingress-2`, ...
SHARED = ("kafka", "redis")  # the box's servers: other users' work lands in their CPU too


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks (numpy's default, and
    Excel's PERCENTILE.INC); NaN for no values."""
    if not values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float | int | None]:
    """count, p50/p95/p99 and max of `values` times `scale` (e.g. 1000 for seconds → ms); None when empty,
    so the JSON never carries NaN."""
    out: dict[str, float | int | None] = {"count": len(values)}
    ordered = sorted(values)
    for p in PERCENTILES:
        out[f"p{p}"] = round(percentile(ordered, p) * scale, 3) if ordered else None
    out["max"] = round(ordered[-1] * scale, 3) if ordered else None
    return out


def error_code(body: bytes) -> str:
    """The error code of a refusal body. The engine's envelope is flat (`{"error": "queue_full", ...}`); a
    nested one (`{"error": {"code": ...}}`) is read too, so the bench survives a change of envelope.
    Anything else (nginx's own HTML, not JSON) is `unparsed`."""
    try:
        decoded: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "unparsed"
    if not isinstance(decoded, dict):
        return "unparsed"
    error = decoded.get("error")
    if isinstance(error, dict):
        error = error.get("code")
    return str(error) if isinstance(error, str) and error else "no_code"


def outcome(row: Mapping[str, Any] | None) -> str:
    """What became of one accepted order, from its row in `orders` (None: no row at all):
    `confirmed`, `failed:<error>` (the `error` code, else the failureReason), `open:<status>` (not terminal
    when the bench stopped waiting) or `missing`."""
    if row is None:
        return "missing"
    status = str(row.get("status"))
    if status == "confirmed":
        return "confirmed"
    if status == "failed":
        reason = row.get("error") or row.get("failure_reason") or "unknown"
        return f"failed:{reason}"
    return f"open:{status}"


def outcomes(accepted: Iterable[str], rows: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Outcome counts over EVERY accepted orderId, most frequent first."""
    counts = Counter(outcome(rows.get(order_id)) for order_id in accepted)
    return dict(counts.most_common())


def refusals(results: Iterable[tuple[int, str]]) -> dict[str, int]:
    """Counts of non-2xx answers and transport errors, keyed `<status> <code>` (e.g. `429 queue_full`) or
    `error <name>` (status 0: the request got no HTTP answer: connection refused, client timeout)."""
    counts: Counter[str] = Counter()
    for status, code in results:
        if 200 <= status < 300:
            continue
        counts[f"{status} {code}" if status else f"error {code}"] += 1
    return dict(counts.most_common())


def hops(
    orders: Iterable[tuple[float, Sequence[tuple[str, float]], Mapping[str, float]]],
) -> dict[str, list[float]]:
    """Each hop's durations (s) over the orders that went straight through (pending → confirmed, one event
    per step; a retried order's hops would mix attempts). An order is (POST due time, its events as
    (status, at) in seq order, when it was sent to each topic), times in epoch seconds; a hop whose ends
    are not both known is left out for that order."""
    out: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for due, events, sent in orders:
        if tuple(status for status, _ in events) != STRAIGHT_THROUGH:
            continue
        at = {**dict(events), **sent}
        for hop, (start, end) in HOPS.items():
            begin = due if start is None else at.get(start)
            if begin is not None and end in at:
                out[hop].append(at[end] - begin)
    return out


def bucket_bound(cumulative: Sequence[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the Prometheus bucket that holds quantile `q` (0..1), from (le, cumulative count)
    pairs in ascending le; None for no observations. Only as precise as the buckets."""
    if not cumulative or cumulative[-1][1] == 0:
        return None
    wanted = q * cumulative[-1][1]
    return next(bound for bound, count in cumulative if count >= wanted)


def by_second(offsets: Iterable[float]) -> dict[str, int]:
    """How many of the offsets (s from the start of the load) fell in each whole second, in order, keyed by
    the second as text (the JSON file's keys): when refusals happened (a burst at the start is admission
    warming up, a steady share is capacity)."""
    counts = Counter(int(offset) for offset in offsets)
    return {str(second): n for second, n in sorted(counts.items())}


def share(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def cpu_ms_per_order(processes: Mapping[str, Mapping[str, Any]], orders: int) -> dict[str, float | None]:
    """CPU milliseconds per order over three scopes of a run's process groups: `services`, the four Python
    services (the scope of the seed's ~25 ms, docs/performance.md); `stack`, every process of this run's
    stack (the services, the proxy and this database's Postgres backends: what two versions of the engine
    are compared on); `all`, the shared Kafka and Redis too. None without orders."""
    scopes = {
        "services": [p for name, p in processes.items() if name.partition("-")[0] in SERVICES],
        "stack": [p for name, p in processes.items() if not name.startswith(SHARED)],
        "all": list(processes.values()),
    }
    return {
        scope: round(1000 * sum(p["cpu_s"] for p in members) / orders, 3) if orders else None
        for scope, members in scopes.items()
    }


def status_events(published: int, seqs: Iterable[int], outbox_left: int) -> dict[str, int]:
    """What reached `order.status` against what the orders' rows say was written. Every event has a seq and
    an order's events are seq 1..n, so the rows wrote `sum(seq)` events; `extra` is published less that:
    copies sent again (the outbox's at-least-once send, which readers drop by seq), or, if negative, events
    not on the topic (still in the outbox: `outbox_left`, or lost)."""
    written = sum(seqs)
    return {
        "published": published,
        "written": written,
        "extra": published - written,
        "outbox_left": outbox_left,
    }
