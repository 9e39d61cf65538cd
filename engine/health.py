"""Health checks of the engine's components, each timed and bounded by a timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.secrets import mask_text

Check = Callable[[], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok" if self.ok else "error", "latency_ms": round(self.latency_ms, 2)}
        if self.error:
            out["error"] = self.error
        out.update(self.details)
        return out


async def _run(name: str, check: Check, timeout_s: float) -> ComponentHealth:
    started = time.perf_counter()
    try:
        details = await asyncio.wait_for(check(), timeout_s)
    except asyncio.TimeoutError:
        return ComponentHealth(name, False, (time.perf_counter() - started) * 1000, f"no answer within {timeout_s:g} s")
    except Exception as exc:  # a health check reports any failure instead of raising it
        reason = mask_text(str(exc) or type(exc).__name__)
        return ComponentHealth(name, False, (time.perf_counter() - started) * 1000, reason)
    return ComponentHealth(name, True, (time.perf_counter() - started) * 1000, None, dict(details or {}))


async def check_all(checks: Mapping[str, Check], timeout_s: float) -> tuple[bool, dict[str, Any]]:
    results = await asyncio.gather(*(_run(name, check, timeout_s) for name, check in checks.items()))
    healthy = all(r.ok for r in results)
    return healthy, {"status": "ok" if healthy else "error", "components": {r.name: r.as_dict() for r in results}}


async def postgres_check(pool: Any) -> Mapping[str, Any]:
    async with pool.acquire() as conn:
        version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    return {"schema_version": version}


async def redis_check(client: Any) -> Mapping[str, Any]:
    await client.ping()
    return {}
