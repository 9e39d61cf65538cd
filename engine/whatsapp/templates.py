"""Message templates of a tenant's WhatsApp Business Accounts, synced from the Graph API."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from engine.db.queries import sql
from engine.whatsapp.graph import GraphClient


async def sync(conn: asyncpg.Connection, graph: GraphClient, tenant_id: uuid.UUID, waba_id: str) -> int:
    """Pull every template (all pages) and upsert it. Returns how many were stored."""
    count = 0
    async for template in graph.list_templates(waba_id):
        await conn.execute(sql("templates", "upsert_template"), tenant_id, waba_id, template.id, template.name,
                           template.language, template.category, template.status,
                           [dict(c) for c in template.components])
        count += 1
    return count


async def list_all(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(sql("templates", "list_templates"), tenant_id)]
