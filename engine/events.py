"""Live events: one Redis Stream per tenant, read by the Gateway replicas that have that tenant's
agents connected. Redis carries events, not truth: a failed publish is logged and the inbox
catches up from PostgreSQL when it reloads."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

log = logging.getLogger("parlo.events")


def stream_key(tenant_id: uuid.UUID | str) -> str:
    return f"parlo:tenant:{tenant_id}:events"


async def publish(redis: Any, tenant_id: uuid.UUID, kind: str, data: dict[str, Any], *, maxlen: int) -> str | None:
    try:
        event_id = await redis.xadd(stream_key(tenant_id), {"type": kind, "data": orjson.dumps(data, default=str)},
                                    maxlen=maxlen, approximate=True)
    except Exception as exc:  # live events are best effort; the truth is already committed
        log.warning("event not published", extra={"tenant": str(tenant_id), "type": kind, "error": type(exc).__name__})
        return None
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)


async def publish_many(redis: Any, items: list[tuple[uuid.UUID, str, dict[str, Any]]], *, maxlen: int) -> int:
    """Publish a batch in one round trip (a non-transactional pipeline). Returns how many were sent."""
    if not items:
        return 0
    try:
        pipe = redis.pipeline(transaction=False)
        for tenant_id, kind, data in items:
            pipe.xadd(stream_key(tenant_id), {"type": kind, "data": orjson.dumps(data, default=str)},
                      maxlen=maxlen, approximate=True)
        await pipe.execute()
    except Exception as exc:  # live events are best effort; the truth is already committed
        log.warning("events not published", extra={"count": len(items), "error": type(exc).__name__})
        return 0
    return len(items)
