"""The audit log as a tenant's admins read it (what :mod:`engine.inbox.audit` and the auth and
tenant services wrote), newest first."""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from engine.db.queries import sql
from engine.errors import InvalidInput
from engine.inbox.principal import Principal


def _entry(row: asyncpg.Record) -> dict[str, Any]:
    # a user actor is named; others ("cli", "system", an operator) are shown as they were written
    actor = {"id": row["actor_id"], "name": row["actor_name"] if row["actor_id"] else row["actor"], "raw": row["actor"]}
    return {"id": row["id"], "actor": actor, "action": row["action"], "subject": row["subject"],
            "details": row["details"], "created_at": row["created_at"]}


async def list_audit(conn: asyncpg.Connection, who: Principal, *, before: int | None = None, action: str | None = None,
                     limit: int = 50) -> list[dict[str, Any]]:
    """Entries before id ``before``; ``action`` matches exactly or as a prefix of dotted names
    (``user`` finds ``user.create`` and ``user.update``)."""
    who.require("audit.read")
    if not 1 <= limit <= 200:
        raise InvalidInput("limit must be between 1 and 200")
    action = action.strip() if action and action.strip() else None
    prefix = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%" if action else None
    rows = await conn.fetch(sql("inbox_team_audit", "list_audit"), who.tenant_id, before, action, prefix, limit)
    return [_entry(r) for r in rows]


class AuditQuery(BaseModel):
    before: int | None = Field(default=None, ge=1, le=2**63 - 1)
    action: str | None = Field(default=None, max_length=100)
    limit: int = Field(default=50, ge=1, le=200)
