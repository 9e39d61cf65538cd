"""Rate limits kept in Redis, shared by every Gateway replica.

A sliding window per key (a sorted set of hit times, trimmed on each check, in one atomic Lua
script): ``hit`` counts an attempt and says whether it is allowed, and if not, after how many
seconds it will be. Keys expire by themselves once the window has passed.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from engine.errors import ParloError

_SCRIPT = """
local key, now, window, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {0, tostring(oldest[2] + window - now)}
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return {1, '0'}
"""


class RateLimited(ParloError):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    limit: int
    window_s: float


class RateLimiter:
    def __init__(self, redis: Any, prefix: str = "parlo:rl") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_SCRIPT)

    async def hit(self, limit: Limit, key: str, now: float | None = None) -> None:
        """Count one attempt; raise RateLimited (with Retry-After) once the window is full."""
        now = time.time() if now is None else now
        allowed, wait = await self._script(
            keys=[f"{self._prefix}:{limit.name}:{key}"],
            args=[repr(now), repr(limit.window_s), limit.limit, f"{now}:{secrets.token_hex(4)}"])
        if not int(allowed):
            retry = float(wait)
            raise RateLimited(f"too many {limit.name.replace('_', ' ')}; try again in {math.ceil(retry)} s", retry)

    async def reset(self, limit: Limit, key: str) -> None:
        await self._redis.delete(f"{self._prefix}:{limit.name}:{key}")
