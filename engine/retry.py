"""When to try a failed job again: a strategy object that returns a decision.

The error decides *whether* (its ``retryable`` flag, set once where the error was classified);
the strategy decides *when*: exponential backoff with jitter, capped, and never sooner than a
``retry_after`` hint the error carries (Meta's Retry-After or usage headers).
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field


class Jitter(enum.StrEnum):
    FULL = "full"  # uniform in [0, backoff]: spreads a thundering herd best
    EQUAL = "equal"  # uniform in [backoff/2, backoff]: never retries at once
    NONE = "none"  # exactly the backoff: for tests and for callers that pace elsewhere


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay_s: float | None
    reason: str

    @classmethod
    def give_up(cls, reason: str) -> RetryDecision:
        return cls(False, None, reason)

    @classmethod
    def retry_in(cls, delay_s: float, reason: str) -> RetryDecision:
        return cls(True, delay_s, reason)


def is_retryable(error: BaseException) -> bool:
    """The error's own ``retryable`` flag; plain timeouts and connection errors count as retryable,
    anything else without a flag (a bug, most likely) does not."""
    flag = getattr(error, "retryable", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(error, (TimeoutError, ConnectionError))


def retry_after_hint(error: BaseException) -> float | None:
    hint = getattr(error, "retry_after", None)
    if isinstance(hint, (int, float)) and not isinstance(hint, bool) and math.isfinite(hint) and hint > 0:
        return float(hint)
    return None


@dataclass(frozen=True)
class RetryStrategy:
    """``decide(attempt, error)``: ``attempt`` is the 1-based number of the attempt that just failed.

    The n-th retry waits ``min(max_delay_s, base_delay_s * 2**(n-1))``, jittered; a ``retry_after``
    hint on the error is a floor (bounded by ``max_retry_after_s``, so a bogus header cannot park a
    job for days). After ``max_attempts`` attempts in all, it gives up.
    """

    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    jitter: Jitter = Jitter.FULL
    max_retry_after_s: float = 3600.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")
        if self.max_retry_after_s < 0:
            raise ValueError("max_retry_after_s must not be negative")

    def backoff(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt ``attempt`` (1-based), capped."""
        # past 2**64 any sane cap is reached, and 2.0**1024 would overflow
        exponent = min(max(attempt - 1, 0), 64)
        return min(self.max_delay_s, self.base_delay_s * 2.0**exponent)

    def _jittered(self, ceiling: float) -> float:
        match self.jitter:
            case Jitter.FULL:
                return self.rng.uniform(0.0, ceiling)
            case Jitter.EQUAL:
                return self.rng.uniform(ceiling / 2, ceiling)
            case Jitter.NONE:
                return ceiling

    def decide(self, attempt: int, error: BaseException) -> RetryDecision:
        name = type(error).__name__
        if not is_retryable(error):
            return RetryDecision.give_up(f"{name} is permanent: trying again cannot help")
        if attempt >= self.max_attempts:
            return RetryDecision.give_up(f"gave up after {attempt} attempts (last: {name})")
        delay = self._jittered(self.backoff(attempt))
        hint = retry_after_hint(error)
        if hint is not None and min(hint, self.max_retry_after_s) > delay:
            delay = min(hint, self.max_retry_after_s)
            return RetryDecision.retry_in(delay, f"{name}; retry {attempt + 1}/{self.max_attempts} "
                                                f"after the {hint:g}s the server asked for")
        return RetryDecision.retry_in(delay, f"{name}; retry {attempt + 1}/{self.max_attempts} with backoff")
