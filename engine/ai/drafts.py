"""What the assistant is asked when an agent wants a draft, or a conversation an auto-reply: the
customer's messages since the business last wrote (a burst of three is one question), the
conversation before them as history, and the business's facts and the sites it lets the assistant
search."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from engine.ai.pipeline import AskRequest
from engine.ai.providers.base import ChatMessage
from engine.ai.web_search import tenant_domains
from engine.errors import Conflict
from engine.inbox import conversations
from engine.inbox.principal import Principal

HISTORY = 20


async def tenant_context(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: uuid.UUID) -> dict[str, Any]:
    """The business's name and facts (tenants.settings) for the stable prompt prefix, and the
    sites its assistant may search (none: web search off)."""
    row = await conn.fetchrow("SELECT name, settings FROM tenants WHERE id = $1", tenant_id)
    if row is None:
        return {"business": "our business", "business_facts": "", "web_search_domains": ()}
    settings = row["settings"] or {}
    return {"business": settings.get("business_name") or row["name"],
            "business_facts": str(settings.get("business_facts") or "")[:4000],
            "web_search_domains": tenant_domains(settings, tenant_id)}


async def conversation_request(conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID, *,
                               purpose: str) -> AskRequest:
    rows = await conn.fetch(
        "SELECT direction, type, body FROM messages WHERE tenant_id = $1 AND conversation_id = $2 "
        "AND type IN ('text', 'button', 'interactive', 'template') AND body IS NOT NULL "
        "ORDER BY id DESC LIMIT $3", tenant_id, conversation_id, HISTORY)
    rows = list(reversed(rows))
    tail: list[str] = []
    for row in reversed(rows):  # the customer's messages after the last reply
        if row["direction"] != "inbound":
            break
        tail.insert(0, row["body"])
    if not tail:
        raise Conflict("the customer has not written since the last reply: there is nothing to answer")
    history = [ChatMessage("user" if r["direction"] == "inbound" else "assistant", r["body"])
               for r in rows[:len(rows) - len(tail)]]
    failures = await conn.fetchval("SELECT ai_failures FROM conversations WHERE id = $1 AND tenant_id = $2",
                                   conversation_id, tenant_id)
    context: dict[str, Any] = await tenant_context(conn, tenant_id)
    return AskRequest(tenant_id, "\n".join(tail), conversation_id=conversation_id, history=history,
                      purpose=purpose, failures=int(failures or 0), **context)


async def draft_request(conn: asyncpg.Connection, who: Principal, conversation_id: uuid.UUID) -> AskRequest:
    """An agent's draft: they must be allowed to reply in a conversation they can see."""
    who.require("conversation.reply")
    await conversations.get(conn, who, conversation_id)  # 404 when not visible
    return await conversation_request(conn, who.tenant_id, conversation_id, purpose="draft")


def request_as_dict(request: AskRequest) -> dict[str, Any]:
    """An AskRequest as plain values (to cross a Ray boundary)."""
    return {"tenant_id": str(request.tenant_id), "text": request.text,
            "conversation_id": str(request.conversation_id) if request.conversation_id else None,
            "history": [{"role": m.role, "text": m.text} for m in request.history], "business": request.business,
            "business_facts": request.business_facts, "purpose": request.purpose, "failures": request.failures,
            "language": request.language, "web_search_domains": list(request.web_search_domains)}


def request_from_dict(data: dict[str, Any]) -> AskRequest:
    return AskRequest(uuid.UUID(data["tenant_id"]), data["text"],
                      conversation_id=uuid.UUID(data["conversation_id"]) if data.get("conversation_id") else None,
                      history=[ChatMessage(m["role"], m["text"]) for m in data.get("history", [])],
                      business=data.get("business") or "our business", business_facts=data.get("business_facts") or "",
                      purpose=data.get("purpose", "ask"), failures=int(data.get("failures", 0)),
                      language=data.get("language"), web_search_domains=tuple(data.get("web_search_domains") or ()))
