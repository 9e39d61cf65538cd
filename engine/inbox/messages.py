"""Messages of a conversation: reading them page by page, and an agent's sends (text, reaction,
template) through the transactional outbox of :mod:`engine.whatsapp.outbound`.

A send is refused before it reaches Meta when the 24-hour window is closed (``ServiceWindowClosed``,
409) unless it is a template, and each agent may send at most :data:`SEND_LIMIT` (429 beyond). A
person's answer pauses the assistant in that conversation (``conversations.ai_state``); ``ai_mode``
stays as the agents set it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput, NotFound
from engine.inbox import templates_view
from engine.inbox.audit import record
from engine.inbox.conversations import visible
from engine.inbox.principal import Changes, Principal
from engine.ratelimit import Limit, RateLimiter
from engine.whatsapp import outbound
from engine.whatsapp.errors import lookup

SEND_LIMIT = Limit("agent_sends", 30, 10.0)
MAX_TEXT = outbound.MAX_TEXT


class MessageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    before: int | None = Field(default=None, ge=1, le=2**62)
    after: int | None = Field(default=None, ge=0, le=2**62)
    limit: int = Field(default=50, ge=1, le=200)

    @model_validator(mode="after")
    def _one_direction(self) -> MessageQuery:
        if self.before is not None and self.after is not None:
            raise ValueError("give before or after, not both")
        return self


class TextSend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    reply_to: int | None = Field(default=None, ge=1, le=2**62)


class ReactionSend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["reaction"]
    message_id: int = Field(ge=1, le=2**62)
    emoji: str = Field(max_length=32)  # "" removes; one emoji may be several code points (families, flags)


class TemplateSend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["template"]
    name: str = Field(min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$")
    language: str = Field(min_length=2, max_length=15, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
    params: list[str] = Field(default_factory=list, max_length=60)


class SendRequest(RootModel[Annotated[TextSend | ReactionSend | TemplateSend, Field(discriminator="type")]]):
    """The body of a send: one of the three shapes, told apart by ``type``."""


# --- reading --------------------------------------------------------------------------------------

def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


def _error(raw: Any) -> dict[str, Any] | None:
    if not raw:
        return None
    first = raw[0] if isinstance(raw, list) else raw
    if not isinstance(first, dict):
        return {"code": None, "title": None, "reason": str(first)[:500]}
    code = first.get("code")
    spec = lookup(code) if isinstance(code, int) else None
    reason = first.get("reason_en") or (spec.reason_en if spec else None) or first.get("message") or first.get("title")
    return {"code": code, "title": first.get("title"), "reason": reason}


def _template(payload: dict[str, Any]) -> dict[str, Any]:
    params = [p.get("text") for c in payload.get("components") or [] if isinstance(c, dict)
              for p in c.get("parameters") or [] if isinstance(p, dict)]
    return {"name": payload.get("name"), "language": payload.get("language"), "params": params}


def view(row: asyncpg.Record) -> dict[str, Any]:
    """A message as the contract spells it."""
    payload: dict[str, Any] = dict(row["payload"] or {})
    typed = payload.get(row["type"]) if row["direction"] == "inbound" else {
        k: v for k, v in payload.items() if k not in ("to", "recipient", "phone_number_id", "ai")}
    media = None
    if row["media_pk"] is not None:
        media = {"id": row["media_pk"], "mime_type": row["media_mime"],
                 "filename": (typed or {}).get("filename") if isinstance(typed, dict) else None,
                 "size": row["media_size"], "url": f"/api/media/{row['media_pk']}"}
    return {
        "id": row["id"], "conversation_id": str(row["conversation_id"]), "direction": row["direction"],
        "type": row["type"], "text": row["body"], "status": row["status"], "error": _error(row["error"]),
        "author": {"id": str(row["author_id"]), "name": row["author_name"]} if row["author_id"] else None,
        "wamid": row["wamid"], "created_at": _iso(row["created_at"]), "sent_at": _iso(row["sent_at"]),
        "media": media,
        "reply_to": {"id": row["reply_id"], "text": row["reply_text"], "direction": row["reply_direction"]}
        if row["reply_id"] is not None else None,
        "reactions": list(row["reactions"]),
        "template": _template(payload) if row["type"] == "template" and row["direction"] == "outbound" else None,
        "ai": payload.get("ai") if row["direction"] == "outbound" else None,
        "payload": typed if isinstance(typed, dict) else {},
    }


async def views(conn: asyncpg.Connection, tenant_id: uuid.UUID, ids: list[int]) -> dict[int, dict[str, Any]]:
    return {r["id"]: view(r) for r in await conn.fetch(sql("inbox_messages", "message_views"), tenant_id, ids)}


async def list_messages(conn: asyncpg.Connection, who: Principal, conversation_id: uuid.UUID,
                        query: MessageQuery) -> dict[str, Any]:
    """Oldest to newest. Without ``after``: the newest page (or the one just before ``before``),
    ``has_more`` saying older ones exist; with ``after``: the page just after it, ``has_more``
    saying newer ones exist."""
    who.require("conversation.read_own")
    await visible(conn, who, conversation_id)
    if query.after is not None:
        rows = await conn.fetch(sql("inbox_messages", "message_page_after"), who.tenant_id, conversation_id,
                                query.after, query.limit + 1)
        ids = [r["id"] for r in rows[:query.limit]]
    else:
        rows = await conn.fetch(sql("inbox_messages", "message_page_newest"), who.tenant_id, conversation_id,
                                query.before, query.limit + 1)
        ids = sorted(r["id"] for r in rows[:query.limit])
    found = await views(conn, who.tenant_id, ids)
    return {"items": [found[i] for i in ids if i in found], "has_more": len(rows) > query.limit}


# --- sending --------------------------------------------------------------------------------------

async def may_send(conn: asyncpg.Connection, who: Principal, conversation_id: uuid.UUID,
                   limiter: RateLimiter | None) -> asyncpg.Record:
    """The checks every send makes first: visible, allowed, within the agent's rate limit."""
    row = await visible(conn, who, conversation_id)
    who.require("conversation.reply")
    if limiter is not None:
        await limiter.hit(SEND_LIMIT, f"{who.tenant_id}:{who.user_id}")
    return row


