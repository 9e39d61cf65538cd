"""Conversations in the inbox: the list, one conversation, its status, assignment, labels and reads.

Every function takes the caller's transaction, principal and :class:`Changes`. A conversation the
principal may not see is reported exactly like one that does not exist (``NotFound``).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.db.queries import sql
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.inbox import assignment
from engine.inbox.audit import record
from engine.inbox.inputs import decode_cursor, encode_cursor
from engine.inbox.notify import notify
from engine.inbox.principal import Changes, Principal

SERVICE_WINDOW = timedelta(hours=24)
MAX_SNOOZE = timedelta(days=365)
Status = Literal["open", "pending", "snoozed", "resolved"]
AiMode = Literal["auto", "draft", "off"]


class ConversationQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Status | None = None
    scope: Literal["mine", "unassigned", "team", "all"] = "all"
    team_id: uuid.UUID | None = None
    label_id: uuid.UUID | None = None
    channel_id: uuid.UUID | None = None
    q: str | None = Field(default=None, max_length=200)
    cursor: str | None = Field(default=None, max_length=300)
    limit: int = Field(default=50, ge=1, le=100)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # the contract speaks UTC
    return value


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    snoozed_until: datetime | None = None
    ai_mode: AiMode | None = None

    _utc = field_validator("snoozed_until")(_aware)


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee_id: uuid.UUID | None
    team_id: uuid.UUID | None = None


class LabelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_id: uuid.UUID


# --- reading --------------------------------------------------------------------------------------

def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


def view(row: asyncpg.Record | dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """A conversation as the contract spells it."""
    now = now or datetime.now(timezone.utc)
    last_inbound = row["last_inbound_at"]
    expires = last_inbound + SERVICE_WINDOW if last_inbound is not None else None
    last_message = None
    if row["lm_id"] is not None:
        last_message = {"id": row["lm_id"], "direction": row["lm_direction"], "type": row["lm_type"],
                        "text": row["lm_text"], "status": row["lm_status"], "created_at": _iso(row["lm_created_at"])}
    return {
        "id": str(row["id"]), "status": row["status"], "ai_mode": row["ai_mode"], "ai_state": row.get("ai_state"),
        "snoozed_until": _iso(row["snoozed_until"]),
        "assignee": {"id": str(row["assignee_id"]), "name": row["assignee_name"]} if row["assignee_id"] else None,
        "team": {"id": str(row["team_id"]), "name": row["team_name"]} if row["team_id"] else None,
        "unread_count": row["unread_count"], "last_inbound_at": _iso(last_inbound),
        "last_message_at": _iso(row["last_message_at"]),
        "window_expires_at": _iso(expires), "window_open": expires is not None and now < expires,
        "last_message": last_message,
        "contact": {"id": str(row["contact_id"]), "wa_id": row["wa_id"], "username": row["username"],
                    "bsuid": row["bsuid"], "name": row["contact_name"]},
        "channel": {"id": str(row["channel_id"]), "display_phone": row["display_phone"]},
        "labels": [{"id": str(label["id"]), "name": label["name"], "color": label["color"]} for label in row["labels"]],
    }


async def views(conn: asyncpg.Connection, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    rows = await conn.fetch(sql("inbox_conversations", "conversation_views"), tenant_id, ids)
    now = datetime.now(timezone.utc)
    return {row["id"]: view(row, now) for row in rows}


async def visible(conn: asyncpg.Connection, who: Principal, conversation_id: uuid.UUID, *,
                  lock: bool = False) -> asyncpg.Record:
    """The conversation's row if ``who`` may see it; otherwise NotFound, as if it did not exist.
    With ``lock`` the row is locked for update until the transaction ends."""
    query = "lock_conversation" if lock else "conversation_audience"
    row = await conn.fetchrow(sql("inbox_conversations", query), who.tenant_id, conversation_id)
    if row is None or not who.may_see(row["team_id"], row["assignee_id"]):
        raise NotFound(f"no conversation {conversation_id}")
    return row


async def get(conn: asyncpg.Connection, who: Principal, conversation_id: uuid.UUID) -> dict[str, Any]:
    who.require("conversation.read_own")
    await visible(conn, who, conversation_id)
    found = await views(conn, who.tenant_id, [conversation_id])
    return found[conversation_id]


def _like(text: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


def handle_like(q: str | None) -> str | None:
    """The pattern that finds a WhatsApp username or BSUID: the inbox shows usernames as "@name",
    so an agent may search them that way."""
    handle = q.lstrip("@").strip() if q else None
    return _like(handle) if handle else None


async def list_conversations(conn: asyncpg.Connection, who: Principal, query: ConversationQuery) -> dict[str, Any]:
    """Newest activity first, ``limit`` at a time; ``next_cursor`` continues after the last item
    (keyset on the last activity and the id, so pages neither repeat nor skip while rows are added)."""
    who.require("conversation.read_own")
    after_at: datetime | None = None
    after_id: uuid.UUID | None = None
    if query.cursor:
        after_at, key = decode_cursor(query.cursor)
        try:
            after_id = uuid.UUID(key)
        except ValueError:
            raise InvalidInput("the cursor is not one this API gave out") from None
    q = (query.q or "").strip() or None
    digits = re.sub(r"[\s+()-]", "", q) if q else None
    if digits is not None and (not digits.isdigit() or len(digits) < 3):
        digits = None
    rows = await conn.fetch(
        sql("inbox_conversations", "list_conversation_ids"), who.tenant_id, who.sees_all, who.user_id,
        list(who.team_ids), query.status, query.scope, query.team_id, query.label_id, query.channel_id,
        _like(q) if q else None, digits, q, after_at, after_id, query.limit + 1, handle_like(q))
    page, more = rows[:query.limit], len(rows) > query.limit
    found = await views(conn, who.tenant_id, [r["id"] for r in page])
    items = [found[r["id"]] for r in page if r["id"] in found]
    next_cursor = encode_cursor(page[-1]["sort_at"], str(page[-1]["id"])) if more and page else None
    return {"items": items, "next_cursor": next_cursor}


# --- changing -------------------------------------------------------------------------------------

def updated_event(changes: Changes, row: asyncpg.Record | dict[str, Any], **fields: Any) -> None:
    """``conversation.updated`` with its audience (team and assignee) and what changed."""
    changes.add("conversation.updated", {"conversation_id": row["id"], "team_id": row["team_id"],
                                         "assignee_id": row["assignee_id"], **fields})


async def update(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation_id: uuid.UUID,
                 patch: ConversationPatch, now: datetime | None = None) -> dict[str, Any]:
    who.require("conversation.label")
    given = patch.model_fields_set
    if not given:
        raise InvalidInput("give at least one of status, snoozed_until, ai_mode")
    current = await visible(conn, who, conversation_id, lock=True)
    now = now or datetime.now(timezone.utc)
    status: str = patch.status if "status" in given and patch.status else current["status"]
    snoozed_until = current["snoozed_until"]
    if "snoozed_until" in given:
        if patch.snoozed_until is not None and "status" not in given:
            status = "snoozed"
        elif patch.snoozed_until is None and "status" not in given and current["status"] == "snoozed":
            status = "open"
        snoozed_until = patch.snoozed_until
    if status == "snoozed":
        if snoozed_until is None:
            raise InvalidInput("snoozing needs snoozed_until, a time in the future")
        if not now < snoozed_until <= now + MAX_SNOOZE:
            raise InvalidInput("snoozed_until must be in the future and at most a year away")
    elif "snoozed_until" in given and patch.snoozed_until is not None:
        raise InvalidInput(f"snoozed_until only goes with status snoozed, not {status}")
    else:
        snoozed_until = None
    ai_mode = patch.ai_mode if "ai_mode" in given and patch.ai_mode else current["ai_mode"]
    try:
        row = await conn.fetchrow(sql("inbox_conversations", "update_state"), who.tenant_id, conversation_id, status,
                                  snoozed_until, ai_mode, "ai_mode" in given and bool(patch.ai_mode))
    except asyncpg.UniqueViolationError:
        raise Conflict("this customer already has another open conversation on this number; "
                       "continue there instead of reopening this one") from None
    changed = {k: v for k, v in (("status", status), ("ai_mode", ai_mode)) if v != current[k]}
    if snoozed_until != current["snoozed_until"]:
        changed["snoozed_until"] = _iso(snoozed_until)
    if changed:
        await record(conn, who, "conversation.update", str(conversation_id), changed)
        updated_event(changes, row, **changed)
        if "status" in changed:
            # resolving frees the assignee's capacity; reopening may put it back in its team's queue
            teams = {row["team_id"]} if row["team_id"] else set()
            if current["assignee_id"] is not None:
                teams |= {r["team_id"] for r in await conn.fetch(sql("inbox_assignment", "teams_of_user"),
                                                                 who.tenant_id, current["assignee_id"])}
            await assignment.drain_teams(conn, who.tenant_id, teams, changes)
    return (await views(conn, who.tenant_id, [conversation_id]))[conversation_id]


async def mark_read(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation_id: uuid.UUID) -> None:
    who.require("conversation.read_own")
    row = await visible(conn, who, conversation_id)
    if await conn.fetchval(sql("inbox_conversations", "mark_read"), who.tenant_id, conversation_id) is not None:
        await record(conn, who, "conversation.read", str(conversation_id))
        updated_event(changes, row, unread_count=0)


async def assign(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation_id: uuid.UUID,
                 request: AssignRequest) -> dict[str, Any]:
    """Supervisors assign to anyone and move between teams; an agent may only take an unassigned
    conversation they can see for themselves."""
    current = await visible(conn, who, conversation_id, lock=True)
    assignee_id = request.assignee_id
    team_id = request.team_id if "team_id" in request.model_fields_set else current["team_id"]
    if not who.can("conversation.assign"):
        who.require("conversation.take")
        if team_id != current["team_id"]:
            raise Forbidden(f"your role ({who.role}) may not move conversations between teams")
        if assignee_id != who.user_id:
            raise Forbidden(f"your role ({who.role}) may only take a conversation for yourself")
        if current["assignee_id"] not in (None, who.user_id):
            raise Conflict("someone else has already taken this conversation")
    if assignee_id is not None:
        user = await conn.fetchrow(sql("inbox_conversations", "assignable_user"), who.tenant_id, assignee_id)
        if user is None:
            raise NotFound(f"no user {assignee_id}")
        if not user["active"]:
            raise InvalidInput("this user is deactivated and cannot be assigned conversations")
    if team_id is not None and team_id != current["team_id"]:
        if await conn.fetchval(sql("inbox_conversations", "team_exists"), who.tenant_id, team_id) is None:
            raise NotFound(f"no team {team_id}")
    if assignee_id != current["assignee_id"] or team_id != current["team_id"]:
        row = await conn.fetchrow(sql("inbox_conversations", "update_assignment"), who.tenant_id, conversation_id,
                                  assignee_id, team_id)
        await record(conn, who, "conversation.assign", str(conversation_id),
                     {"assignee_id": str(assignee_id) if assignee_id else None,
                      "team_id": str(team_id) if team_id else None,
                      "previous_assignee_id": str(current["assignee_id"]) if current["assignee_id"] else None})
        updated_event(changes, row, assignee=True, team=team_id != current["team_id"])
        if assignee_id is not None and assignee_id != current["assignee_id"] and assignee_id != who.user_id:
            await notify(conn, who.tenant_id, changes, assignee_id, "assignment", conversation_id,
                         {"by": {"id": str(who.user_id), "name": who.name}})
        teams = {team_id} if team_id is not None else set()
        if current["assignee_id"] is not None and current["assignee_id"] != assignee_id:
            teams |= {r["team_id"] for r in await conn.fetch(sql("inbox_assignment", "teams_of_user"),
                                                             who.tenant_id, current["assignee_id"])}
        await assignment.drain_teams(conn, who.tenant_id, teams, changes)
    return (await views(conn, who.tenant_id, [conversation_id]))[conversation_id]


async def add_label(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation_id: uuid.UUID,
                    label_id: uuid.UUID) -> dict[str, Any]:
    who.require("conversation.label")
    row = await visible(conn, who, conversation_id, lock=True)
    if await conn.fetchval(sql("inbox_conversations", "label_exists"), who.tenant_id, label_id) is None:
        raise NotFound(f"no label {label_id}")
    if await conn.fetchval(sql("inbox_conversations", "add_label"), who.tenant_id, conversation_id, label_id):
        await record(conn, who, "conversation.label_add", str(conversation_id), {"label_id": str(label_id)})
        updated_event(changes, row, labels=True)
    return (await views(conn, who.tenant_id, [conversation_id]))[conversation_id]


async def remove_label(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation_id: uuid.UUID,
                       label_id: uuid.UUID) -> dict[str, Any]:
    who.require("conversation.label")
    row = await visible(conn, who, conversation_id, lock=True)
    if await conn.fetchval(sql("inbox_conversations", "label_exists"), who.tenant_id, label_id) is None:
        raise NotFound(f"no label {label_id}")
    if await conn.fetchval(sql("inbox_conversations", "remove_label"), who.tenant_id, conversation_id, label_id):
        await record(conn, who, "conversation.label_remove", str(conversation_id), {"label_id": str(label_id)})
        updated_event(changes, row, labels=True)
    return (await views(conn, who.tenant_id, [conversation_id]))[conversation_id]
