"""Storing one verified webhook delivery: parse → route → one transaction → result.

Everything of a delivery is written in one transaction, or nothing is: the raw receipt,
contacts, conversations, messages (``UNIQUE (tenant_id, wamid)`` makes a redelivery a no-op),
media to fetch, statuses (monotonic; a status for a message we do not know yet is kept and
adopted when the message appears) and template status changes. Only after the commit may the
caller acknowledge (200) and publish.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from engine.db.group_commit import GroupCommit
from engine.db.queries import sql
from engine.whatsapp.channels import ChannelRoute
from engine.whatsapp.events import InboundMessage, MediaContent, StatusUpdate, WebhookBatch

log = logging.getLogger("parlo.whatsapp.ingest")

# Statuses we store on messages; anything else Meta sends is kept in message_statuses only.
TRACKED_STATUSES = frozenset({"sent", "delivered", "read", "failed"})


@dataclass(frozen=True, slots=True)
class StoredMessage:
    tenant_id: uuid.UUID
    conversation_id: uuid.UUID
    message_id: int
    wamid: str
    type: str
    text: str | None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class StatusChange:
    tenant_id: uuid.UUID
    conversation_id: uuid.UUID
    message_id: int
    wamid: str
    status: str


@dataclass(slots=True)
class IngestResult:
    receipt_ids: list[int] = field(default_factory=list)
    new_messages: list[StoredMessage] = field(default_factory=list)
    duplicates: int = 0
    status_changes: list[StatusChange] = field(default_factory=list)
    statuses_pending: int = 0
    statuses_stale: int = 0
    ignored_phone_number_ids: set[str] = field(default_factory=set)
    conversations: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)


def _errors_json(update: StatusUpdate) -> list[dict[str, Any]] | None:
    if not update.errors:
        return None
    return [{"code": e.code, "title": e.title, "message": e.message, "details": e.details} for e in update.errors]


def _plan(batch: WebhookBatch, routes: dict[str, ChannelRoute]) -> tuple[
        IngestResult, list[tuple[ChannelRoute, InboundMessage]], list[tuple[ChannelRoute, StatusUpdate]]]:
    result = IngestResult()
    mentioned = {m.phone_number_id for m in batch.messages} | {u.phone_number_id for u in batch.statuses}
    result.ignored_phone_number_ids = (mentioned | batch.phone_number_ids) - routes.keys()
    # Rows are locked in one global order (contact, then conversation; statuses by wamid), so that
    # concurrent deliveries sharing contacts or messages wait for each other instead of deadlocking
    # (each deadlock costs a second and a 503). The sorts are stable: a conversation's messages keep
    # their delivery order (all of one customer's messages share their sender key).
    messages = sorted(((routes[m.phone_number_id], m) for m in batch.messages if m.phone_number_id in routes),
                      key=lambda rm: _lock_order(*rm))
    updates = sorted(((routes[u.phone_number_id], u) for u in batch.statuses if u.phone_number_id in routes),
                     key=lambda ru: (ru[0].tenant_id, ru[1].wamid))
    return result, messages, updates


def _lock_order(route: ChannelRoute, message: InboundMessage) -> tuple[uuid.UUID, str, uuid.UUID]:
    return route.tenant_id, message.sender, route.channel_id


def _single(batch: WebhookBatch, messages: list[tuple[ChannelRoute, InboundMessage]],
            updates: list[tuple[ChannelRoute, StatusUpdate]]) -> tuple[ChannelRoute, InboundMessage] | None:
    """The common delivery, one message of one number and nothing else: stored by one statement."""
    if len(messages) == 1 and not updates and not batch.template_updates and len(batch.phone_number_ids) == 1:
        return messages[0]
    return None


async def store(conn: asyncpg.Connection, batch: WebhookBatch, body: bytes, payload: Any,
                routes: dict[str, ChannelRoute]) -> IngestResult:
    """Write a parsed delivery in one transaction. ``routes`` must hold only channels whose app
    secret signed this delivery, so a delivery can never write into another app's tenants."""
    result, messages, updates = _plan(batch, routes)
    tenant_routes = {routes[p].tenant_id: routes[p] for p in batch.phone_number_ids if p in routes}

    if (single := _single(batch, messages, updates)) is not None:
        route, message = single
        row = await conn.fetchrow(sql("inbound", "ingest_single_message"),
                                  *_single_message_args(route, message, body, payload, batch))
        return _single_message_stored(route, message, row, result)

    async with conn.transaction():
        for route, message in messages:
            await _store_message(conn, route, message, result)
        for route, update in updates:
            await _store_status(conn, route, update, result)
        for template in batch.template_updates:
            owners = [r for r in routes.values() if r.waba_id == template.waba_id]
            if template.is_status_change and template.name and template.language:
                for tenant_id in {r.tenant_id for r in owners}:
                    await conn.execute(sql("inbound", "upsert_template_status"), tenant_id, template.waba_id,
                                       template.template_id, template.name, template.language,
                                       template.event.lower(), template.reason)
                    tenant_routes.setdefault(tenant_id, owners[0])

        digest = hashlib.sha256(body).hexdigest()
        rejected = [{"reason": r.reason} for r in batch.rejected]
        # A delivery normally concerns one tenant. One that spans several (numbers of different
        # tenants under one Meta app) is kept once without a tenant: no tenant sees another's data.
        owner = next(iter(tenant_routes.values())) if len(tenant_routes) == 1 else None
        receipt_id = await conn.fetchval(
            sql("inbound", "insert_receipt"), owner.tenant_id if owner else None, owner.channel_id if owner else None,
            digest, payload, len(result.new_messages), len(result.status_changes), result.duplicates, rejected)
        result.receipt_ids.append(receipt_id)
    return result


