"""Token buckets that pace outbound sends per phone number and per recipient.

Time is injected (``clock``) so that tests and the dispatcher share one notion of now; waiting is
left to the caller, who gets back how long to wait instead of a sleep it cannot cancel.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

_EPSILON = 1e-9  # float refills land a hair below a whole token


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket size
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _updated: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._tokens = self.burst
        self._updated = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_take(self) -> float:
        """Take a token and return 0.0, or return the seconds until one will be there (taking nothing)."""
        self._refill()
        if self._tokens >= 1 - _EPSILON:
            self._tokens -= 1
            return 0.0
        return max(_EPSILON, (1 - self._tokens) / self.rate)


class Pacer:
    """A bucket per phone number (Meta's throughput) and per (phone number, recipient) pair."""

    def __init__(self, per_number_rate: float, per_recipient_rate: float, per_recipient_burst: float = 3,
                 clock: Callable[[], float] = time.monotonic, max_recipients: int = 100_000,
                 per_number_burst: float | None = None) -> None:
        self._per_number_rate = per_number_rate
        # 25 ms worth (2 sends at 80/s): any second then carries at most rate + 2 at the sender, so
        # that network jitter bunching sends at Meta's side stays close to the rate (bench/outbound.py)
        self._per_number_burst = per_number_burst or max(1.0, per_number_rate / 40)
        self._per_recipient_rate = per_recipient_rate
        self._per_recipient_burst = per_recipient_burst
        self._clock = clock
        self._numbers: dict[str, TokenBucket] = {}
        self._recipients: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._max_recipients = max_recipients

    def _recipient(self, key: tuple[str, str]) -> TokenBucket:
        bucket = self._recipients.get(key)
        if bucket is None:
            bucket = TokenBucket(self._per_recipient_rate, self._per_recipient_burst, self._clock)
            self._recipients[key] = bucket
            if len(self._recipients) > self._max_recipients:
                self._recipients.popitem(last=False)  # forget the least recently paced recipient
        else:
            self._recipients.move_to_end(key)
        return bucket

    @property
    def number_burst(self) -> float:
        return self._per_number_burst

    def recipient_delay(self, phone_number_id: str, recipient: str) -> float:
        """Seconds until this recipient may get another message (0.0 if now); takes nothing."""
        pair = self._recipient((phone_number_id, recipient))
        pair._refill()
        return 0.0 if pair._tokens >= 1 - _EPSILON else (1 - pair._tokens) / pair.rate

    def try_acquire(self, phone_number_id: str, recipient: str | None) -> float:
        """0.0 if a send may go now (both buckets debited), else seconds to wait (nothing debited)."""
        number = self._numbers.get(phone_number_id)
        if number is None:
            number = self._numbers[phone_number_id] = TokenBucket(self._per_number_rate, self._per_number_burst,
                                                                  self._clock)
        if recipient is not None and (delay := self.recipient_delay(phone_number_id, recipient)) > 0:
            return delay
        wait = number.try_take()
        if wait > 0:
            return wait
        if recipient is not None:
            self._recipients[(phone_number_id, recipient)]._tokens -= 1
        return 0.0
