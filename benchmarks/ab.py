"""Alternating runs of one bench scenario from two versions of the engine: `python -m benchmarks.ab A B`.

On this shared host one run is not a figure: the CPU probe swings 1.5-2x within minutes, and the same code
gave e2e p99 4 s and 11 s a quarter of an hour apart. So a change is judged by runs of A and B in turn, pair
by pair, and by how often and by how much B beats A. A and B are git revisions, each checked out into a
temporary worktree that shares this checkout's .venv, or `.` for the working tree as it is; `--env-a` and
`--env-b` set variables for one side only (one revision, two settings: `. . --env-b STAGE_NICE=0`).

Prints each run's figures as it ends, then per figure the B/A ratio of each pair, their median, and in how
many pairs B was better. Figures, never a verdict: docs/performance.md says how to read them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench.report import num
from benchmarks.bench.stats import cpu_ms_per_order

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    digits: int  # as the run line prints it
    higher_is_better: bool = False


FIGURES = (
    Figure("accepted", "accepted/s", 1, higher_is_better=True),
    Figure("http_p50", "HTTP p50 ms", 1),
    Figure("http_p99", "HTTP p99 ms", 1),
    Figure("e2e_p50", "e2e p50 s", 2),
    Figure("e2e_p99", "e2e p99 s", 2),
    Figure("cpu_ms", "CPU ms/order", 2),
    Figure("write_wait_ms", "POST write wait ms", 1),
    Figure("ingress_waited", "ingress waited/ran", 2),
    Figure("relay_ms", "relay p50 ms", 0),
    Figure("to_router_ms", "to router p50 ms", 0),
    Figure("relay_ex_ms", "relay ex p50 ms", 0),
    Figure("to_executor_ms", "to executor p50 ms", 0),
    Figure("extra_events", "extra events", 0),
)
HOP_FIGURES = {
    "relay_ms": "relay",
    "to_router_ms": "to router",
    "relay_ex_ms": "relay ex",
    "to_executor_ms": "to executor",
}


@dataclass(frozen=True)
class Side:
    name: str
    revision: str
    env: dict[str, str]


def figures(report: dict[str, Any], scenario: str) -> dict[str, float | None]:
    """One run's figures, from the bench's JSON: CPU per accepted order over the stack's own processes
    (Kafka and Redis are shared), ingress's mean group-commit wait, how long ingress waited for a core
    per second it ran (the run queue: how contended the cores were for the POST's process), the median of
    the hops between the stages (where a change of the outbox or of a stage's intake shows), and the status
    events published beyond those written (copies sent again)."""
    run = report["scenarios"][scenario]
    accepted = run["accepted"]["count"]
    hops = run["e2e_s"].get("hops", {})
    extra = run.get("status_events", {}).get("extra")  # absent from runs before the bench counted them
    wait = run.get("stage_batches", {}).get("ingress", {}).get("group_commit_wait_seconds", {}).get("mean")
    e2e = run["e2e_s"]["db_all_terminal"]
    ingress = run["processes"].get("ingress", {})
    waited = ingress.get("cpu_wait_s")  # absent from runs before the bench measured it
    return {
        "accepted": run["accepted"]["rate"],
        "http_p50": run["http_ms"].get("p50"),
        "http_p99": run["http_ms"].get("p99"),
        "e2e_p50": e2e.get("p50"),
        "e2e_p99": e2e.get("p99"),
        "cpu_ms": cpu_ms_per_order(run["processes"], accepted)["stack"],
        "write_wait_ms": None if wait is None else round(1000 * wait, 1),
        "ingress_waited": round(waited / ingress["cpu_s"], 2)
        if waited is not None and ingress["cpu_s"]
        else None,
        **{key: _ms(hops.get(hop, {}).get("p50")) for key, hop in HOP_FIGURES.items()},
        "extra_events": extra,
        "probe_before": run["cpu_probe_ms"][0],
        "probe_after": run["cpu_probe_ms"][1],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


@dataclass(frozen=True)
class Comparison:
    figure: Figure
    ratios: list[float]  # B / A, per pair with both figures
    better: int  # pairs where B was better

    @property
    def median(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None


def compare(
    pairs: Sequence[tuple[Mapping[str, float | None], Mapping[str, float | None]]],
) -> list[Comparison]:
    """Per figure: B/A of each pair (pairs where either side lacks it, or A is 0, are left out) and how many
    of those B won."""
    out = []
    for figure in FIGURES:
        ratios, better = [], 0
        for a, b in pairs:
            va, vb = a.get(figure.key), b.get(figure.key)
            if va is None or vb is None or va == 0:
                continue
            ratios.append(vb / va)
            better += (vb > va) if figure.higher_is_better else (vb < va)
        out.append(Comparison(figure, ratios, better))
    return out


@contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """`revision` in a temporary worktree using this checkout's .venv (`.`: this working tree itself)."""
    if revision == ".":
        yield ROOT
        return
    tree = Path(tempfile.mkdtemp(prefix="ab-")) / "tree"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), revision], cwd=ROOT, check=True)
    try:
        (tree / ".venv").symlink_to(ROOT / ".venv")
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(tree.parent, ignore_errors=True)