async def _target_message(conn: asyncpg.Connection, who: Principal, conversation_id: uuid.UUID,
                          message_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(sql("inbox_messages", "message_in_conversation"), who.tenant_id, conversation_id,
                              message_id)
    if row is None:
        raise NotFound(f"no message {message_id} in this conversation")
    if row["wamid"] is None:
        raise Conflict("that message has not reached WhatsApp yet; try again once it is sent")
    return row


async def sent(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation: asyncpg.Record,
               queued: outbound.Queued, kind: str) -> dict[str, Any]:
    """What every send does after queueing: audit, the assistant paused (a person answered; a
    reaction is not an answer), live events, the message as the API returns it."""
    assert queued.message_id is not None
    await record(conn, who, "message.send", str(conversation["id"]), {"message_id": queued.message_id, "type": kind})
    if kind != "reaction" and await conn.fetchval(sql("inbox_messages", "pause_ai"), who.tenant_id, conversation["id"]):
        changes.add("conversation.updated", {"conversation_id": conversation["id"], "team_id": conversation["team_id"],
                                             "assignee_id": conversation["assignee_id"], "ai_state": "paused"})
    message = (await views(conn, who.tenant_id, [queued.message_id]))[queued.message_id]
    changes.add("message.created", {"conversation_id": conversation["id"], "team_id": conversation["team_id"],
                                    "assignee_id": conversation["assignee_id"], "message_id": queued.message_id,
                                    "wamid": None, "type": kind, "text": message["text"], "direction": "outbound"})
    return message


async def send(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation_id: uuid.UUID,
               request: TextSend | ReactionSend | TemplateSend, *, limiter: RateLimiter | None = None,
               now: datetime | None = None) -> dict[str, Any]:
    conversation = await may_send(conn, who, conversation_id, limiter)
    tenant = who.tenant_id
    if isinstance(request, TextSend):
        if not request.text.strip():
            raise InvalidInput("the text is blank")
        reply_to = None
        if request.reply_to is not None:
            reply_to = (await _target_message(conn, who, conversation_id, request.reply_to))["wamid"]
        queued = await outbound.queue_text(conn, tenant, conversation_id, request.text, reply_to=reply_to,
                                           author_id=who.user_id, now=now)
    elif isinstance(request, ReactionSend):
        if any(ch.isspace() for ch in request.emoji):
            raise InvalidInput("a reaction is one emoji (or empty to remove it)")
        target = await _target_message(conn, who, conversation_id, request.message_id)
        if target["type"] == "reaction":
            raise InvalidInput("a reaction cannot be reacted to")
        queued = await outbound.queue_reaction(conn, tenant, conversation_id, target["wamid"], request.emoji,
                                               author_id=who.user_id, now=now)
    else:
        template = await conn.fetchrow(sql("inbox_messages", "approved_template"), tenant, conversation_id,
                                       request.name, request.language)
        if template is None:
            raise InvalidInput(f"no approved template {request.name!r} in {request.language!r} for this number")
        components = list(template["components"] or [])
        send_components = templates_view.send_components(components, request.params)
        queued = await outbound.queue_template(conn, tenant, conversation_id, request.name, request.language,
                                               send_components, author_id=who.user_id)
        rendered = templates_view.render(components, request.params)
        text = "\n\n".join(part for part in (rendered["header"], rendered["body"], rendered["footer"]) if part)
        await conn.execute(sql("inbox_messages", "set_body"), tenant, queued.message_id, text or None)
    return await sent(conn, who, changes, conversation, queued, request.type)
