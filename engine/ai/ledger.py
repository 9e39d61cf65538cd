"""The usage and cost ledger: every pipeline run and every model call in it, per tenant, with the
cache tokens apart, written after the run (also after a cancelled or failed one).

A web page an answer cites has no chunk, but ``ai_run_sources``' primary key includes ``chunk_id``
(so it cannot be NULL): it is kept as source ``web:<hostname>`` with chunk 0, an id no knowledge
chunk has (they count from 1), one row per site and run. Web searches have no column of their
own in ``ai_usage``: their price is in the call's ``cost_usd``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from engine.ai.pipeline import RunRecord
from engine.db.queries import sql

WEB_CHUNK = 0  # the chunk id of a cited web page (see above)


class PostgresLedger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def __call__(self, run: RunRecord) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(sql("ai", "insert_run"), run.id, run.tenant_id, run.conversation_id, run.purpose,
                               run.intent, run.handler, run.route_tier, run.status, (run.error or "")[:1000] or None,
                               run.language, run.first_token_ms, run.total_ms, run.cost_usd)
            if run.calls:
                await conn.executemany(sql("ai", "insert_usage"), [
                    (run.tenant_id, run.id, c.call, c.provider, c.usage.model, c.usage.input_tokens,
                     c.usage.output_tokens, c.usage.cache_write_tokens, c.usage.cache_read_tokens, c.cost_usd)
                    for c in run.calls])
            if run.citations:
                await conn.executemany(sql("ai", "insert_source"), [
                    (run.tenant_id, run.id, *_source_key(c)) for c in run.citations])


def _source_key(citation: dict[str, Any]) -> tuple[str, int]:
    if citation["chunk_id"] is not None:
        return citation["source"], citation["chunk_id"]
    try:
        host = urlsplit(citation.get("url") or "").hostname
    except ValueError:  # a provider's malformed URL still leaves a row
        host = None
    return (f"web:{host}" if host else str(citation["source"]))[:200], WEB_CHUNK


async def month_spend(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: uuid.UUID,
                      now: datetime | None = None) -> float:
    now = now or datetime.now(timezone.utc)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return float(await conn.fetchval(sql("ai", "month_spend"), tenant_id, start) or 0)


async def usage_report(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: uuid.UUID, days: int = 30) -> dict[str, Any]:
    """AI runs and cost per day, intent, handler and cited source (the admin page and `parlo ai usage`)."""
    rows = {name: [dict(r) for r in await conn.fetch(sql("ai", f"usage_by_{name}"), tenant_id, days)]
            for name in ("day", "intent", "handler", "source")}
    return rows
