"""Team chat: named channels anyone in the tenant may join, direct messages between two users,
read markers and unread counts.

A channel's messages are readable by its members only; to anyone else it does not exist (404),
and a direct channel is visible to its two members only, even in the list. Unread counts count
the others' messages after one's read marker; one's own message moves one's marker past it.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput, NotFound
from engine.inbox import audit
from engine.inbox.principal import Changes, Principal

MAX_TEXT = 4096


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class NewChannel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=80)


class DirectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: uuid.UUID


class NewChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_not_blank)]


def _channel(row: asyncpg.Record, me: uuid.UUID) -> dict[str, Any]:
    members = [{"id": uuid.UUID(m["id"]), "name": m["name"]} for m in row["members"]]
    name = row["name"]
    if row["kind"] == "direct":  # a direct channel is named after the other person
        name = next((m["name"] for m in members if m["id"] != me), name)
    last = None
    if row["last_id"] is not None:
        author = {"id": row["last_author_id"], "name": row["last_author_name"]} if row["last_author_id"] else None
        last = {"id": row["last_id"], "author": author, "text": row["last_text"], "created_at": row["last_created_at"]}
    return {"id": row["id"], "kind": row["kind"], "name": name, "members": members, "joined": row["joined"],
            "unread": row["unread"], "last_message": last}


def _message(row: asyncpg.Record) -> dict[str, Any]:
    author = {"id": row["author_id"], "name": row["author_name"]} if row["author_id"] else None
    return {"id": row["id"], "channel_id": row["channel_id"], "author": author, "text": row["body"],
            "created_at": row["created_at"]}


async def list_channels(conn: asyncpg.Connection, who: Principal) -> list[dict[str, Any]]:
    who.require("team_chat.use")
    rows = await conn.fetch(sql("inbox_team_chat", "list_channels"), who.tenant_id, who.user_id, None)
    return [_channel(r, who.user_id) for r in rows]


async def get_channel(conn: asyncpg.Connection, who: Principal, channel_id: uuid.UUID) -> dict[str, Any]:
    who.require("team_chat.use")
    row = await conn.fetchrow(sql("inbox_team_chat", "list_channels"), who.tenant_id, who.user_id, channel_id)
    if row is None:
        raise NotFound("no such chat channel")
    return _channel(row, who.user_id)


async def _require_member(conn: asyncpg.Connection, who: Principal, channel_id: uuid.UUID) -> list[uuid.UUID]:
    """The channel's member ids, if ``who`` is one of them; NotFound otherwise (never say which)."""
    who.require("team_chat.use")
    row = await conn.fetchrow(sql("inbox_team_chat", "membership"), who.tenant_id, channel_id, who.user_id)
    if row is None or not row["joined"]:
        raise NotFound("no such chat channel")
    return [r["user_id"] for r in await conn.fetch(sql("inbox_team_chat", "member_ids"), who.tenant_id, channel_id)]


async def create_channel(conn: asyncpg.Connection, who: Principal, changes: Changes,
                         new: NewChannel) -> dict[str, Any]:
    who.require("team_chat.use")
    channel_id = await conn.fetchval(sql("inbox_team_chat", "create_channel"), who.tenant_id, new.name, who.user_id)
    if channel_id is None:
        raise Conflict(f"a channel named {new.name!r} already exists")
    await conn.execute(sql("inbox_team_chat", "join"), who.tenant_id, channel_id, who.user_id)
    await audit.record(conn, who, "chat.channel_create", str(channel_id), {"name": new.name})
    changes.add("chat.channel", {"channel_id": channel_id})  # a named channel is news for the whole tenant
    return await get_channel(conn, who, channel_id)


async def join(conn: asyncpg.Connection, who: Principal, changes: Changes, channel_id: uuid.UUID) -> None:
    """Join a named channel (idempotent). A direct channel cannot be joined: it is not there for others."""
    who.require("team_chat.use")
    row = await conn.fetchrow(sql("inbox_team_chat", "membership"), who.tenant_id, channel_id, who.user_id)
    if row is None or (row["kind"] == "direct" and not row["joined"]):
        raise NotFound("no such chat channel")
    if row["joined"]:
        return
    await conn.execute(sql("inbox_team_chat", "join"), who.tenant_id, channel_id, who.user_id)
    await audit.record(conn, who, "chat.channel_join", str(channel_id))
    members = [r["user_id"] for r in await conn.fetch(sql("inbox_team_chat", "member_ids"), who.tenant_id, channel_id)]
    changes.add("chat.channel", {"channel_id": channel_id, "user_ids": members})