def run_once(tree: Path, side: Side, args: argparse.Namespace, out: Path) -> dict[str, float | None]:
    command = [
        str(ROOT / ".venv" / "bin" / "python"),
        "-m",
        "benchmarks.bench",
        "--scenario",
        args.scenario,
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
        "--out",
        str(out),
    ]
    log = out.with_suffix(".log")
    with log.open("wb") as sink:
        done = subprocess.run(
            command, cwd=tree, env={**os.environ, **side.env}, stdout=sink, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise SystemExit(f"the bench of {side.name} ({side.revision}) failed: see {log}")
    return figures(orjson.loads(out.read_bytes()), args.scenario)


def print_run(side: Side, pair: int, found: dict[str, float | None]) -> None:
    cells = " ".join(f"{f.label} {num(found.get(f.key), f.digits)}," for f in FIGURES)
    probe = f"probe {num(found['probe_before'], 0)} → {num(found['probe_after'], 0)} ms"
    print(f"{side.name}{pair}  {cells} {probe}", flush=True)


def print_comparison(comparisons: list[Comparison]) -> None:
    print("\nfigure               B/A per pair                  median B/A  B better")
    for c in comparisons:
        ratios = " ".join(f"{r:.2f}" for r in c.ratios) or "-"
        print(f"{c.figure.label:<20} {ratios:<29} {num(c.median, 2):>10}  {c.better} of {len(c.ratios)}")


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env-a/--env-b take NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="revision A (`.`: the working tree)")
    parser.add_argument("b", help="revision B (`.`: the working tree)")
    parser.add_argument("--pairs", type=int, default=3, help="A, B runs in turn (default 3)")
    parser.add_argument("--scenario", default="b", choices=("a", "b"), help="bench scenario (default b)")
    parser.add_argument("--rate", type=float, default=500, help="offered orders/s (default 500)")
    parser.add_argument("--duration", type=float, default=40, help="seconds of load a run (default 40)")
    parser.add_argument("--env-a", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--env-b", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench" / "ab", help="run files")
    args = parser.parse_args(argv)
    sides = (Side("A", args.a, parse_env(args.env_a)), Side("B", args.b, parse_env(args.env_b)))
    args.out.mkdir(parents=True, exist_ok=True)
    described = [" ".join([side.revision, *(f"{k}={v}" for k, v in side.env.items())]) for side in sides]
    print(
        f"A = {described[0]}, B = {described[1]}: {args.pairs} pairs of ({args.scenario}) at {args.rate:g}/s"
        f" for {args.duration:g} s; runs in {args.out}",
        flush=True,
    )
    pairs = []
    with ExitStack() as trees:
        checked = {side.name: trees.enter_context(checkout(side.revision)) for side in sides}
        for pair in range(1, args.pairs + 1):
            found = []
            for side in sides:
                result = run_once(checked[side.name], side, args, args.out / f"{side.name}{pair}.json")
                print_run(side, pair, result)
                found.append(result)
            pairs.append((found[0], found[1]))
    print_comparison(compare(pairs))


if __name__ == "__main__":
    main(sys.argv[1:])
