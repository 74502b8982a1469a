"""The bench's arithmetic (benchmarks/bench/stats.py): percentiles, refusal codes, order outcomes."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from benchmarks.bench import report
from benchmarks.bench.stats import (
    bucket_bound,
    by_second,
    cpu_ms_per_order,
    error_code,
    hops,
    outcome,
    outcomes,
    percentile,
    refusals,
    status_events,
    summary,
)


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


def test_hops_split_an_orders_time_by_step_and_skip_orders_that_did_not_go_straight_through() -> None:
    events = [("pending", 100.01), ("routing", 100.11), ("building", 100.41), ("submitted", 100.5)]
    straight = (100.0, [*events, ("confirmed", 103.0)], {"orders": 100.03, "orders.execute": 100.45})
    not_read: tuple[float, list[tuple[str, float]], dict[str, float]] = (
        100.0,
        [*events, ("confirmed", 103.5)],
        {},
    )  # its Kafka records were not found
    retried = (
        100.0,
        [
            ("pending", 100.01),
            ("routing", 100.1),
            ("pending", 101.0),
            ("routing", 101.1),
            ("building", 101.3),
            ("submitted", 101.4),
            ("confirmed", 104.0),
        ],
        {"orders": 100.03, "orders.execute": 101.35},
    )
    failed = (100.0, [("pending", 100.01), ("routing", 100.1), ("failed", 100.3)], {"orders": 100.03})
    durations = hops([straight, not_read, retried, failed])
    assert {hop: [round(v, 3) for v in values] for hop, values in durations.items()} == {
        "accept": [0.01, 0.01],
        "relay": [0.02],
        "to router": [0.08],
        "quotes": [0.3, 0.3],
        "relay ex": [0.04],
        "to executor": [0.05],
        "swap": [2.5, 3.0],
    }


def test_bucket_bound_is_the_upper_bound_of_the_bucket_holding_the_quantile() -> None:
    cumulative = [(0.1, 50.0), (0.5, 98.0), (1.0, 99.0), (float("inf"), 100.0)]
    assert bucket_bound(cumulative, 0.5) == 0.1
    assert bucket_bound(cumulative, 0.51) == 0.5
    assert bucket_bound(cumulative, 0.99) == 1.0
    assert bucket_bound(cumulative, 1.0) == float("inf")
    assert bucket_bound([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_refusals_are_counted_per_second_of_the_load_in_order_and_fit_the_json_file() -> None:
    counted = by_second([3.9, 0.2, 0.7, 12.0, 3.1])
    assert counted == {"0": 2, "3": 2, "12": 1}
    assert list(by_second([15.5, 0.1, 2.0])) == ["0", "2", "15"]  # by second, not as text
    assert by_second([]) == {}
    assert orjson.loads(orjson.dumps(counted, option=orjson.OPT_INDENT_2)) == counted  # as the bench writes


def test_cpu_per_order_has_the_services_replicas_included_the_stack_and_everything() -> None:
    processes = {
        "ingress": {"cpu_s": 1.0},
        "ingress-2": {"cpu_s": 1.0},
        "router": {"cpu_s": 2.0},
        "executor": {"cpu_s": 2.0},
        "notifier": {"cpu_s": 0.5},
        "nginx (proxy)": {"cpu_s": 0.5},
        "postgres (this db's backends)": {"cpu_s": 3.0},
        "kafka (shared)": {"cpu_s": 4.0},
        "redis (shared)": {"cpu_s": 1.0},
    }
    assert cpu_ms_per_order(processes, 1000) == {"services": 6.5, "stack": 10.0, "all": 15.0}
    assert cpu_ms_per_order(processes, 0) == {"services": None, "stack": None, "all": None}


def test_events_written_are_the_sum_of_the_orders_seqs_and_extra_is_what_the_topic_has_beyond() -> None:
    # three orders: one confirmed straight through (5 events), one retried once (8), one still pending (1)
    assert status_events(16, [5, 8, 1], 0) == {"published": 16, "written": 14, "extra": 2, "outbox_left": 0}
    assert status_events(13, [5, 8, 1], 1)["extra"] == -1  # one event not on the topic yet
