"""The bench's arithmetic (benchmarks/bench/stats.py): percentiles, refusal codes, order outcomes."""

from __future__ import annotations

import math
from typing import Any

import pytest

from benchmarks.bench import report
from benchmarks.bench.stats import error_code, outcome, outcomes, percentile, refusals, summary


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order must not matter
    values.reverse()
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_a_tail_of_slow_requests_shows_in_p99_not_in_p50() -> None:
    latencies = [0.010] * 980 + [2.0] * 20  # 2 % of requests took 2 s
    figures = summary(latencies, scale=1000)
    assert figures == {"count": 1000, "p50": 10.0, "p95": 10.0, "p99": 2000.0, "max": 2000.0}
    assert summary([]) == {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}


def test_error_code_reads_the_flat_envelope_the_nested_one_and_survives_html() -> None:
    assert error_code(b'{"error":"queue_full","message":"backlog","retryAfter":2}') == "queue_full"
    assert error_code(b'{"error":{"code":"queue_full","message":"backlog"}}') == "queue_full"
    assert error_code(b"<html>502 Bad Gateway</html>") == "unparsed"
    assert error_code(b'{"detail":"nope"}') == "no_code"


def test_every_accepted_order_gets_an_outcome_by_reason() -> None:
    rows: dict[str, dict[str, Any]] = {
        "o1": {"status": "confirmed", "error": None},
        "o2": {"status": "failed", "error": "timeout", "failure_reason": "timeout"},
        "o3": {"status": "failed", "error": "slippage_exceeded"},
        "o4": {"status": "failed", "error": None, "failure_reason": "venue said no"},
        "o5": {"status": "submitted"},
        "o6": {"status": "failed", "error": "timeout"},
    }
    assert outcome(rows["o2"]) == "failed:timeout"
    assert outcome(None) == "missing"
    counted = outcomes(["o1", "o2", "o3", "o4", "o5", "o6", "o7"], rows)
    assert counted == {
        "failed:timeout": 2,
        "confirmed": 1,
        "failed:slippage_exceeded": 1,
        "failed:venue said no": 1,
        "open:submitted": 1,
        "missing": 1,
    }
    assert sum(counted.values()) == 7  # nothing accepted goes uncounted


def test_refusals_count_non_2xx_by_status_and_code_and_transport_errors_apart() -> None:
    answers = [
        (202, ""),
        (429, "queue_full"),
        (429, "queue_full"),
        (503, "service_unavailable"),
        (0, "client_timeout"),
    ]
    assert refusals(answers) == {"429 queue_full": 2, "503 service_unavailable": 1, "error client_timeout": 1}


def test_a_scenarios_load_line_carries_the_cpu_probe_beside_the_load_average() -> None:
    """CPU figures of two runs compare only beside how fast the machine was: the probe is on the line."""
    line = report.load_avg(
        {"load_before": [1.5, 0, 0], "load_after": [4.25, 0, 0], "cpu_probe_ms": [712.3, 1098.0]}
    )
    assert line == (
        "load avg (1 min) 1.50 before, 4.25 after"
        " · cpu probe 712 → 1098 ms (a fixed Python loop: higher is slower)"
    )
    assert report.load_avg({"load_before": [1.5, 0, 0], "load_after": [4.25, 0, 0]}).endswith("4.25 after")
