"""A user's notifications (mentions, assignments, …): listing them and marking them read. They are
created by the services that have something to tell (:mod:`engine.inbox.notify`)."""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from engine.db.queries import sql
from engine.errors import InvalidInput, NotFound
from engine.inbox import audit
from engine.inbox.principal import Principal


async def list_notifications(conn: asyncpg.Connection, who: Principal, *, unread: bool = False,
                             before: int | None = None, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
    """The caller's notifications, newest first, and how many of all of them are unread."""
    if not 1 <= limit <= 100:
        raise InvalidInput("limit must be between 1 and 100")
    rows = await conn.fetch(sql("inbox_team_notifications", "list_notifications"), who.tenant_id, who.user_id,
                            unread, before, limit)
    count = await conn.fetchval(sql("inbox_team_notifications", "unread_count"), who.tenant_id, who.user_id)
    return [dict(r) for r in rows], count


async def mark_read(conn: asyncpg.Connection, who: Principal, notification_id: int) -> None:
    """Mark one of the caller's own notifications read (idempotent); anyone else's does not exist."""
    found = await conn.fetchval(sql("inbox_team_notifications", "mark_read"), who.tenant_id, who.user_id,
                                notification_id)
    if found is None:
        raise NotFound("no such notification")
    await audit.record(conn, who, "notification.read", str(notification_id))


async def mark_all_read(conn: asyncpg.Connection, who: Principal) -> int:
    status = await conn.execute(sql("inbox_team_notifications", "mark_all_read"), who.tenant_id, who.user_id)
    count = int(status.split()[-1])
    if count:
        await audit.record(conn, who, "notification.read_all", str(who.user_id), {"count": count})
    return count


class NotificationsQuery(BaseModel):
    unread: bool = False
    before: int | None = Field(default=None, ge=1, le=2**63 - 1)
    limit: int = Field(default=50, ge=1, le=100)
