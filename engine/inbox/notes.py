"""Internal notes: written by agents on a conversation, never sent to the customer. A note may
mention colleagues (by id, or as ``@<email local part>`` in its text); each one gets a notification."""

from __future__ import annotations

import re
import uuid
from datetime import timezone
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from engine.db.queries import sql
from engine.errors import InvalidInput
from engine.inbox.audit import record
from engine.inbox.conversations import visible
from engine.inbox.notify import notify
from engine.inbox.principal import Changes, Principal

MAX_NOTE = 10000
MAX_MENTIONS = 50
LIST_LIMIT = 500
# "@mario.rossi" mentions the user whose email starts "mario.rossi@"; not inside an email address
_MENTION = re.compile(r"(?<![\w.@+-])@([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})")


class NoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_NOTE)
    mentions: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_MENTIONS)


def mentioned_local_parts(text: str) -> list[str]:
    return sorted({m.rstrip(".").lower() for m in _MENTION.findall(text)})


def view(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "conversation_id": str(row["conversation_id"]), "text": row["body"],
            "author": {"id": str(row["author_id"]), "name": row["author_name"]} if row["author_id"] else None,
            "mentions": [{"id": m["id"], "name": m["name"]} for m in row["mentions"]],
            "created_at": row["created_at"].astimezone(timezone.utc).isoformat()}


async def list_notes(conn: asyncpg.Connection, who: Principal, conversation_id: uuid.UUID) -> dict[str, Any]:
    """The conversation's notes, oldest first (the latest :data:`LIST_LIMIT`)."""
    who.require("conversation.read_own")
    await visible(conn, who, conversation_id)
    rows = await conn.fetch(sql("inbox_notes", "list_notes"), who.tenant_id, conversation_id, None, LIST_LIMIT)
    return {"items": [view(r) for r in reversed(rows)]}


async def create(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation_id: uuid.UUID,
                 request: NoteRequest) -> dict[str, Any]:
    who.require("conversation.note")
    conversation = await visible(conn, who, conversation_id)
    if not request.text.strip():
        raise InvalidInput("the note is blank")
    named = set(request.mentions)
    if named:
        known = {r["id"] for r in await conn.fetch(sql("inbox_notes", "users_by_id"), who.tenant_id, list(named))}
        if named - known:
            raise InvalidInput(f"{len(named - known)} mentioned user(s) are not active members of this tenant")
    parts = mentioned_local_parts(request.text)
    if parts:
        named |= {r["id"] for r in await conn.fetch(sql("inbox_notes", "users_by_local_part"), who.tenant_id, parts)}
    mentions = sorted(named, key=str)[:MAX_MENTIONS]
    note_id: int = await conn.fetchval(sql("inbox_notes", "insert_note"), who.tenant_id, conversation_id,
                                       who.user_id, request.text, mentions)
    await record(conn, who, "note.create", str(conversation_id), {"note_id": note_id, "mentions": len(mentions)})
    changes.add("note.created", {"conversation_id": conversation_id, "team_id": conversation["team_id"],
                                 "assignee_id": conversation["assignee_id"], "note_id": note_id,
                                 "author_id": who.user_id, "mentions": mentions})
    for user_id in mentions:
        if user_id != who.user_id:
            await notify(conn, who.tenant_id, changes, user_id, "mention", conversation_id,
                         {"note_id": note_id, "by": {"id": str(who.user_id), "name": who.name}})
    row = await conn.fetchrow(sql("inbox_notes", "list_notes"), who.tenant_id, conversation_id, note_id, 1)
    return view(row)
