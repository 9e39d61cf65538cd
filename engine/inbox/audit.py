"""The audit log: every mutation made through the API writes one row in its own transaction."""

from __future__ import annotations

from typing import Any

import asyncpg

from engine.inbox.principal import Principal


async def record(conn: asyncpg.Connection, who: Principal, action: str, subject: str | None,
                 details: dict[str, Any] | None = None) -> None:
    """Append ``action`` on ``subject`` by ``who``. Never put secrets or message bodies in
    ``details``: the audit log is readable by every admin of the tenant."""
    await conn.execute("INSERT INTO audit_log (tenant_id, actor, action, subject, details) VALUES ($1, $2, $3, $4, $5)",
                       who.tenant_id, who.actor, action, subject, details or {})
