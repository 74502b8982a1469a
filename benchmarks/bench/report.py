"""The bench's readable output: a block per scenario and a summary table, from the same dicts that go
into the JSON file."""

from __future__ import annotations

import sys
from typing import Any


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pcts(summary: dict[str, Any], digits: int = 1) -> str:
    p50, p95, p99, top = (num(summary.get(k), digits) for k in ("p50", "p95", "p99", "max"))
    return f"p50 {p50}  p95 {p95}  p99 {p99}  max {top}  (n={summary['count']:,})"


def counts(mapping: dict[str, int]) -> str:
    return " · ".join(f"{k} {v:,}" for k, v in mapping.items()) or "none"


def load_avg(report: dict[str, Any]) -> str:
    before, after = report.get("load_before", [0, 0, 0]), report.get("load_after", [0, 0, 0])
    line = f"load avg (1 min) {before[0]:.2f} before, {after[0]:.2f} after"
    if "cpu_probe_ms" in report:
        probe_before, probe_after = report["cpu_probe_ms"]
        line += (
            f" · cpu probe {probe_before:.0f} → {probe_after:.0f} ms (a fixed Python loop: higher is slower)"
        )
    return line


def processes(report: dict[str, Any]) -> None:
    out(f"  {'process':<30} {'CPU s':>8} {'waited s':>9} {'peak RSS MiB':>13} {'procs':>6}")
    for name, figures in report.get("processes", {}).items():
        waited = figures.get("cpu_wait_s")  # absent from runs before it was measured
        out(
            f"  {name:<30} {figures['cpu_s']:>8.2f} {'' if waited is None else f'{waited:.2f}':>9}"
            f" {figures['peak_rss_mib']:>13.1f} {figures['procs']:>6}"
        )


def print_load(report: dict[str, Any]) -> None:
    offered, accepted = report["offered"], report["accepted"]
    e2e = report["e2e_s"]
    settings = " ".join(f"{k}={v}" for k, v in report["settings"].items())
    out(f"({report['scenario']}) {report['title']}   [{settings}]")
    out(f"  {load_avg(report)}")
    out(
        f"  offered      {offered['count']:,} over {offered['duration_s']} s = {offered['rate']:,.1f}/s; "
        f"accepted {accepted['count']:,} = {accepted['rate']:,.1f}/s"
    )
    with_ra = (
        f" ({report['refusals_429_with_retry_after']:,} of {report['refusals_429']:,} 429s with Retry-After)"
    )
    out(f"  refused      {counts(report['refusals'])}{with_ra if report['refusals_429'] else ''}")
    if report.get("refusals_429_by_second"):
        seconds = " ".join(f"{second}s:{n}" for second, n in report["refusals_429_by_second"].items())
        out(f"  429s when    {seconds}   (second of the load: count)")
    if report.get("admission_refusals"):
        why = " ".join(f"{reason}:{n:,.0f}" for reason, n in sorted(report["admission_refusals"].items()))
        out(f"  429s why     {why}   (admission_refusals_total of the first ingress)")
    out(f"  HTTP ms      {pcts(report['http_ms'])}; unanswered {report['unanswered']:,}")
    out(f"  e2e s, DB    {pcts(e2e['db_all_terminal'], 2)}   every accepted order that finished")
    out(f"  e2e s, conf  {pcts(e2e['db_confirmed'], 2)}   confirmed only")
    ws_missing = f"; no terminal: {counts(e2e['ws_without_terminal'])}" if e2e["ws_without_terminal"] else ""
    out(f"  e2e s, WS    {pcts(e2e['ws_sample'], 2)}   sampled clients{ws_missing}")
    for hop, figures in e2e.get("hops", {}).items():
        out(f"    {hop:<12}{pcts(figures, 3)}")
    drain = report["drain"]
    out(
        f"  outcomes     {counts(report['outcomes'])}  → confirmed {num(report['confirmed_pct'], 2)} %"
        f"  (drain {drain['waited_s']} s of ≤{drain['limit_s']:.0f},"
        f" {drain['still_open']:,} orders still open)"
    )
    if report["orders_in_db_not_acknowledged"]:
        unacked = report["orders_in_db_not_acknowledged"]
        out(f"  orders created whose POST got no 2xx (client timeout): {unacked:,}")
    lag = " · ".join(f"{group} {num(v['total'], 0)}" for group, v in report["max_lag"].items()) or "-"
    gauge = " · ".join(f"{s} {num(v['total'], 0)}" for s, v in report["max_lag_engine_gauge"].items()) or "-"
    out(
        f"  throughput   {report['confirmed_per_s']:,.1f} confirmed/s end to end;"
        f"  peak swaps in flight {num(report['peak_swaps_in_flight'], 0)}"
    )
    out(f"  max lag      {lag} (broker: end - committed offsets);  engine gauge {gauge}")
    for stage, figures in report.get("stage_batches", {}).items():
        parts = []
        for name, label in (
            ("stage_receive_delay_seconds", "produced → agent s"),
            ("stage_batch_messages", "batch size"),
            ("stage_batch_seconds", "batch s"),
            ("outbox_round_seconds", "outbox round s"),
            ("group_commit_wait_seconds", "write wait s"),
            ("group_commit_flush_seconds", "flush s"),
            ("group_commit_batch_items", "flush size"),
        ):
            h = figures.get(name) or {}
            if not h.get("count"):
                continue
            mean, p50, p99 = (num(h.get(k), 3) for k in ("mean", "p50_le", "p99_le"))
            parts.append(f"{label} mean {mean} p50≤{p50} p99≤{p99}")
        out(f"  {stage:<12} " + " · ".join(parts))
    events = report.get("status_events")  # absent from runs before the bench counted them
    if events:
        out(
            f"  order.status {events['published']:,} events on the topic for {events['written']:,} written"
            f" (extra {events['extra']:+,}: sent again, or if negative missing;"
            f" outbox rows left {events['outbox_left']:,})"
        )
    gen = report["generator"]
    out(f"  generator    send lag ms {pcts(gen['send_lag_ms'])}; CPU {gen['cpu_s']} s")
    processes(report)
    per_order = report.get("cpu_ms_per_order")
    if per_order:
        out(
            f"  CPU ms per accepted order: {num(per_order['services'], 2)} the four services,"
            f" {num(per_order['stack'], 2)} with the proxy and Postgres, {num(per_order['all'], 2)} with"
            " Kafka and Redis"
        )
    out()


