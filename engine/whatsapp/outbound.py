"""Queueing outbound WhatsApp messages: the transactional outbox.

An outbound message is written ``queued`` in the same transaction as the action that caused it,
together with its outbox row; the OutboxDispatcher sends it later. Free-form messages are refused
here, before they reach Meta, when the customer's 24-hour service window is closed; templates
may always be sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput, NotFound

SERVICE_WINDOW = timedelta(hours=24)
MEDIA_KINDS = ("image", "audio", "video", "document", "sticker")
MAX_TEXT = 4096


class ServiceWindowClosed(Conflict):
    """A free-form message to a customer who has not written in the last 24 hours."""


@dataclass(frozen=True, slots=True)
class Queued:
    message_id: int | None
    outbox_id: int


async def _target(conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(sql("outbound", "conversation_for_send"), conversation_id, tenant_id)
    if row is None:
        raise NotFound(f"no conversation {conversation_id} in this tenant")
    if not row["channel_active"]:
        raise Conflict("the conversation's WhatsApp number has been removed; messages cannot be sent on it")
    return row


def _require_window(target: asyncpg.Record, now: datetime | None = None) -> None:
    last = target["last_inbound_at"]
    now = now or datetime.now(timezone.utc)
    if last is None or now - last >= SERVICE_WINDOW:
        since = "never wrote" if last is None else f"last wrote at {last:%Y-%m-%d %H:%M} UTC"
        raise ServiceWindowClosed(
            f"the 24-hour customer service window is closed (the customer {since}); only a template can be sent")


async def require_open_window(conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID,
                              now: datetime | None = None) -> None:
    """Raise ServiceWindowClosed unless a free-form message may be sent now (check before uploading)."""
    _require_window(await _target(conn, tenant_id, conversation_id), now)


def media_kind(mime_type: str) -> str:
    """Which WhatsApp media message carries a file of this type."""
    major = mime_type.split("/", 1)[0]
    if mime_type == "image/webp":
        return "sticker"
    return {"image": "image", "video": "video", "audio": "audio"}.get(major, "document")


def _address(target: asyncpg.Record) -> dict[str, str]:
    """Where Meta is to deliver: the customer's phone number (``to``) when we know it, as Meta
    recommends, else their business-scoped user id (``recipient``): a customer who adopted a username
    may never have shown us a number."""
    if target["wa_id"]:
        return {"to": target["wa_id"]}
    return {"recipient": target["bsuid"]}


async def _queue(conn: asyncpg.Connection, target: asyncpg.Record, *, type_: str, body: str | None,
                 payload: dict[str, Any], reply_to: str | None, author_id: uuid.UUID | None,
                 annotations: dict[str, Any] | None = None) -> Queued:
    payload = {**_address(target), "phone_number_id": target["phone_number_id"], **payload}
    # annotations (e.g. the assistant's run and sources) stay with the message, never go to Meta
    stored = {**payload, **annotations} if annotations else payload
    async with conn.transaction():
        message = await conn.fetchrow(sql("outbound", "insert_outbound_message"), target["tenant_id"], target["id"],
                                      target["channel_id"], type_, body, stored, reply_to, author_id)
        await conn.execute(sql("outbound", "touch_conversation_outbound"), target["id"])
        outbox_id = await conn.fetchval(sql("outbound", "insert_outbox"), target["tenant_id"], "send", message["id"], payload)
        await conn.execute(sql("outbound", "notify_outbox"), str(outbox_id))
    return Queued(message["id"], outbox_id)


async def queue_text(conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID, body: str, *,
                     reply_to: str | None = None, author_id: uuid.UUID | None = None,
                     now: datetime | None = None, annotations: dict[str, Any] | None = None) -> Queued:
    body = body.strip()
    if not body or len(body) > MAX_TEXT:
        raise InvalidInput(f"a text message must be 1 to {MAX_TEXT} characters")
    target = await _target(conn, tenant_id, conversation_id)
    _require_window(target, now)
    return await _queue(conn, target, type_="text", body=body, payload={"kind": "text", "body": body, "reply_to": reply_to},
                        reply_to=reply_to, author_id=author_id, annotations=annotations)


async def queue_media(conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID, kind: str, *,
                      media_id: str | None = None, link: str | None = None, caption: str | None = None,
                      filename: str | None = None, reply_to: str | None = None, author_id: uuid.UUID | None = None,
                      now: datetime | None = None) -> Queued:
    if kind not in MEDIA_KINDS:
        raise InvalidInput(f"media kind must be one of {', '.join(MEDIA_KINDS)}")
    if (media_id is None) == (link is None):
        raise InvalidInput("give exactly one of an uploaded media id or a link")
    target = await _target(conn, tenant_id, conversation_id)
    _require_window(target, now)
    payload = {"kind": kind, "media_id": media_id, "link": link, "caption": caption, "filename": filename,
               "reply_to": reply_to}
    return await _queue(conn, target, type_=kind, body=caption, payload=payload, reply_to=reply_to, author_id=author_id)


async def queue_template(conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID, name: str,
                         language: str, components: list[dict[str, Any]] | None = None, *,
                         author_id: uuid.UUID | None = None) -> Queued:
    if not name or not language:
        raise InvalidInput("a template needs a name and a language code")
    target = await _target(conn, tenant_id, conversation_id)
    payload = {"kind": "template", "name": name, "language": language, "components": components or []}
    return await _queue(conn, target, type_="template", body=f"[template {name}/{language}]", payload=payload,
                        reply_to=None, author_id=author_id)


async def queue_reaction(conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID,
                         target_wamid: str, emoji: str, *, author_id: uuid.UUID | None = None,
                         now: datetime | None = None) -> Queued:
    target = await _target(conn, tenant_id, conversation_id)
    _require_window(target, now)
    payload = {"kind": "reaction", "target_wamid": target_wamid, "emoji": emoji}
    return await _queue(conn, target, type_="reaction", body=emoji or None, payload=payload, reply_to=None,
                        author_id=author_id)


async def queue_mark_read(conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID,
                          wamid: str) -> Queued:
    target = await _target(conn, tenant_id, conversation_id)
    payload = {"kind": "mark_read", "wamid": wamid, "phone_number_id": target["phone_number_id"]}
    async with conn.transaction():
        outbox_id = await conn.fetchval(sql("outbound", "insert_outbox"), tenant_id, "mark_read", None, payload)
        await conn.execute(sql("outbound", "notify_outbox"), str(outbox_id))
    return Queued(None, outbox_id)


async def conversation_with(conn: asyncpg.Connection, tenant_id: uuid.UUID, wa_id: str,
                            phone_number_id: str | None = None) -> uuid.UUID:
    """The open conversation with a customer's number on a tenant's channel, created if needed."""
    wa_id = wa_id.strip().lstrip("+").replace(" ", "")
    if not wa_id.isdigit() or not 6 <= len(wa_id) <= 20:
        raise InvalidInput(f"{wa_id[:30]!r} is not a phone number in international format (digits, country code first)")
    channel = await conn.fetchrow(sql("outbound", "tenant_channel"), tenant_id, phone_number_id)
    if channel is None:
        raise NotFound("this tenant has no active WhatsApp number" +
                       (f" with phone number id {phone_number_id}" if phone_number_id else "") + " (see `parlo channel add`)")
    async with conn.transaction():
        contact_id = await conn.fetchval(sql("inbound", "upsert_contact"), tenant_id, wa_id, None)
        existing = await conn.fetchval(sql("inbound", "find_active_conversation"), tenant_id, channel["id"], contact_id)
        if existing is not None:
            return existing
        created = await conn.fetchval(sql("inbound", "create_conversation"), tenant_id, channel["id"], contact_id)
        return created or await conn.fetchval(sql("inbound", "find_active_conversation"), tenant_id, channel["id"],
                                              contact_id)


async def list_outbox(conn: asyncpg.Connection, *, state: str | None = None, tenant_id: uuid.UUID | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
    if state is not None and state not in ("pending", "in_flight", "done", "dead"):
        raise InvalidInput("state must be one of pending, in_flight, done, dead")
    return [dict(r) for r in await conn.fetch(sql("outbound", "list_outbox"), state, tenant_id, limit)]


async def retry(conn: asyncpg.Connection, outbox_id: int) -> None:
    """Put a dead (failed) row back in the queue, e.g. after the operator fixed the cause."""
    async with conn.transaction():
        row = await conn.fetchrow(sql("outbound", "retry_outbox"), outbox_id)
        if row is None:
            raise NotFound(f"no failed outbox row {outbox_id} (only failed rows can be retried)")
        if row["message_id"] is not None:
            await conn.execute(sql("outbound", "message_requeued"), row["message_id"])
        await conn.execute(sql("tenants", "audit"), row["tenant_id"], "cli", "outbox.retry", str(outbox_id), {})
        await conn.execute(sql("outbound", "notify_outbox"), str(outbox_id))
