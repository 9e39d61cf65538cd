from __future__ import annotations

import pytest

from engine.pacing import Pacer, TokenBucket

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.try_take() == 0.0
    clock.now += 10
    assert [bucket.try_take() for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refills to the burst, not beyond


def test_pacer_holds_the_number_rate_over_time() -> None:
    clock = Clock()
    pacer = Pacer(per_number_rate=80, per_recipient_rate=1000, clock=clock)
    sent = 0
    for _ in range(10_000):  # 10 simulated seconds in 1 ms steps
        while pacer.try_acquire("pn", f"r{sent % 50}") == 0.0:
            sent += 1
        clock.now += 0.001
    assert 800 <= sent <= 802  # 80/s plus the initial burst of 2


def test_recipient_pacing_does_not_spend_the_number_budget() -> None:
    clock = Clock()
    pacer = Pacer(per_number_rate=5, per_recipient_rate=1, per_recipient_burst=1, clock=clock, per_number_burst=5)
    assert pacer.try_acquire("pn", "alice") == 0.0
    assert pacer.try_acquire("pn", "alice") == pytest.approx(1.0)
    # alice's refusals did not consume the number's tokens: four others can still go now
    assert [pacer.try_acquire("pn", who) for who in ("b", "c", "d", "e")] == [0.0] * 4
    assert pacer.try_acquire("pn", "f") > 0
    assert pacer.try_acquire("other-number", "alice") == 0.0  # pairs are per number


def test_invalid_buckets() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


def test_default_number_burst_is_a_fortieth_of_a_second() -> None:
    clock = Clock()
    pacer = Pacer(per_number_rate=80, per_recipient_rate=1000, clock=clock)
    allowed = 0
    while pacer.try_acquire("pn", f"r{allowed}") == 0.0:
        allowed += 1
    assert allowed == 2  # not 80: an idle number does not get a second's worth at once
    assert pacer.recipient_delay("pn", "r0") == 0.0


def test_recipient_delay_takes_nothing() -> None:
    clock = Clock()
    pacer = Pacer(per_number_rate=100, per_recipient_rate=1, per_recipient_burst=1, clock=clock)
    assert pacer.try_acquire("pn", "alice") == 0.0
    assert pacer.recipient_delay("pn", "alice") == pytest.approx(1.0)
    assert pacer.recipient_delay("pn", "alice") == pytest.approx(1.0)  # asking twice does not cost twice
    clock.now += 1
    assert pacer.recipient_delay("pn", "alice") == 0.0