def print_fanout(report: dict[str, Any]) -> None:
    d, rss = report["delivery_ms"], report["notifier_rss_mib"]
    clients = report["clients"]
    out(f"(d) {report['title']}   [{report['client_processes']} client processes, via {report['path']}]")
    out(f"  {load_avg(report)}")
    out(
        f"  connected    {report['connected']:,}/{clients:,} in {report['connect_s']} s; streams complete "
        f"(seq 1..5 once, close 1000) {report['complete_streams']:,}; ended `failed` "
        f"{report['failed_streams']:,}; unfinished {report['unfinished_streams']:,}; "
        f"reconnects {report['reconnects']:,}"
    )
    out(f"  delivery ms  {pcts(d)}   event `at` → client received, {report['streaming_s']} s of streaming")
    out(
        f"  notifier RSS MiB: idle {rss['idle']}, {report['connected']:,} connected {rss['connected']}, "
        f"peak {rss['peak']} ({rss['per_client_kib']} KiB/client)"
    )
    processes(report)
    out()


def print_selfcheck(report: dict[str, Any]) -> None:
    out(
        "(gen) generator self-check against a trivial nginx endpoint: "
        f"offered {report['offered_rate']:,.0f}/s, "
        f"achieved {report['achieved_rate']:,.0f}/s, HTTP ms {pcts(report['http_ms'])}"
    )
    ratio = report.get("ratio_to_engine")
    if ratio is not None:
        verdict = "ok" if ratio >= 2 else "TOO LOW: the generator may be the ceiling"
        best = report["engine_best_rate"]
        out(f"  = {ratio:.1f}x the best rate the engine accepted ({best:,.1f}/s): {verdict}")
    out(f"  {load_avg(report)}")
    out()


def print_summary(scenarios: dict[str, dict[str, Any]]) -> None:
    head = (
        f"{'':4}{'offered/s':>10}{'accepted/s':>11}{'not 2xx':>9}{'HTTP p99 ms':>12}"
        f"{'e2e p50 s':>10}{'e2e p99 s':>10}{'confirmed':>10}{'timeout':>9}{'open':>6}"
        f"{'max lag':>9}{'in flight':>10}{'load':>6}"
    )
    out("summary (e2e: POST due → terminal row, every accepted order; confirmed/timeout/open: of accepted)")
    out(head)
    for key, r in scenarios.items():
        if key == "d" or "offered" not in r:
            continue
        refused = sum(v for k, v in r["refusals"].items())
        timeouts = sum(v for k, v in r["outcomes"].items() if k == "failed:timeout")
        still_open = sum(v for k, v in r["outcomes"].items() if k.startswith("open:") or k == "missing")
        lag = max((v["total"] for v in r["max_lag"].values()), default=0)
        e2e = r["e2e_s"]["db_all_terminal"]
        out(
            f"({key}) {r['offered']['rate']:>9,.1f}{r['accepted']['rate']:>11,.1f}{refused:>9,}"
            f"{num(r['http_ms']['p99']):>12}{num(e2e['p50'], 2):>10}{num(e2e['p99'], 2):>10}"
            f"{num(r['confirmed_pct'], 1) + '%':>10}{timeouts:>9,}{still_open:>6,}"
            f"{lag:>9,.0f}{r['peak_swaps_in_flight']:>10,.0f}{r['load_after'][0]:>6.2f}"
        )
    if "d" in scenarios:
        d = scenarios["d"]
        out(
            f"(d) {d['connected']:,}/{d['clients']:,} WebSockets,"
            f" delivery p50 {num(d['delivery_ms']['p50'])} ms p99 {num(d['delivery_ms']['p99'])} ms,"
            f" notifier peak RSS {d['notifier_rss_mib']['peak']} MiB"
        )