async def store_grouped(group: GroupCommit, batch: WebhookBatch, body: bytes, payload: Any,
                        routes: dict[str, ChannelRoute]) -> IngestResult | None:
    """:func:`store` for the common delivery (one message of one number), committed together with
    other deliveries' by ``group`` (a :class:`GroupCommit` of ``ingest_single_message``); None for
    any other delivery, which the caller stores with :func:`store`."""
    result, messages, updates = _plan(batch, routes)
    if (single := _single(batch, messages, updates)) is None:
        return None
    route, message = single
    row = await group.fetchrow(*_single_message_args(route, message, body, payload, batch),
                               order=_lock_order(route, message))
    return _single_message_stored(route, message, row, result)


def _single_message_args(route: ChannelRoute, message: InboundMessage, body: bytes, payload: Any,
                         batch: WebhookBatch) -> tuple[Any, ...]:
    """The arguments of ``ingest_single_message``: the message's, then the receipt's."""
    return (*_message_args(route, message), hashlib.sha256(body).hexdigest(), payload,
            [{"reason": r.reason} for r in batch.rejected])


def _single_message_stored(route: ChannelRoute, message: InboundMessage, row: asyncpg.Record | None,
                           result: IngestResult) -> IngestResult:
    assert row is not None  # the receipt row is always there
    result.receipt_ids.append(row["o_receipt_id"])
    _message_stored(route, message, row, result)
    return result


def _message_args(route: ChannelRoute, message: InboundMessage) -> tuple[Any, ...]:
    """The arguments of parlo_ingest_message (schema/0012_bsuid.sql); the profile name and username
    are the ones the parser found for the sender in the message's change."""
    media = message.content if isinstance(message.content, MediaContent) and message.content.media_id else None
    return (route.tenant_id, route.channel_id, message.from_wa_id, message.from_user_id, message.from_parent_user_id,
            message.username, message.profile_name, message.wamid, str(message.type), message.text,
            dict(message.raw), message.context_wamid, message.timestamp, media.media_id if media else None,
            media.mime_type if media else None, media.sha256 if media else None)


async def _store_message(conn: asyncpg.Connection, route: ChannelRoute, message: InboundMessage,
                         result: IngestResult) -> None:
    row = await conn.fetchrow(sql("inbound", "ingest_message"), *_message_args(route, message))
    _message_stored(route, message, row, result)


def _message_stored(route: ChannelRoute, message: InboundMessage, row: asyncpg.Record | None,
                    result: IngestResult) -> None:
    if row is None or row["o_message_id"] is None:
        result.duplicates += 1
        return
    conversation = {key[2:]: value for key, value in row.items() if key not in ("o_message_id", "o_receipt_id")}
    conversation_id = conversation["id"]
    result.conversations[conversation_id] = conversation
    result.new_messages.append(StoredMessage(route.tenant_id, conversation_id, row["o_message_id"], message.wamid,
                                             str(message.type), message.text, message.timestamp))


async def _store_status(conn: asyncpg.Connection, route: ChannelRoute, update: StatusUpdate,
                        result: IngestResult) -> None:
    inserted = await conn.fetchrow(
        sql("inbound", "insert_status"), route.tenant_id, update.wamid, update.raw_status, update.timestamp,
        _errors_json(update), dict(update.pricing) if update.pricing else None, dict(update.raw))
    if inserted is None:
        return  # this exact status was stored before: a redelivery
    if inserted["message_id"] is None:
        result.statuses_pending += 1
        return
    if update.raw_status not in TRACKED_STATUSES:
        return
    advanced = await conn.fetchrow(sql("inbound", "advance_message_status"), route.tenant_id, update.wamid,
                                   update.raw_status, _errors_json(update), update.timestamp)
    if advanced is None:
        result.statuses_stale += 1
        return
    if update.recipient_user_id is not None:  # once per step forward, so at most three times a message
        await conn.execute(sql("inbound", "learn_bsuid"), route.tenant_id, advanced["conversation_id"],
                           update.recipient_user_id, update.recipient_parent_user_id)
    result.status_changes.append(StatusChange(route.tenant_id, advanced["conversation_id"], advanced["id"],
                                              update.wamid, advanced["status"]))


async def _apply_adopted(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> str | None:
    """Apply statuses just attached to their message, oldest first; the last status that moved one."""
    moved = None
    for row in sorted(rows, key=lambda r: (str(r["tenant_id"]), r["wamid"], r["occurred_at"])):
        if row["status"] not in TRACKED_STATUSES:
            continue
        advanced = await conn.fetchrow(sql("inbound", "advance_message_status"), row["tenant_id"], row["wamid"],
                                       row["status"], row["errors"], row["occurred_at"])
        if advanced is not None:
            moved = advanced["status"]
    return moved


async def adopt_pending_statuses(conn: asyncpg.Connection, tenant_id: uuid.UUID, wamid: str, message_id: int) -> str | None:
    """When an outbound message learns its wamid, apply statuses that arrived before it did.
    Returns the message's status afterwards if it moved."""
    return await _apply_adopted(conn, await conn.fetch(sql("inbound", "adopt_pending_statuses"), tenant_id, wamid,
                                                       message_id))


async def adopt_orphans(conn: asyncpg.Connection) -> int:
    """Attach statuses that arrived while their message's wamid was being recorded (both
    transactions open at once, neither seeing the other) and apply them. Returns how many."""
    async with conn.transaction():
        rows = await conn.fetch(sql("inbound", "adopt_orphans"))
        await _apply_adopted(conn, rows)
    return len(rows)