def direct_key(a: uuid.UUID, b: uuid.UUID) -> str:
    return ":".join(sorted((str(a), str(b))))


async def direct(conn: asyncpg.Connection, who: Principal, changes: Changes,
                 user_id: uuid.UUID) -> tuple[dict[str, Any], bool]:
    """The direct channel between ``who`` and ``user_id``, created on first use; True if created now."""
    who.require("team_chat.use")
    if user_id == who.user_id:
        raise InvalidInput("a direct conversation needs someone else")
    active = await conn.fetchval(sql("inbox_team_chat", "active_user"), who.tenant_id, user_id)
    if active is None:
        raise NotFound("no such user")
    key = direct_key(who.user_id, user_id)
    channel_id = await conn.fetchval(sql("inbox_team_chat", "direct_by_key"), who.tenant_id, key)
    if channel_id is not None:
        return await get_channel(conn, who, channel_id), False
    if not active:
        raise InvalidInput("that user has been deactivated")
    channel_id = await conn.fetchval(sql("inbox_team_chat", "create_direct"), who.tenant_id, key, who.user_id)
    if channel_id is None:  # the other one opened it at the same moment
        channel_id = await conn.fetchval(sql("inbox_team_chat", "direct_by_key"), who.tenant_id, key)
        return await get_channel(conn, who, channel_id), False
    await conn.execute(sql("inbox_team_chat", "add_direct_members"), who.tenant_id, channel_id, [who.user_id, user_id])
    await audit.record(conn, who, "chat.direct_create", str(channel_id), {"user_id": str(user_id)})
    changes.add("chat.channel", {"channel_id": channel_id, "user_ids": sorted([who.user_id, user_id])})
    return await get_channel(conn, who, channel_id), True


async def messages(conn: asyncpg.Connection, who: Principal, channel_id: uuid.UUID, *, before: int | None = None,
                   limit: int = 50) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` messages before ``before`` (the newest if None), oldest first, and whether
    older ones remain."""
    if not 1 <= limit <= 100:
        raise InvalidInput("limit must be between 1 and 100")
    await _require_member(conn, who, channel_id)
    rows = await conn.fetch(sql("inbox_team_chat", "messages"), who.tenant_id, channel_id, before, limit + 1)
    has_more = len(rows) > limit
    return [_message(r) for r in reversed(rows[:limit])], has_more


async def post(conn: asyncpg.Connection, who: Principal, changes: Changes, channel_id: uuid.UUID,
               new: NewChatMessage) -> dict[str, Any]:
    members = await _require_member(conn, who, channel_id)
    if not new.text.strip() or len(new.text) > MAX_TEXT:
        raise InvalidInput(f"a chat message has 1 to {MAX_TEXT} characters")
    row = await conn.fetchrow(sql("inbox_team_chat", "post"), who.tenant_id, channel_id, who.user_id, new.text)
    await conn.execute(sql("inbox_team_chat", "mark_read_up_to"), who.tenant_id, channel_id, who.user_id, row["id"])
    await audit.record(conn, who, "chat.message", str(channel_id), {"message_id": row["id"]})
    changes.add("chat.message", {"channel_id": channel_id, "user_ids": members, "message_id": row["id"],
                                 "author_id": who.user_id})
    return {"id": row["id"], "channel_id": channel_id, "author": {"id": who.user_id, "name": who.name},
            "text": new.text, "created_at": row["created_at"]}


async def mark_read(conn: asyncpg.Connection, who: Principal, changes: Changes, channel_id: uuid.UUID) -> None:
    """Move ``who``'s read marker to the channel's newest message (the badge clears in their other tabs too)."""
    await _require_member(conn, who, channel_id)
    last_read = await conn.fetchval(sql("inbox_team_chat", "mark_read"), who.tenant_id, channel_id, who.user_id)
    await audit.record(conn, who, "chat.read", str(channel_id), {"last_read_id": last_read})
    changes.add("chat.read", {"channel_id": channel_id, "user_ids": [who.user_id]})


class MessagesQuery(BaseModel):
    before: int | None = Field(default=None, ge=1, le=2**63 - 1)
    limit: int = Field(default=50, ge=1, le=100)
