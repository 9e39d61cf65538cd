"""Fault injection: outages, throughput limits, per-recipient errors and latency.

The server asks the :class:`FaultPlan` before answering; tests (or the ``/_sim`` admin API) change
the plan at any time from another thread, hence the lock.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from bench.simulator.errors import GraphError
from bench.simulator.state import recipient_key


class OutageMode(enum.StrEnum):
    UNAVAILABLE = "unavailable"  # HTTP 503, Graph error 2 (is_transient)
    ERROR = "error"  # HTTP 500, error 131000 "Something went wrong"
    HANG = "hang"  # no answer for ``hang_s`` (past the client's timeout), then 503; nothing is sent
    ACCEPT_THEN_HANG = "accept_then_hang"  # the message IS accepted, but the 200 comes after ``hang_s``


class Delivery(enum.StrEnum):
    RESPONSE = "response"  # the send is refused synchronously with the error
    WEBHOOK = "webhook"  # the send is accepted (wamid), then a ``failed`` status carries the error


@dataclass(slots=True)
class Outage:
    mode: OutageMode
    until: float | None  # monotonic deadline, None = until the request budget runs out
    requests_left: int | None  # None = until the deadline
    hang_s: float

    def active(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.requests_left is None or self.requests_left > 0


@dataclass(slots=True)
class RecipientFailure:
    code: int
    times_left: int | None  # None = permanent
    via: Delivery
    details: str | None


@dataclass(slots=True)
class RateLimits:
    per_second: int | None = None  # accepted messages per phone number per second → 130429
    per_recipient: int | None = None  # accepted messages per (phone, recipient) per window → 131056
    recipient_window_s: float = 6.0


class FaultPlan:
    def __init__(self, *, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._outage: Outage | None = None
        self._limits = RateLimits()
        self._phone_window: dict[str, deque[float]] = {}
        self._pair_window: dict[tuple[str, str], deque[float]] = {}
        self._recipients: dict[str, RecipientFailure] = {}
        self._latency = (0.0, 0.0)

    def reset(self) -> None:
        with self._lock:
            self._outage = None
            self._limits = RateLimits()
            self._phone_window.clear()
            self._pair_window.clear()
            self._recipients.clear()
            self._latency = (0.0, 0.0)

    # -- outage -----------------------------------------------------------------------------------

    def inject_outage(
        self,
        *,
        seconds: float | None = None,
        requests: int | None = None,
        mode: OutageMode | str = OutageMode.UNAVAILABLE,
        hang_s: float = 30.0,
    ) -> None:
        if seconds is None and requests is None:
            raise ValueError("an outage needs seconds=, requests= or both")
        until = time.monotonic() + seconds if seconds is not None else None
        with self._lock:
            self._outage = Outage(OutageMode(mode), until, requests, hang_s)

    def clear_outage(self) -> None:
        with self._lock:
            self._outage = None

    def take_outage(self, now: float) -> Outage | None:
        """The outage this request falls into (consuming one request of its budget), or None."""
        with self._lock:
            outage = self._outage
            if outage is None:
                return None
            if not outage.active(now):
                self._outage = None
                return None
            if outage.requests_left is not None:
                outage.requests_left -= 1
            return Outage(outage.mode, outage.until, outage.requests_left, outage.hang_s)

    # -- throughput -------------------------------------------------------------------------------

    def set_rate_limit(
        self,
        per_second: int | None = None,
        *,
        per_recipient: int | None = None,
        recipient_window_s: float = 6.0,
    ) -> None:
        with self._lock:
            self._limits = RateLimits(per_second, per_recipient, recipient_window_s)
            self._phone_window.clear()
            self._pair_window.clear()

    def admit(self, phone_number_id: str, to: str, now: float) -> GraphError | None:
        """130429 or 131056 if this send would exceed a limit; otherwise counts it and returns None.

        Call only for a send that will be accepted, right before accepting it (no await between).
        """
        key = recipient_key(to)
        with self._lock:
            limits = self._limits
            phone_q = self._phone_window.setdefault(phone_number_id, deque())
            pair_q = self._pair_window.setdefault((phone_number_id, key), deque())
            while phone_q and now - phone_q[0] >= 1.0:
                phone_q.popleft()
            while pair_q and now - pair_q[0] >= limits.recipient_window_s:
                pair_q.popleft()
            if limits.per_second is not None and len(phone_q) >= limits.per_second:
                return GraphError(130429)
            if limits.per_recipient is not None and len(pair_q) >= limits.per_recipient:
                return GraphError(131056)
            phone_q.append(now)
            pair_q.append(now)
            return None

    # -- per-recipient errors ---------------------------------------------------------------------

    def fail_recipient(
        self,
        to: str,
        code: int = 131047,
        *,
        times: int | None = None,
        via: Delivery | str = Delivery.RESPONSE,
        details: str | None = None,
    ) -> None:
        with self._lock:
            self._recipients[recipient_key(to)] = RecipientFailure(code, times, Delivery(via), details)

    def heal_recipient(self, to: str) -> None:
        with self._lock:
            self._recipients.pop(recipient_key(to), None)

    def take_recipient_failure(self, to: str) -> RecipientFailure | None:
        key = recipient_key(to)
        with self._lock:
            failure = self._recipients.get(key)
            if failure is None:
                return None
            if failure.times_left is not None:
                failure.times_left -= 1
                if failure.times_left <= 0:
                    del self._recipients[key]
            return RecipientFailure(failure.code, failure.times_left, failure.via, failure.details)

    # -- latency ----------------------------------------------------------------------------------

    def set_latency(self, seconds: float = 0.0, *, max_seconds: float | None = None) -> None:
        """Fixed latency, or uniform random in [seconds, max_seconds]."""
        high = seconds if max_seconds is None else max_seconds
        if seconds < 0 or high < seconds:
            raise ValueError("latency needs 0 <= seconds <= max_seconds")
        with self._lock:
            self._latency = (seconds, high)

    def latency(self) -> float:
        with self._lock:
            low, high = self._latency
            return low if high == low else self._random.uniform(low, high)
