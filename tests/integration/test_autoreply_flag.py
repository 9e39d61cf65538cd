"""Whether a business wants auto-replies is read from PostgreSQL at most once per TTL, not once
per customer message (most businesses have them off, and at webhook rates the query cost more
than the ingest); turning them on takes effect within the TTL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from engine import tenants
from engine.ai.autoreply import AutoReplier, AutoReplyPolicy
from engine.db.pool import create_pool

pytestmark = pytest.mark.integration


async def test_the_tenant_flag_is_read_once_per_ttl_and_followed(db: asyncpg.Connection, database_url: str) -> None:
    tenant = await tenants.create(db, f"Flag {uuid.uuid4().hex[:6]}")
    answered: list[dict[str, Any]] = []

    async def answer(request: dict[str, Any]) -> dict[str, Any] | None:
        answered.append(request)
        return None

    async def publish(*_: Any) -> None:
        return None

    pool = await create_pool(database_url)
    try:
        replier = AutoReplier(pool, answer, publish, AutoReplyPolicy(debounce_s=0.05))
        replier.TENANT_FLAG_TTL_S = 0.5
        for _ in range(50):
            replier.customer_wrote(tenant.id, uuid.uuid4())
        await replier.drain()
        assert replier.flag_reads == 1 and answered == []
        for _ in range(50):  # known to be off: no task at all
            replier.customer_wrote(tenant.id, uuid.uuid4())
        assert not replier._tasks and replier.flag_reads == 1

        await db.execute("UPDATE tenants SET settings = settings || '{\"ai_auto_reply\": true}' WHERE id = $1",
                         tenant.id)
        assert await replier.tenant_wants_replies(tenant.id) is False  # still within the TTL
        await asyncio.sleep(0.6)
        assert await replier.tenant_wants_replies(tenant.id) is True
        assert replier.flag_reads == 2
        # concurrent askers share one read
        replier._tenant_on.clear()
        assert await asyncio.gather(*(replier.tenant_wants_replies(tenant.id) for _ in range(20))) == [True] * 20
        assert replier.flag_reads == 3
    finally:
        await pool.close()
