"""Notifications the inbox's own actions create (mentions, assignments); listing and marking them
read belong to the notifications routes."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from engine.db.queries import sql
from engine.inbox.principal import Changes

KINDS = ("mention", "assignment", "new_conversation", "chat")


async def notify(conn: asyncpg.Connection, tenant_id: uuid.UUID, changes: Changes, user_id: uuid.UUID, kind: str,
                 conversation_id: uuid.UUID | None, data: dict[str, Any]) -> int:
    """One notification for one user, and its live event (seen by that user only)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    notification_id: int = await conn.fetchval(sql("inbox_conversations", "insert_notification"), tenant_id, user_id,
                                               kind, conversation_id, data)
    changes.add("notification.created", {"user_ids": [user_id], "notification_id": notification_id, "kind": kind,
                                         "conversation_id": conversation_id})
    return notification_id
