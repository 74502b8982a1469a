"""The offline checker: reads a `History` and counts each invariant's violations, order by order.

- lost (I1): an accepted order that Postgres does not show terminal, or whose client never saw it end;
- double swaps (I2): from the venue's own log of execute calls, not the ledger (whose key would hide a
  second swap): an attempt sent to the venue twice, or any attempt sent after the one that landed (and a
  swap with no call recorded, which would mean the record cannot be trusted);
- gaps (I3): an order whose events on `order.status`, read as they lie on the topic (not sorted), do not
  bring each seq first in seq order (a copy sent again may come later: the topic is at-least-once), or whose
  client's events across reconnections are not exactly 1..n;
- duplicates (I3, I4): a client that saw an event twice; an Idempotency-Key whose answers named two orders;
  an order in Postgres that no client's key was answered with (a retry that made a second order);
- misreported (I4): a failed order the venue swapped; a confirmed order whose tx is not the venue's; a
  client told another ending than Postgres's.

Beside them, what a scenario cost in time: `recovery s` (from the fault to the last accepted order's end)
and `pause s` (`longest_pause`: the longest stretch in which no order ended while orders still arrived).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from tests.chaos.history import TERMINAL, History


@dataclass
class Findings:
    scenario: str
    orders: int  # keys the clients sent
    accepted: int  # keys answered 2xx
    terminal: int  # accepted orders Postgres shows terminal
    recovery_s: float | None  # from the SIGKILL to the last accepted order's end (the load goes on meanwhile)
    pause_s: float | None = None  # the longest time no accepted order ended while orders still arrived
    retried: int = 0  # POSTs the clients sent again (no answer, 5xx or 429)
    reconnects: int = 0  # WebSockets the clients opened again with lastSeq
    restarted: str = ""  # services the supervisor started again
    topic_repeats: int = 0  # events on `order.status` sent again (allowed; consumers drop a seq seen)
    ambiguous: int = 0  # keys told an error although their order was made: a retry replayed it
    unanswered: Counter[str] = field(default_factory=Counter)  # what keys never answered 2xx were told
    slowest: list[str] = field(default_factory=list)  # the accepted orders that took longest, and how
    lost: list[str] = field(default_factory=list)
    double_swaps: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    misreported: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return sum(map(len, (self.lost, self.double_swaps, self.gaps, self.duplicates, self.misreported)))

    def row(self) -> str:
        recovery = f"{self.recovery_s:.1f}" if self.recovery_s is not None else "-"
        pause = f"{self.pause_s:.1f}" if self.pause_s is not None else "-"
        return (
            f"{self.scenario:<26} {self.orders:>6} {self.accepted:>8} {self.terminal:>8} {len(self.lost):>5}"
            f" {len(self.double_swaps):>7} {len(self.gaps):>5} {len(self.duplicates):>5}"
            f" {len(self.misreported):>11} {recovery:>10} {pause:>7} {self.retried:>7} {self.reconnects:>10}"
            f" {self.topic_repeats:>7} {self.ambiguous:>9}  {self.restarted}"
        )

    def details(self, limit: int = 5) -> str:
        parts = []
        if self.unanswered:
            parts.append(f"keys never accepted were told: {dict(self.unanswered.most_common(limit))}")
        for name in ("lost", "double_swaps", "gaps", "duplicates", "misreported"):
            found: list[str] = getattr(self, name)
            if found:
                parts.append(f"{name}: {found[:limit]}{' ...' if len(found) > limit else ''}")
        return "; ".join(parts)


HEADER = (
    f"{'scenario':<26} {'orders':>6} {'accepted':>8} {'terminal':>8} {'lost':>5} {'doubles':>7} {'gaps':>5}"
    f" {'dups':>5} {'misreported':>11} {'recovery s':>10} {'pause s':>7} {'retried':>7} {'reconnects':>10}"
    f" {'resent':>7} {'ambiguous':>9}  restarted"
)


RESULTS: list[Findings] = []  # this session's scenarios, for the table at its end


def check(history: History) -> Findings:
    accepted = {order_id for post in history.posts for order_id in post.order_ids}
    orders = history.orders
    ended = [o for o in (orders.get(i) for i in accepted) if o is not None and o["status"] in TERMINAL]
    recovery_s = None
    if history.fault_at is not None and ended:
        recovery_s = max(0.0, max(o["updated_at"].timestamp() for o in ended) - history.fault_at)
    findings = Findings(
        history.scenario,
        len(history.posts),
        len(accepted),
        len(ended),
        recovery_s,
        pause_s=longest_pause(history),
        retried=sum(1 for post in history.posts for answer in post.answers if _retried(answer)),
        reconnects=sum(follow.connections - 1 for follow in history.follows.values()),
        restarted=",".join(history.restarted),
        ambiguous=sum(post.replayed_after_failure for post in history.posts),
        unanswered=Counter(str(a) for post in history.posts if not post.order_ids for a in post.answers),
    )

    by_time = sorted(ended, key=lambda o: o["updated_at"] - o["created_at"], reverse=True)
    findings.slowest = [
        f"{(o['updated_at'] - o['created_at']).total_seconds():.1f} s "
        + " > ".join(f"{e['status']}{'(' + e['error'] + ')' if e.get('error') else ''}" for e in o["logs"])
        for o in by_time[:3]
    ]
    for order_id in sorted(accepted):
        row = orders.get(order_id)
        follow = history.follows.get(order_id)
        if row is None or row["status"] not in TERMINAL or follow is None or follow.terminal is None:
            state = row["status"] if row is not None else "not in Postgres"
            seen = "no client"
            if follow is not None:
                seen = f"client saw {follow.statuses[-1:]} ({follow.note or 'no error'})"
            findings.lost.append(f"{order_id} {state}, {seen}")

    _double_swaps(history, findings)
    _gaps(history, accepted, findings)
    _duplicates(history, accepted, findings)
    _misreported(history, accepted, findings)
    return findings


def longest_pause(history: History) -> float | None:
    """The longest time, in seconds, in which no accepted order reached its end, counting the gaps that
    opened while orders were still arriving (at or before the last accepted order's `created_at`): there the
    load keeps a steady stream of ends going, so a gap is the pipeline stalled (by a fault, or by waiting
    out a failover). The quiet tail after the load, where the last orders wait out retry delays, is not a
    pause. None when fewer than two accepted orders ended."""
    accepted = {order_id for post in history.posts for order_id in post.order_ids}
    rows = [history.orders[order_id] for order_id in accepted if order_id in history.orders]
    ends = sorted(row["updated_at"] for row in rows if row["status"] in TERMINAL)
    if len(ends) < 2:
        return None
    last_arrival = max(row["created_at"] for row in rows)
    gaps = [(later - end).total_seconds() for end, later in pairwise(ends) if end <= last_arrival]
    return max(gaps, default=None)


def _retried(answer: int | str) -> bool:
    """An answer after which the client sends the POST again: none (a transport error), a 5xx or a 429."""
    return isinstance(answer, str) or answer >= 500 or answer == 429


def _double_swaps(history: History, findings: Findings) -> None:
    sent = Counter(history.executions)
    landed_attempt = {order_id: rows[0]["attempt"] for order_id, rows in history.swaps.items()}
    for order_id, attempt in sorted(landed_attempt.items()):
        if (order_id, attempt) not in sent:  # the record is incomplete: nothing above could be trusted
            findings.double_swaps.append(f"{order_id} swapped in attempt {attempt}, no execute call recorded")
    for (order_id, attempt), times in sorted(sent.items()):
        if times > 1:
            findings.double_swaps.append(f"{order_id} attempt {attempt} sent {times}x")
        elif order_id in landed_attempt and attempt > landed_attempt[order_id]:
            landed = landed_attempt[order_id]
            findings.double_swaps.append(f"{order_id} attempt {attempt} sent after {landed} landed")


def _gaps(history: History, accepted: set[str], findings: Findings) -> None:
    on_topic: dict[str, list[int]] = {}
    for event in history.topic:
        on_topic.setdefault(str(event["orderId"]), []).append(int(event["seq"]))
    for order_id in sorted(accepted):
        row = history.orders.get(order_id)
        if row is None:
            continue
        expected = list(range(1, row["seq"] + 1))
        # At-least-once (docs/events.md): the first copy of each seq arrives in seq order; a copy sent again
        # (its writer's acknowledgement was lost, then the relay or a later writer sent it) may come later.
        read = on_topic.get(order_id, [])
        if list(dict.fromkeys(read)) != expected:
            findings.gaps.append(f"{order_id} topic {read} != 1..{row['seq']}")
        findings.topic_repeats += len(read) - len(set(read))
        follow = history.follows.get(order_id)
        if follow is not None and follow.terminal and list(dict.fromkeys(follow.seqs)) != expected:
            findings.gaps.append(f"{order_id} client {follow.seqs} != 1..{row['seq']}")


def _duplicates(history: History, accepted: set[str], findings: Findings) -> None:
    for follow in history.follows.values():
        repeated = [seq for seq, n in Counter(follow.seqs).items() if n > 1]
        if repeated:
            findings.duplicates.append(f"{follow.order_id} client saw seq {repeated} twice")
    for post in history.posts:
        if len(post.order_ids) > 1:
            findings.duplicates.append(f"key {post.key} named {sorted(post.order_ids)}")
    for order_id in sorted(set(history.orders) - accepted):
        findings.duplicates.append(f"{order_id} in Postgres, named to no client")


def _misreported(history: History, accepted: set[str], findings: Findings) -> None:
    for order_id in sorted(accepted):
        row: dict[str, Any] | None = history.orders.get(order_id)
        if row is None:
            continue
        swaps = history.swaps.get(order_id, [])
        if row["status"] == "failed" and swaps:
            findings.misreported.append(f"{order_id} failed ({row['error']}) but the venue swapped")
        if row["status"] == "confirmed" and [s["tx_hash"] for s in swaps] != [row["tx_hash"]]:
            findings.misreported.append(f"{order_id} confirmed with tx {row['tx_hash']}, venue has {swaps}")
        follow = history.follows.get(order_id)
        if follow is not None and follow.terminal is not None and follow.terminal != row["status"]:
            findings.misreported.append(f"{order_id} client told {follow.terminal}, Postgres {row['status']}")
