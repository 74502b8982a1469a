"""Admission arithmetic: how long a new order would wait for each stage, and which stage counts."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from ingress.admission import MAX_RETRY_AFTER_S, Admission, Sample, Stage
from shared.domain.errors import QueueFull, ServiceUnavailable
from shared.runtime.config import Settings

EXECUTOR = Stage("executor", slots=10, service_s=2.5, measured_rate=0.0)  # 4 swaps a second
ROUTER = Stage("router", slots=100, service_s=0.2, measured_rate=0.0)  # 500 quotes a second


def sample(*, routing: int = 0, open_: int = 0, router: Stage = ROUTER, executor: Stage = EXECUTOR) -> Sample:
    return Sample(
        at=0.0,
        routing=routing,
        open=open_,
        router=router,
        executor=executor,
        oldest_waiting_s=0.0,
        outbox_lag_s=0.0,
    )


def test_an_order_that_finds_a_free_slot_waits_for_nothing() -> None:
    assert EXECUTOR.wait_s(10) == 0.0


def test_an_order_behind_a_full_stage_waits_for_the_queue_ahead_to_drain() -> None:
    assert EXECUTOR.wait_s(10 + 40) == pytest.approx(40 / 4)


def test_a_stage_that_finishes_fewer_than_its_slots_promise_is_judged_by_what_it_finishes() -> None:
    cpu_bound = Stage("executor", slots=10, service_s=2.5, measured_rate=2.0)
    assert cpu_bound.wait_s(50) == pytest.approx(40 / 2)
    faster = Stage("executor", slots=10, service_s=2.5, measured_rate=9.0)  # never above what slots allow
    assert faster.wait_s(50) == pytest.approx(40 / 4)


def test_the_slowest_stage_dominates_the_expected_wait() -> None:
    # 200 orders open, 50 of them still before routing: the router has room, the executor does not.
    assert sample(routing=50, open_=200).expected_wait_s(0) == pytest.approx((200 - 10) / 4)
    # The same backlog with the executor's slots raised: the router is now the stage that makes orders wait.
    wide = Stage("executor", slots=5000, service_s=2.5, measured_rate=0.0)
    slow_router = Stage("router", slots=10, service_s=0.5, measured_rate=0.0)
    assert sample(routing=50, open_=200, router=slow_router, executor=wide).expected_wait_s(
        0
    ) == pytest.approx((50 - 10) / 20)


def test_orders_admitted_since_the_sample_count_as_waiting() -> None:
    assert sample(open_=10).expected_wait_s(0) == 0.0
    assert sample(open_=10).expected_wait_s(8) == pytest.approx(8 / 4)


def test_an_ingress_with_its_limit_of_posts_in_progress_refuses_the_next_at_once() -> None:
    admission = Admission(Settings(admission_max_in_flight=2), pool=None)
    with admission.in_progress(), admission.in_progress():
        with pytest.raises(QueueFull) as refused, admission.in_progress():
            pass
        assert refused.value.retry_after == 1
    with admission.in_progress():  # the two finished: room again
        pass


def test_a_stage_whose_measured_rate_has_decayed_to_nothing_is_judged_by_its_slots() -> None:
    """An idle stage's average of finished jobs decays towards 0 (1e-26 was seen): as a drain rate it made
    the expected wait 1e26 s, and the Retry-After overflowed into a 500."""
    decayed = Stage("executor", slots=10, service_s=2.5, measured_rate=1e-26)
    assert decayed.wait_s(50) == pytest.approx(40 / 4)


def test_a_refusal_retry_after_is_bounded() -> None:
    admission = Admission(Settings(admission_max_wait_ms=1000), pool=None)
    stuck = Stage("executor", slots=1, service_s=10_000.0, measured_rate=0.0)
    admission._sample = replace(sample(open_=1_000_000, executor=stuck), at=time.monotonic())
    with pytest.raises(QueueFull) as refused:
        admission.precheck()
    assert refused.value.retry_after == MAX_RETRY_AFTER_S


@pytest.mark.parametrize(("kafka_answers", "refusal"), [(False, ServiceUnavailable), (True, QueueFull)])
def test_publishing_behind_is_503_if_kafka_is_away_and_429_if_the_engine_is_only_behind(
    kafka_answers: bool, refusal: type[Exception]
) -> None:
    """Orders whose messages are not reaching Kafka would not move: refused. Why decides the answer: a
    broker that does not answer is an outage (503); one that answers while the outbox falls behind is a
    saturated engine (the senders are short of CPU), which is overload: 429 with the time to catch up."""
    admission = Admission(Settings(outbox_relay_grace_ms=500, dependency_timeout_ms=5000), pool=None)
    behind = replace(sample(), at=time.monotonic(), outbox_lag_s=9.0, kafka_answers=kafka_answers)
    admission._sample = behind
    with pytest.raises(refusal) as refused:
        admission.precheck()
    if kafka_answers:
        assert isinstance(refused.value, QueueFull) and refused.value.retry_after == 4  # ceil(9 - 5.5)


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("admission_refusals_total", {"reason": reason}) or 0.0


@pytest.mark.parametrize(
    ("reason", "expected_wait_s", "oldest_waiting_s", "outbox_lag_s"),
    [
        ("expected_wait", 20.0, 12.0, 0.0),
        ("oldest_waiting", 0.0, 12.0, 0.0),
        ("publishing", 0.0, 0.0, 9.0),
    ],
)
def test_each_refusal_is_counted_under_why_it_was_made(
    reason: str, expected_wait_s: float, oldest_waiting_s: float, outbox_lag_s: float
) -> None:
    """An operator who sees 429s asks which limit said no: the counter says, one refusal at a time."""
    admission = Admission(
        Settings(admission_max_wait_ms=10_000, outbox_relay_grace_ms=500, dependency_timeout_ms=5000),
        pool=None,
    )
    backlog = round(expected_wait_s * 4)  # the executor drains 4 a second past its 10 slots
    admission._sample = replace(
        sample(open_=10 + backlog),
        at=time.monotonic(),
        oldest_waiting_s=oldest_waiting_s,
        outbox_lag_s=outbox_lag_s,
    )
    before = {r: refusals(r) for r in ("expected_wait", "oldest_waiting", "publishing", "in_flight")}
    with pytest.raises(QueueFull):
        admission.precheck()
    after = {r: refusals(r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {r: float(r == reason) for r in before}


def test_a_refusal_for_posts_in_progress_is_counted_as_in_flight() -> None:
    admission = Admission(Settings(admission_max_in_flight=1), pool=None)
    before = refusals("in_flight")
    with admission.in_progress(), pytest.raises(QueueFull), admission.in_progress():
        pass
    assert refusals("in_flight") - before == 1.0


def behind_by(lag_s: float, *, draw: float, shed_ms: int = 2000) -> Admission:
    """An admission whose sample has publishing `lag_s` behind (shedding from `shed_ms`, all refused past
    5.5 s), and whose draws for shedding all come out `draw`."""
    settings = Settings(
        admission_shed_publish_lag_ms=shed_ms, outbox_relay_grace_ms=500, dependency_timeout_ms=5000
    )
    admission = Admission(settings, pool=None)
    admission._sample = replace(sample(), at=time.monotonic(), outbox_lag_s=lag_s)
    admission._draw = lambda: draw
    return admission


@pytest.mark.parametrize(
    ("lag_s", "draw", "refused"),
    [
        (1.9, 0.0, False),  # under the shedding lag: nobody is refused, whatever the draw
        (3.75, 0.49, True),  # halfway from 2 to 5.5 s: half the POSTs (the draws under 0.5)
        (3.75, 0.51, False),
        (5.4, 0.95, True),  # near the limit nearly all
    ],
)
def test_publishing_behind_sheds_a_share_of_posts_that_grows_with_the_lag(
    lag_s: float, draw: float, refused: bool
) -> None:
    admission = behind_by(lag_s, draw=draw)
    if not refused:
        admission.precheck()
        return
    before = refusals("publishing")
    with pytest.raises(QueueFull) as refusal:
        admission.precheck()
    assert refusal.value.retry_after == math.ceil(lag_s - 2.0)
    assert refusals("publishing") - before == 1.0


def test_the_admission_of_an_order_past_its_first_question_is_not_shed_again() -> None:
    """A POST is asked once whether it is shed (`precheck`); `check`, which counts it, does not draw again,
    or a shed share of s would refuse 1 - (1 - s)^2 of the POSTs."""
    admission = behind_by(3.75, draw=0.0)
    with pytest.raises(QueueFull):
        admission.precheck()
    admission.check()  # the same sample and draw: admitted and counted
    assert admission._admitted_since == 1


def test_publishing_behind_with_kafka_away_sheds_nothing_until_it_is_an_outage() -> None:
    """With the broker not answering the lag is an outage, not load: no 429 on the way; 503 past the limit
    (test_publishing_behind_is_503_if_kafka_is_away_and_429_if_the_engine_is_only_behind)."""
    admission = behind_by(5.0, draw=0.0)
    assert admission._sample is not None
    admission._sample = replace(admission._sample, kafka_answers=False)
    admission.precheck()


def test_a_shedding_lag_at_or_past_the_limit_turns_shedding_off() -> None:
    admission = behind_by(5.4, draw=0.0, shed_ms=60_000)
    admission.precheck()  # 5.4 s behind, under the 5.5 s limit: admitted whatever the draw
