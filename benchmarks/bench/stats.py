"""The pure arithmetic of the bench: percentiles, the error code of a refusal, what became of an order, and
the summaries of a run's samples. No I/O here, so tests/unit can check every rule."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

TERMINAL = ("confirmed", "failed")
PERCENTILES = (50, 95, 99)


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


def share(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None
