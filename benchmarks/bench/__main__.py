"""`python -m benchmarks.bench [--quick] [--scenario a,b,c,d,gen] [--rate N] [--duration S] [--out PATH]`

Starts the stack in the benchmark profile once per scenario, offers an open-loop load, and prints a table
per scenario plus a summary; writes every figure to a JSON file (default .local/bench/bench-<time>.json).
docs/performance.md says what each figure means. Figures, never assertions: the exit code is non-zero only
when the bench itself breaks.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from benchmarks.bench import report, stats
from benchmarks.bench.loadgen import LoadPlan, raise_nofile
from benchmarks.bench.procs import cpu_probe_ms
from benchmarks.bench.scenarios import ORDER, Generator, LoadScenario, run_load_scenario
from benchmarks.bench.selfcheck import generator_ceiling
from benchmarks.ws_fanout import fanout
from tests.fixtures.stack import ROOT

ALL = ("a", "b", "c", "d", "gen")


def load_scenarios(args: argparse.Namespace) -> dict[str, LoadScenario]:
    quick = args.quick
    duration_ab = args.duration or (5.0 if quick else 60.0)
    rate_a = args.rate or args.rate_a or 12.0
    rate_b = args.rate or args.rate_b or (50.0 if quick else 500.0)
    rate_c = args.rate or args.rate_c or (100.0 if quick else 300.0)
    orders_c = args.orders or (200 if quick else 10_000)
    swap_c = (5000, 6000) if quick else (30_000, 40_000)
    deadline_c = 60_000 if quick else 180_000
    scaled = {"REPLICAS": str(args.replicas)} if args.replicas > 1 else {}
    return {
        "a": LoadScenario(
            "a",
            f"overload at defaults: {rate_a:g}/s for {duration_ab:g} s",
            {"QUEUE_CONCURRENCY": "10", **scaled},
            rate_a,
            round(rate_a * duration_ab),
            drain_s=45.0,
        ),
        "b": LoadScenario(
            "b",
            f"sustained throughput, high QUEUE_CONCURRENCY: {rate_b:g}/s for {duration_ab:g} s",
            {"QUEUE_CONCURRENCY": "5000", "ROUTER_CONCURRENCY": "1000", **scaled},
            rate_b,
            round(rate_b * duration_ab),
            drain_s=45.0,
        ),
        "c": LoadScenario(
            "c",
            f"{orders_c:,} orders in flight: swaps {swap_c[0] // 1000}-{swap_c[1] // 1000} s,"
            f" offered at {rate_c:g}/s",
            {
                "QUEUE_CONCURRENCY": str(max(12_000, orders_c + 2000)),
                "ROUTER_CONCURRENCY": "1000",
                "MOCK_EXECUTION_LATENCY_MIN_MS": str(swap_c[0]),
                "MOCK_EXECUTION_LATENCY_MAX_MS": str(swap_c[1]),
                "SWAP_WINDOW_MS": str(swap_c[1] + 5000),
                "ORDER_DEADLINE_MS": str(deadline_c),
                # A third of the deadline may go to waiting, as at the defaults (10 s of 30 s).
                "ADMISSION_MAX_WAIT_MS": str(deadline_c // 3),
                **scaled,
            },
            rate_c,
            orders_c,
            drain_s=deadline_c / 1000 + 15,
        ),
    }


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def timed(run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    before, probe_before = os.getloadavg(), cpu_probe_ms()
    started = time.monotonic()
    result = await run()
    result["load_before"] = [round(x, 2) for x in before]
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["cpu_probe_ms"] = [probe_before, cpu_probe_ms()]
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


async def selfcheck(args: argparse.Namespace, generator: Generator, best: float) -> dict[str, Any]:
    rate = args.selfcheck_rate or (3000.0 if args.quick else 4000.0)
    duration = 2.0 if args.quick else 5.0
    plan = LoadPlan(
        host="127.0.0.1",
        port=0,
        body=ORDER,
        count=round(rate * duration),
        rate=rate,
        workers=generator.workers,
        connections=generator.connections,
        timeout=generator.http_timeout,
    )
    result = await generator_ceiling(plan)
    ok = [s for s in result.sent if 200 <= s.status < 300 and s.latency is not None]
    last = max((s.at + (s.latency or 0) for s in ok), default=result.start)
    # answered within the offered window: a generator that falls behind stretches the window
    achieved = len(ok) / max(last - result.start, duration)
    return {
        "offered_rate": rate,
        "duration_s": duration,
        "achieved_rate": round(achieved, 1),
        "answered": len(ok),
        "http_ms": stats.summary([s.latency for s in ok if s.latency is not None], 1000),
        "send_lag_ms": stats.summary([s.lag for s in result.sent if s.lag is not None], 1000),
        "cpu_s": round(result.cpu_s, 2),
        "engine_best_rate": best or None,
        "ratio_to_engine": round(achieved / best, 1) if best else None,
    }


async def main(args: argparse.Namespace) -> int:
    chosen = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    nofile = raise_nofile()
    generator = Generator(workers=args.workers, connections=args.connections)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = Path(args.out) if args.out else ROOT / ".local" / "bench" / f"bench-{stamp}.json"
    meta = {
        "started": stamp,
        "commit": git_commit(),
        "mode": "quick" if args.quick else "full",
        "scenarios": chosen,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_probe_ms": cpu_probe_ms(),
        "python": platform.python_version(),
        "nofile": nofile,
        "generator": {
            "workers": generator.workers,
            "connections_per_worker": generator.connections,
            "http_timeout_s": generator.http_timeout,
            "ws_sample": f"1 in {generator.ws_every}, at most {generator.ws_max} per worker",
            "loop": "open (fixed schedule; latency from each request's due time)",
        },
    }
    one, five, fifteen = os.getloadavg()
    report.out(
        f"order-engine bench ({meta['mode']}) at {meta['commit']}, {stamp}: {os.cpu_count()} cores, "
        f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min), "
        f"cpu probe {meta['cpu_probe_ms']:.0f} ms"
    )
    report.out(
        f"generator: {generator.workers} processes x ≤{generator.connections} keep-alive connections, "
        f"open loop; WebSocket sample 1 in {generator.ws_every}"
    )
    report.out()
    results: dict[str, Any] = {"meta": meta, "scenarios": {}}
    scenarios = load_scenarios(args)
    for key in chosen:
        if key in scenarios:
            scenario = scenarios[key]
            result = await timed(lambda s=scenario: run_load_scenario(s, generator))  # type: ignore[misc]
            report.print_load(result)
        elif key == "d":
            clients = args.clients or (500 if args.quick else 10_000)
            procs = 2 if args.quick else 4
            result = await timed(
                lambda n=clients, p=procs: fanout(n, processes=p, pace=args.ws_pace)  # type: ignore[misc]
            )
            report.print_fanout(result)
        else:
            continue
        results["scenarios"][key] = result
        write(out_path, results)
    if "gen" in chosen:
        best = max(
            (r["accepted"]["rate"] for r in results["scenarios"].values() if "accepted" in r), default=0.0
        )
        results["selfcheck"] = await timed(lambda: selfcheck(args, generator, best))
        report.print_selfcheck(results["selfcheck"])
    report.print_summary(results["scenarios"])
    meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write(out_path, results)
    report.out(f"\nload average at the end {meta['load_average_end']}; figures written to {out_path}")
    return 0


def write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="small versions of every scenario (CI)")
    parser.add_argument("--scenario", default=",".join(ALL), help="comma-separated, from a,b,c,d,gen")
    parser.add_argument("--rate", type=float, help="offered orders/s for every load scenario (a, b, c)")
    parser.add_argument("--rate-a", type=float, help="(a) offered orders/s (default 12: ~3x the defaults)")
    parser.add_argument("--rate-b", type=float, help="(b) offered orders/s (default 500; quick 50)")
    parser.add_argument("--rate-c", type=float, help="(c) orders/s at which the 10,000 are offered (300)")
    parser.add_argument("--duration", type=float, help="seconds of load in (a) and (b) (default 60; quick 5)")
    parser.add_argument("--orders", type=int, help="(c) orders to put in flight (default 10,000; quick 200)")
    parser.add_argument("--clients", type=int, help="(d) WebSocket clients (default 10,000; quick 500)")
    parser.add_argument(
        "--ws-pace", type=int, default=200, help="(d) orders started per second (default 200; 0: all at once)"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="ingress, router and executor processes each (a, b, c)"
    )
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=512, help="most requests in flight per worker")
    parser.add_argument("--selfcheck-rate", type=float, help="offered to the trivial endpoint (4,000/s)")
    parser.add_argument("--out", help="JSON file (default .local/bench/bench-<time>.json)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(uvloop.run(main(parse())))
