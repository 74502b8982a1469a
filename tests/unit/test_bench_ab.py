"""The alternating bench's arithmetic: one run's figures from the bench's JSON, and B against A per pair."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from benchmarks.ab import compare, figures


def report(
    *,
    accepted: int = 1000,
    rate: float = 500.0,
    wait_s: float | None = 0.02,
    hops: dict[str, dict[str, float]] | None = None,
    status_events: dict[str, int] | None = None,
) -> dict[str, Any]:
    ingress = {} if wait_s is None else {"group_commit_wait_seconds": {"count": 10, "mean": wait_s}}
    run: dict[str, Any] = {
        "accepted": {"count": accepted, "rate": rate},
        "http_ms": {"p50": 20.0, "p99": 100.0},
        "e2e_s": {"db_all_terminal": {"p50": 3.3, "p99": 4.0}, "hops": hops or {}},
        "processes": {
            "ingress": {"cpu_s": 1.0, "cpu_wait_s": 1.6},
            "router": {"cpu_s": 1.5},
            "postgres (this db's backends)": {"cpu_s": 0.5},
            "kafka (shared)": {"cpu_s": 9.0},
            "redis (shared)": {"cpu_s": 9.0},
        },
        "stage_batches": {"ingress": ingress},
        "cpu_probe_ms": [85.0, 90.0],
    }
    if status_events is not None:
        run["status_events"] = status_events
    # as the bench writes it and ab reads it back
    return dict(orjson.loads(orjson.dumps({"meta": {}, "scenarios": {"b": run}})))


def test_a_runs_cpu_per_order_counts_the_stacks_processes_and_not_the_shared_servers() -> None:
    found = figures(report(accepted=1000), "b")
    assert found["cpu_ms"] == pytest.approx(3.0)  # (1.0 + 1.5 + 0.5) s / 1000 orders
    assert found["write_wait_ms"] == 20.0
    assert found["ingress_waited"] == 1.6  # seconds in the run queue per second on a core
    assert (found["http_p99"], found["e2e_p99"], found["probe_before"]) == (100.0, 4.0, 85.0)


def test_a_run_without_accepted_orders_or_an_ingress_histogram_has_no_such_figure() -> None:
    found = figures(report(accepted=0, rate=0.0, wait_s=None), "b")
    assert found["cpu_ms"] is None and found["write_wait_ms"] is None


def test_a_runs_hops_are_their_medians_in_ms_and_its_extra_events_come_from_the_topic() -> None:
    hops = {"relay": {"p50": 0.031, "p99": 0.2}, "relay ex": {"p50": 0.0625}, "swap": {"p50": 2.5}}
    events = {"published": 5012, "written": 5000, "extra": 12, "outbox_left": 0}
    found = figures(report(hops=hops, status_events=events), "b")
    assert (found["relay_ms"], found["relay_ex_ms"]) == (31.0, 62.5)
    assert found["to_router_ms"] is None  # a hop the run did not measure
    assert found["extra_events"] == 12
    assert figures(report(), "b")["extra_events"] is None  # a run from before the bench counted them


def test_b_against_a_is_a_ratio_per_pair_and_better_follows_each_figures_direction() -> None:
    a = {"accepted": 500.0, "http_p99": 100.0, "e2e_p99": 4.0}
    b_wins = {"accepted": 500.0, "http_p99": 50.0, "e2e_p99": 5.0}
    b_loses = {"accepted": 450.0, "http_p99": 200.0, "e2e_p99": 2.0}
    by_figure = {c.figure.key: c for c in compare([(a, b_wins), (a, b_loses), (a, a)])}
    assert by_figure["http_p99"].ratios == [0.5, 2.0, 1.0]
    assert by_figure["http_p99"].median == 1.0 and by_figure["http_p99"].better == 1
    assert by_figure["accepted"].ratios == [1.0, 0.9, 1.0] and by_figure["accepted"].better == 0
    assert by_figure["e2e_p99"].better == 1  # lower is better: only the 2.0 s run
    assert by_figure["cpu_ms"].ratios == [] and by_figure["cpu_ms"].median is None
