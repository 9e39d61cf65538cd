"""The retry strategy: when to try again, and when to give up."""

from __future__ import annotations

import random

import pytest

from engine.errors import InvalidInput, ServiceUnavailable
from engine.retry import Jitter, RetryDecision, RetryStrategy, is_retryable
from engine.whatsapp.errors import MetaNetworkError, OutsideServiceWindow, RateLimited, error_from_response

pytestmark = pytest.mark.unit


def _transient() -> MetaNetworkError:
    return MetaNetworkError("timed out")


def test_delays_double_then_stop_at_the_cap() -> None:
    strategy = RetryStrategy(max_attempts=20, base_delay_s=1.0, max_delay_s=300.0, jitter=Jitter.NONE)
    delays = [strategy.decide(attempt, _transient()).delay_s for attempt in range(1, 12)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    strategy = RetryStrategy(max_attempts=10_000, jitter=Jitter.NONE)
    assert strategy.decide(5000, _transient()).delay_s == 300.0


def test_full_jitter_stays_within_bounds_and_is_deterministic_with_a_seed() -> None:
    def run(seed: int) -> list[float]:
        strategy = RetryStrategy(max_attempts=50, rng=random.Random(seed))
        out = []
        for attempt in range(1, 40):
            decision = strategy.decide(attempt, _transient())
            assert decision.retry and decision.delay_s is not None
            assert 0.0 <= decision.delay_s <= min(300.0, 2.0 ** (attempt - 1))
            out.append(decision.delay_s)
        return out

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    # jitter really spreads the capped delays rather than pinning them at the cap
    assert len(set(first[10:])) > 1


def test_jittered_delays_grow_on_average() -> None:
    strategy = RetryStrategy(max_attempts=50, rng=random.Random(1))
    means = []
    for attempt in (1, 3, 5, 7):
        samples = [strategy.decide(attempt, _transient()).delay_s or 0.0 for _ in range(400)]
        means.append(sum(samples) / len(samples))
    assert means == sorted(means)
    assert means[-1] > 10 * means[0]


def test_equal_jitter_never_retries_sooner_than_half_the_backoff() -> None:
    strategy = RetryStrategy(max_attempts=50, jitter=Jitter.EQUAL, rng=random.Random(3))
    for attempt in range(1, 15):
        delay = strategy.decide(attempt, _transient()).delay_s
        backoff = strategy.backoff(attempt)
        assert delay is not None and backoff / 2 <= delay <= backoff


def test_gives_up_after_max_attempts() -> None:
    strategy = RetryStrategy(max_attempts=3, rng=random.Random(0))
    assert strategy.decide(1, _transient()).retry
    assert strategy.decide(2, _transient()).retry
    final = strategy.decide(3, _transient())
    assert final == RetryDecision(False, None, final.reason)
    assert "3 attempts" in final.reason


@pytest.mark.parametrize(
    "error",
    [
        OutsideServiceWindow("more than 24 hours"),
        error_from_response(400, {"error": {"code": 131026, "message": "Message undeliverable"}}),
        error_from_response(401, {"error": {"code": 190, "message": "token expired"}}),
        InvalidInput("bad"),
        ValueError("a bug"),
    ],
)
def test_permanent_errors_give_up_at_once(error: BaseException) -> None:
    decision = RetryStrategy(rng=random.Random(0)).decide(1, error)
    assert not decision.retry and decision.delay_s is None
    assert type(error).__name__ in decision.reason


def test_what_counts_as_retryable() -> None:
    assert is_retryable(ServiceUnavailable("db down"))
    assert is_retryable(TimeoutError())
    assert is_retryable(ConnectionResetError())
    assert is_retryable(error_from_response(503, b"oops"))
    assert not is_retryable(RuntimeError("bug"))
    assert not is_retryable(error_from_response(400, {"error": {"code": 100, "message": "bad param"}}))


def test_retry_after_is_honoured_over_a_shorter_backoff() -> None:
    strategy = RetryStrategy(rng=random.Random(0))
    error = RateLimited("slow down", retry_after=42.0)
    decision = strategy.decide(1, error)
    assert decision.retry and decision.delay_s == 42.0
    assert "42s" in decision.reason


def test_retry_after_may_exceed_max_delay_but_not_its_own_bound() -> None:
    strategy = RetryStrategy(max_delay_s=10.0, max_retry_after_s=600.0, jitter=Jitter.NONE)
    assert strategy.decide(1, RateLimited("x", retry_after=120.0)).delay_s == 120.0
    assert strategy.decide(1, RateLimited("x", retry_after=86_400.0)).delay_s == 600.0


def test_a_longer_backoff_wins_over_a_short_retry_after() -> None:
    strategy = RetryStrategy(max_attempts=20, jitter=Jitter.NONE)
    assert strategy.decide(6, RateLimited("x", retry_after=1.0)).delay_s == 32.0


@pytest.mark.parametrize("hint", [0.0, -5.0, float("nan"), float("inf")])
def test_nonsense_retry_after_hints_are_ignored(hint: float) -> None:
    strategy = RetryStrategy(jitter=Jitter.NONE)
    assert strategy.decide(2, RateLimited("x", retry_after=hint)).delay_s == 2.0


def test_a_retry_after_does_not_revive_a_permanent_error() -> None:
    error = OutsideServiceWindow("closed", retry_after=5.0)
    assert not RetryStrategy().decide(1, error).retry


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay_s": -1.0}, {"base_delay_s": 10.0, "max_delay_s": 1.0},
     {"max_retry_after_s": -1.0}],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryStrategy(**kwargs)  # type: ignore[arg-type]
