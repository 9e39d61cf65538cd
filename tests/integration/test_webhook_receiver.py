"""The inbound path end to end, on a real PostgreSQL: WebhookReceiver.handshake/receive → parse →
one ingest transaction. Every test asserts the exact number of rows in each table it can touch."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from cryptography.fernet import Fernet

from bench.simulator import payloads as p
from bench.simulator.webhooks import encode, sign
from engine import tenants
from engine.crypto import SecretBox
from engine.db.pool import connect, create_pool
from engine.db.queries import sql
from engine.errors import ServiceUnavailable
from engine.inbox import contacts as inbox_contacts
from engine.inbox import conversations as inbox_conversations
from engine.inbox.contacts import ContactQuery
from engine.inbox.conversations import ConversationQuery
from engine.inbox.principal import Principal
from engine.tenants import Tenant
from engine.whatsapp import channels
from engine.whatsapp.channels import Channel
from engine.whatsapp.ingest import adopt_pending_statuses
from engine.whatsapp.webhook import WebhookOutcome, WebhookReceiver

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "whatsapp"

# The recorded payloads name this WhatsApp Business Account and number.
WABA_A, PNID_A, DISPLAY_A = "102290129340398", "106540352242922", "15550783881"
WABA_B, PNID_B, DISPLAY_B = "300000000000003", "200000000000002", "390200000002"
SECRET_A, SECRET_B = "app-secret-acme", "app-secret-beta"
USER = "16505551234"

TABLES = ("webhook_receipts", "contacts", "conversations", "messages", "media", "message_statuses", "templates")


def rows(**expected: int) -> dict[str, int]:
    unknown = set(expected) - set(TABLES)
    assert not unknown, unknown
    return {t: expected.get(t, 0) for t in TABLES}


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow("SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in TABLES))
    return dict(row)


def recorded_bytes(name: str) -> bytes:
    return (DATA / f"{name}.json").read_bytes()


def recorded(name: str) -> dict[str, Any]:
    return json.loads(recorded_bytes(name))


def recorded_message(name: str) -> dict[str, Any]:
    return recorded(name)["entry"][0]["changes"][0]["value"]["messages"][0]


def ts(seconds: int | str) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=UTC)


@dataclass
class Env:
    db: asyncpg.Connection
    pool: asyncpg.Pool
    box: SecretBox
    receiver: WebhookReceiver
    acme: Tenant
    beta: Tenant
    channel_a: Channel
    channel_b: Channel

    async def deliver(self, payload: dict[str, Any] | bytes, secret: str = SECRET_A) -> WebhookOutcome:
        body = payload if isinstance(payload, bytes) else encode(payload)
        return await self.receiver.receive(body, sign(body, secret))


async def make_env(db: asyncpg.Connection, url: str) -> tuple[Env, asyncpg.Pool]:
    box = SecretBox(Fernet.generate_key().decode())
    acme = await tenants.create(db, "Acme")
    beta = await tenants.create(db, "Beta")
    channel_a = await channels.add(db, box, acme.id, phone_number_id=PNID_A, waba_id=WABA_A, app_secret=SECRET_A,
                                   verify_token="verify-acme", access_token="token-acme")
    channel_b = await channels.add(db, box, beta.id, phone_number_id=PNID_B, waba_id=WABA_B, app_secret=SECRET_B,
                                   verify_token="verify-beta", access_token="token-beta")
    pool = await create_pool(url, max_size=8)
    receiver = WebhookReceiver(pool, box, max_bytes=256 * 1024)
    return Env(db, pool, box, receiver, acme, beta, channel_a, channel_b), pool


@pytest.fixture
async def env(db: asyncpg.Connection, database_url: str) -> AsyncIterator[Env]:
    made, pool = await make_env(db, database_url)
    try:
        yield made
    finally:
        await pool.close()


async def outbound(env: Env, wamid: str | None, *, tenant: Tenant | None = None, channel: Channel | None = None,
                   to: str = USER, status: str = "sent") -> int:
    """An outbound message as the outbox leaves it: a row with its wamid (or none yet) and a status."""
    tenant = tenant or env.acme
    channel = channel or env.channel_a
    contact = await env.db.fetchval(
        "INSERT INTO contacts (tenant_id, wa_id) VALUES ($1, $2) "
        "ON CONFLICT (tenant_id, wa_id) DO UPDATE SET updated_at = now() RETURNING id", tenant.id, to)
    conversation = await env.db.fetchval(
        "SELECT id FROM conversations WHERE tenant_id = $1 AND channel_id = $2 AND contact_id = $3",
        tenant.id, channel.id, contact)
    if conversation is None:
        conversation = await env.db.fetchval(
            "INSERT INTO conversations (tenant_id, channel_id, contact_id) VALUES ($1, $2, $3) RETURNING id",
            tenant.id, channel.id, contact)
    return await env.db.fetchval(
        "INSERT INTO messages (tenant_id, conversation_id, channel_id, direction, wamid, type, body, status) "
        "VALUES ($1, $2, $3, 'outbound', $4, 'text', 'hello', $5) RETURNING id",
        tenant.id, conversation, channel.id, wamid, status)


def status_body(wamid: str, state: str, at: int, *, pnid: str = PNID_A, waba: str = WABA_A, **kwargs: Any) -> bytes:
    item = p.status(wamid, state, USER, timestamp=at, conversation_id="c0ffee", expiration_timestamp=at + 86400,
                    **kwargs)
    return encode(p.status_webhook(item, waba_id=waba, phone_number_id=pnid, display_phone_number=DISPLAY_A))


def text_payload(wamid: str, body: str = "ciao", *, sender: str = USER, at: int = 1750000000,
                 pnid: str = PNID_A, waba: str = WABA_A) -> dict[str, Any]:
    return p.inbound(p.text_message(sender, body, wamid=wamid, timestamp=at), waba_id=waba, phone_number_id=pnid,
                     display_phone_number=DISPLAY_A, profile_name="Sheena Nelson")


# --- 1. handshake --------------------------------------------------------------------------------


async def test_handshake_echoes_the_challenge_only_for_a_known_verify_token(env: Env) -> None:
    assert await env.receiver.handshake("subscribe", "verify-acme", "1158201444") == "1158201444"
    assert await env.receiver.handshake("subscribe", "verify-beta", "42") == "42"
    for mode, token, challenge in [
        ("subscribe", "verify-nobody", "1"),  # wrong token
        ("subscribe", "verify-acme ", "1"),
        ("unsubscribe", "verify-acme", "1"),  # wrong mode
        ("SUBSCRIBE", "verify-acme", "1"),
        (None, "verify-acme", "1"),  # missing
        ("subscribe", None, "1"),
        ("subscribe", "", "1"),
        ("subscribe", "verify-acme", None),
        ("subscribe", "x" * 5000, "1"),
    ]:
        assert await env.receiver.handshake(mode, token, challenge) is None, (mode, token, challenge)

    await channels.remove(env.db, PNID_A)
    assert await env.receiver.handshake("subscribe", "verify-acme", "1") is None
    assert await counts(env.db) == rows()


# --- 2. every recorded message type --------------------------------------------------------------

MEDIA = {
    "message_image": ("1003383421387256", "image/jpeg", "SfInY0gHZ6ZcqIQ3QH5gjAPC5/A1Y2Bmr1Tz2jK7ZP4="),
    "message_audio_voice": ("1236350287490060", "audio/ogg; codecs=opus",
                            "m04pFf2ERdaopTyFkGPA0+bX3i+YY2dYgVFwOgDLSDI="),
    "message_video": ("1166846181421424", "video/mp4", "Jh+2ij6PzUv/J2y+grrtegr/ZMzRxkEPwc24Oyib4s0="),
    "message_document": ("1037543291543636", "application/pdf", "grwfwe/ZPx0wAbdfbdeFUNItPZ0RylL8gGUvdt3YFqc="),
    "message_sticker": ("1228936268691479", "image/webp", "HcwyCKrTKXHk0a00ms4HWIA76GY0Du6q4Z/iuwevw="),
}

# name → (messages.type, messages.body, messages.context_wamid)
MESSAGE_CASES: dict[str, tuple[str, str | None, str | None]] = {
    "message_text": ("text", "Does it come in another color?", None),
    "message_text_reply_forwarded": (
        "text", "Look at this", "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI1QjZGOTA1QkM3NzBBRkVCMDQA"),
    "message_image": ("image", "This is the one I mean", None),
    "message_audio_voice": ("audio", None, None),
    "message_video": ("video", "Unboxing", None),
    "message_document": ("document", "invoice-2025-04.pdf", None),
    "message_sticker": ("sticker", None, None),
    "message_location": ("location", "📍 Meta Headquarters, 1 Hacker Way, Menlo Park, CA 94025", None),
    "message_contacts": ("contacts", "👤 Barbara J. Johnson, Chandler", None),
    "message_interactive_button_reply": (
        "interactive", "Yes, confirm", "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJGMDFFNjM3QzU0RDZFMzMzNzcA"),
    "message_interactive_list_reply": (
        "interactive", "Express", "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QUE1QkY1NTc5QjNGQTRGMTQA"),
    "message_interactive_nfm_reply": (
        "interactive", "Sent", "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBIyNTNERDRGMjBBMzQ0NDNCMjgA"),
    "message_button": ("button", "Stop promotions", "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDN0M1MjJBNUNDQ0U1OTFGRDQA"),
    "message_reaction": ("reaction", "👍", None),
    "message_reaction_removed": ("reaction", None, None),
    "message_order": ("order", "Delivery after 6pm please", None),
    "message_referral": ("text", "Can I get more info about this?", None),
    "message_system": ("system", "User Sheena Nelson changed from 16505551234 to 16505559999", None),
    "message_unsupported": ("unsupported", None, None),
    "message_edit": ("edit", "Does it come in another colour?", None),
    "message_revoke": ("revoke", None, None),
    "message_unknown_type": ("unknown", None, None),
}


def test_the_table_covers_every_recorded_message() -> None:
    assert set(MESSAGE_CASES) == {f.stem for f in DATA.glob("message_*.json")}


@pytest.mark.parametrize("name", sorted(MESSAGE_CASES))
async def test_every_recorded_message_type_is_stored_once(env: Env, name: str) -> None:
    type_, body, context = MESSAGE_CASES[name]
    raw = recorded_message(name)
    at = ts(raw["timestamp"])
    profile = None if name == "message_system" else "Sheena Nelson"  # the system message carries no contacts
    media = MEDIA.get(name)
    data = recorded_bytes(name)  # Meta's bytes as recorded, signed as they are

    outcome = await env.receiver.receive(data, sign(data, SECRET_A))
    assert (outcome.status, outcome.detail) == (200, "stored")
    assert outcome.result is not None and len(outcome.result.new_messages) == 1 and outcome.result.duplicates == 0
    assert await counts(env.db) == rows(webhook_receipts=1, contacts=1, conversations=1, messages=1,
                                        media=1 if media else 0)

    contact = await env.db.fetchrow("SELECT * FROM contacts")
    assert (contact["tenant_id"], contact["wa_id"], contact["profile_name"]) == (env.acme.id, USER, profile)
    conversation = await env.db.fetchrow("SELECT * FROM conversations")
    assert (conversation["tenant_id"], conversation["channel_id"], conversation["contact_id"]) == (
        env.acme.id, env.channel_a.id, contact["id"])
    assert (conversation["status"], conversation["unread_count"]) == ("open", 1)
    assert conversation["last_inbound_at"] == at and conversation["last_message_at"] == at

    message = await env.db.fetchrow("SELECT * FROM messages")
    assert dict(message) | {"id": None, "created_at": None} == {
        "id": None, "created_at": None, "tenant_id": env.acme.id, "conversation_id": conversation["id"],
        "channel_id": env.channel_a.id, "direction": "inbound", "wamid": raw["id"], "type": type_, "body": body,
        "payload": raw, "status": "received", "error": None, "author_id": None, "sent_at": None,
        "context_wamid": context, "occurred_at": at}
    if name == "message_unknown_type":  # kept whole: the type Meta sent and the fields nobody knows yet
        assert message["payload"]["type"] == "hologram" and message["payload"]["brand_new_field"] == {"x": 1}
        assert message["payload"]["hologram"] == {"id": "4242", "depth": 3}

    if media:
        row = await env.db.fetchrow("SELECT * FROM media")
        assert (row["tenant_id"], row["message_id"], row["media_id"], row["mime_type"], row["sha256"]) == (
            env.acme.id, message["id"], *media)
        assert (row["state"], row["attempts"], row["storage_key"]) == ("pending", 0, None)

    receipt = await env.db.fetchrow("SELECT * FROM webhook_receipts")
    assert (receipt["tenant_id"], receipt["channel_id"]) == (env.acme.id, env.channel_a.id)
    assert receipt["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert receipt["body"] == json.loads(data)
    assert (receipt["messages"], receipt["statuses"], receipt["duplicates"], receipt["rejected"]) == (1, 0, 0, [])


async def test_all_recorded_messages_of_one_contact_share_one_open_conversation(env: Env) -> None:
    names = sorted(MESSAGE_CASES)
    for name in names:
        data = recorded_bytes(name)
        assert (await env.receiver.receive(data, sign(data, SECRET_A))).status == 200
    latest = max(ts(recorded_message(n)["timestamp"]) for n in names)
    assert await counts(env.db) == rows(webhook_receipts=len(names), contacts=1, conversations=1,
                                        messages=len(names), media=len(MEDIA))
    conversation = await env.db.fetchrow("SELECT * FROM conversations")
    assert (conversation["status"], conversation["unread_count"], conversation["last_inbound_at"]) == (
        "open", len(names), latest)
    # the system message (no contacts block) did not erase the profile name
    assert await env.db.fetchval("SELECT profile_name FROM contacts") == "Sheena Nelson"
    assert await env.db.fetchval("SELECT count(DISTINCT conversation_id) FROM messages") == 1


async def test_a_batch_spanning_two_numbers_of_two_tenants_of_one_app(env: Env) -> None:
    """batch_two_entries.json: two numbers of one Meta app that belong to two tenants."""
    gamma = await tenants.create(env.db, "Gamma")
    channel_g = await channels.add(env.db, env.box, gamma.id, phone_number_id="110200345501442",
                                   waba_id="203311229004417", app_secret=SECRET_A, verify_token="verify-gamma",
                                   access_token="token-gamma")
    data = recorded_bytes("batch_two_entries")
    outcome = await env.receiver.receive(data, sign(data, SECRET_A))
    assert outcome.status == 200 and outcome.result is not None
    assert outcome.result.statuses_pending == 3 and outcome.result.ignored_phone_number_ids == set()
    assert await counts(env.db) == rows(webhook_receipts=1, contacts=3, conversations=3, messages=4, media=1,
                                        message_statuses=3, templates=1)
    by_wamid = {r["wamid"]: r for r in await env.db.fetch(
        "SELECT m.wamid, m.tenant_id, m.channel_id, c.wa_id FROM messages m "
        "JOIN conversations v ON v.id = m.conversation_id JOIN contacts c ON c.id = v.contact_id")}
    assert {w: (r["tenant_id"], r["channel_id"], r["wa_id"]) for w, r in by_wamid.items()} == {
        "wamid.batch.1": (env.acme.id, env.channel_a.id, "16505551234"),
        "wamid.batch.2": (env.acme.id, env.channel_a.id, "393471234567"),
        "wamid.batch.3": (env.acme.id, env.channel_a.id, "16505551234"),
        "wamid.batch.4": (gamma.id, channel_g.id, "393339876543"),
    }
    assert await env.db.fetchval("SELECT unread_count FROM conversations v JOIN contacts c ON c.id = v.contact_id "
                                 "WHERE c.wa_id = '16505551234'") == 2
    pending = await env.db.fetch("SELECT tenant_id, wamid, status, message_id FROM message_statuses ORDER BY wamid")
    assert [tuple(r) for r in pending] == [(env.acme.id, "wamid.out.1", "delivered", None),
                                           (env.acme.id, "wamid.out.2", "read", None),
                                           (gamma.id, "wamid.out.3", "sent", None)]
    template = await env.db.fetchrow("SELECT tenant_id, waba_id, name, language, status FROM templates")
    assert tuple(template) == (gamma.id, "203311229004417", "welcome_it", "it", "approved")
    # one delivery, two tenants: the receipt belongs to neither
    receipt = await env.db.fetchrow("SELECT tenant_id, channel_id, messages, statuses FROM webhook_receipts")
    assert tuple(receipt) == (None, None, 4, 0)


# --- 3. redelivery -------------------------------------------------------------------------------


async def test_redelivery_of_the_same_body_is_a_counted_no_op(env: Env) -> None:
    data = recorded_bytes("message_image")
    first = await env.receiver.receive(data, sign(data, SECRET_A))
    again = await env.receiver.receive(data, sign(data, SECRET_A))
    assert first.status == again.status == 200
    assert again.result is not None and again.result.new_messages == [] and again.result.duplicates == 1
    assert again.result.conversations == {}
    assert await counts(env.db) == rows(webhook_receipts=2, contacts=1, conversations=1, messages=1, media=1)
    assert await env.db.fetchval("SELECT unread_count FROM conversations") == 1
    assert [tuple(r) for r in await env.db.fetch(
        "SELECT messages, duplicates FROM webhook_receipts ORDER BY id")] == [(1, 0), (0, 1)]


async def test_the_same_messages_in_another_batch_are_not_stored_twice(env: Env) -> None:
    text, image = recorded_message("message_text"), recorded_message("message_image")
    for name in ("message_text", "message_image"):
        data = recorded_bytes(name)
        assert (await env.receiver.receive(data, sign(data, SECRET_A))).status == 200
    fresh = p.text_message(USER, "and a new one", wamid="wamid.fresh.1", timestamp=1750000000)
    rebatched = p.webhook(p.entry(WABA_A, p.messages_change(PNID_A, DISPLAY_A, [fresh, image, text, image],
                                                            profile_names={USER: "Sheena Nelson"})))
    outcome = await env.deliver(rebatched)
    assert outcome.status == 200 and outcome.result is not None
    assert [m.wamid for m in outcome.result.new_messages] == ["wamid.fresh.1"] and outcome.result.duplicates == 3
    assert await counts(env.db) == rows(webhook_receipts=3, contacts=1, conversations=1, messages=3, media=1)
    conversation = await env.db.fetchrow("SELECT unread_count, last_inbound_at FROM conversations")
    assert tuple(conversation) == (3, ts(1750000000))

    # the two-entry batch, twice: the second time nothing but a receipt
    data = recorded_bytes("batch_two_entries")
    for _ in range(2):
        assert (await env.receiver.receive(data, sign(data, SECRET_A))).status == 200
    assert await counts(env.db) == rows(webhook_receipts=5, contacts=2, conversations=2, messages=6, media=2,
                                        message_statuses=2)
    assert await env.db.fetchval("SELECT sum(unread_count) FROM conversations") == 6


async def test_concurrent_redeliveries_store_one_message(env: Env) -> None:
    body = encode(text_payload("wamid.race.1"))
    outcomes = await asyncio.gather(*(env.receiver.receive(body, sign(body, SECRET_A)) for _ in range(8)))
    assert [o.status for o in outcomes] == [200] * 8
    assert sum(len(o.result.new_messages) for o in outcomes if o.result) == 1
    assert sum(o.result.duplicates for o in outcomes if o.result) == 7
    # and eight different first messages of one new contact at once: still one conversation
    bodies = [encode(text_payload(f"wamid.burst.{i}", sender="393330000001", at=1750000000 + i)) for i in range(8)]
    outcomes = await asyncio.gather(*(env.receiver.receive(b, sign(b, SECRET_A)) for b in bodies))
    assert [o.status for o in outcomes] == [200] * 8
    assert await counts(env.db) == rows(webhook_receipts=16, contacts=2, conversations=2, messages=9)
    assert [tuple(r) for r in await env.db.fetch(
        "SELECT c.wa_id, v.unread_count, v.last_inbound_at FROM conversations v "
        "JOIN contacts c ON c.id = v.contact_id ORDER BY c.wa_id")] == [
        (USER, 1, ts(1750000000)), ("393330000001", 8, ts(1750000007))]


async def test_concurrent_batches_sharing_contacts_and_messages_in_opposite_orders_do_not_deadlock(env: Env) -> None:
    """Meta batches several senders (and statuses of several messages) into one POST, in any order.
    Concurrent deliveries that name the same rows must queue behind each other, not deadlock (503)."""
    a, b = "393330000001", "393330000002"
    for wamid in ("wamid.out.x", "wamid.out.y"):
        await outbound(env, wamid)
    rounds, width = 10, 8
    for r in range(rounds):
        bodies = []
        for k in range(width):
            first, second = (a, b) if k % 2 else (b, a)
            messages = [p.text_message(first, "x", wamid=f"wamid.dl.{r}.{k}.1", timestamp=1750000000 + r),
                        p.text_message(second, "y", wamid=f"wamid.dl.{r}.{k}.2", timestamp=1750000000 + r)]
            bodies.append(encode(p.webhook(p.entry(WABA_A, p.messages_change(PNID_A, DISPLAY_A, messages)))))
            x, y = ("wamid.out.x", "wamid.out.y") if k % 2 else ("wamid.out.y", "wamid.out.x")
            states = [p.status(w, "delivered", USER, timestamp=1750000000 + 10 * r + k) for w in (x, y)]
            bodies.append(encode(p.status_webhook(states, waba_id=WABA_A, phone_number_id=PNID_A,
                                                  display_phone_number=DISPLAY_A)))
        outcomes = await asyncio.gather(*(env.receiver.receive(body, sign(body, SECRET_A)) for body in bodies))
        assert [o.status for o in outcomes] == [200] * len(bodies), [o.detail for o in outcomes if o.status != 200]
    n = rounds * width
    assert await counts(env.db) == rows(webhook_receipts=2 * n, contacts=3, conversations=3, messages=2 + 2 * n,
                                        message_statuses=2 * n)
    assert [tuple(r) for r in await env.db.fetch(
        "SELECT c.wa_id, v.unread_count FROM conversations v JOIN contacts c ON c.id = v.contact_id "
        "WHERE c.wa_id <> $1 ORDER BY c.wa_id", USER)] == [(a, n), (b, n)]


# --- 4. statuses ---------------------------------------------------------------------------------

RANK = {"sent": 2, "failed": 3, "delivered": 4, "read": 5}


async def test_sent_delivered_read_in_every_order_end_at_read(env: Env) -> None:
    t0 = 1750263773
    at = {"sent": t0, "delivered": t0 + 1, "read": t0 + 2}
    orders = list(itertools.permutations(("sent", "delivered", "read")))
    for i, order in enumerate(orders):
        wamid = f"wamid.out.perm.{i}"
        message_id = await outbound(env, wamid)
        seen = "sent"
        for state in order:
            outcome = await env.deliver(status_body(wamid, state, at[state]))
            assert outcome.status == 200 and outcome.result is not None
            moved = RANK[state] > RANK[seen]
            assert [c.status for c in outcome.result.status_changes] == ([state] if moved else []), (order, state)
            assert outcome.result.statuses_stale == (0 if moved else 1)
            seen = max(seen, state, key=RANK.__getitem__)
            assert await env.db.fetchval("SELECT status FROM messages WHERE id = $1", message_id) == seen
        history = await env.db.fetch("SELECT status, occurred_at, message_id FROM message_statuses "
                                     "WHERE wamid = $1 ORDER BY occurred_at", wamid)
        assert [tuple(r) for r in history] == [(s, ts(at[s]), message_id) for s in ("sent", "delivered", "read")]
    n = len(orders)
    assert await counts(env.db) == rows(webhook_receipts=3 * n, contacts=1, conversations=1, messages=n,
                                        message_statuses=3 * n)

    # a late delivered (and a redelivery of every status) never moves read back; history stays distinct
    for i in range(n):
        for state in ("delivered", "sent", "read", "delivered"):
            assert (await env.deliver(status_body(f"wamid.out.perm.{i}", state, at[state]))).status == 200
        late = await env.deliver(status_body(f"wamid.out.perm.{i}", "delivered", t0 + 60))
        assert late.result is not None and late.result.statuses_stale == 1 and late.result.status_changes == []
    assert {r["status"] for r in await env.db.fetch("SELECT status FROM messages")} == {"read"}
    assert await counts(env.db) == rows(webhook_receipts=3 * n + 5 * n, contacts=1, conversations=1, messages=n,
                                        message_statuses=4 * n)
    # statuses never touch the inbox counters
    assert await env.db.fetchval("SELECT unread_count FROM conversations") == 0


async def test_recorded_statuses_out_of_order(env: Env) -> None:
    wamid = recorded("status_read")["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    message_id = await outbound(env, wamid)
    for name in ("status_read", "status_sent", "status_delivered", "status_unknown", "status_read"):
        data = recorded_bytes(name)
        assert (await env.receiver.receive(data, sign(data, SECRET_A))).status == 200
    assert await env.db.fetchval("SELECT status FROM messages WHERE id = $1", message_id) == "read"
    history = await env.db.fetch("SELECT status, pricing FROM message_statuses ORDER BY occurred_at")
    assert [r["status"] for r in history] == ["sent", "delivered", "read", "teleported"]
    assert history[0]["pricing"]["category"] == "service"
    assert await counts(env.db) == rows(webhook_receipts=5, contacts=1, conversations=1, messages=1,
                                        message_statuses=4)


async def test_failed_keeps_the_errors_and_a_late_sent_does_not_undo_it(env: Env) -> None:
    status = recorded("status_failed")["entry"][0]["changes"][0]["value"]["statuses"][0]
    message_id = await outbound(env, status["id"])
    data = recorded_bytes("status_failed")
    outcome = await env.receiver.receive(data, sign(data, SECRET_A))
    assert outcome.status == 200 and outcome.result is not None
    assert [c.status for c in outcome.result.status_changes] == ["failed"]
    assert (await env.deliver(status_body(status["id"], "sent", int(status["timestamp"]) - 5))).status == 200
    message = await env.db.fetchrow("SELECT status, error FROM messages WHERE id = $1", message_id)
    assert message["status"] == "failed"
    assert message["error"] == [{
        "code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
        "details": "Message failed to send because more than 24 hours have passed since the customer last replied "
                   "to this number."}]
    errors = await env.db.fetchval("SELECT errors FROM message_statuses WHERE status = 'failed'")
    assert errors == message["error"]
    assert await counts(env.db) == rows(webhook_receipts=2, contacts=1, conversations=1, messages=1,
                                        message_statuses=2)


async def test_statuses_for_an_unknown_wamid_wait_and_are_adopted(env: Env) -> None:
    wamid, failing = "wamid.out.later", "wamid.out.later.failed"
    for state, at in (("read", 1750000002), ("delivered", 1750000001)):
        outcome = await env.deliver(status_body(wamid, state, at))
        assert outcome.status == 200 and outcome.result is not None and outcome.result.statuses_pending == 1
    assert (await env.deliver(status_body(failing, "failed", 1750000003, error_code=131026))).status == 200
    assert await counts(env.db) == rows(webhook_receipts=3, message_statuses=3)
    assert await env.db.fetchval("SELECT count(*) FROM message_statuses WHERE message_id IS NULL") == 3

    # the outbox learns the wamids afterwards (as the dispatcher does: message_sent + adopt, one transaction)
    results = {}
    for w in (wamid, failing):
        message_id = await outbound(env, None, status="sending")
        async with env.db.transaction():
            sent = await env.db.fetchrow(sql("outbound", "message_sent"), env.acme.id, message_id, w)
            assert sent["status"] == "sent"
            results[w] = (message_id, await adopt_pending_statuses(env.db, env.acme.id, w, message_id))
    assert results[wamid][1] == "read" and results[failing][1] == "failed"
    assert await env.db.fetchval("SELECT count(*) FROM message_statuses WHERE message_id IS NULL") == 0
    assert [tuple(r) for r in await env.db.fetch(
        "SELECT wamid, status, message_id FROM message_statuses ORDER BY occurred_at")] == [
        (wamid, "delivered", results[wamid][0]), (wamid, "read", results[wamid][0]),
        (failing, "failed", results[failing][0])]
    failed = await env.db.fetchrow("SELECT status, error FROM messages WHERE wamid = $1", failing)
    assert failed["status"] == "failed" and failed["error"][0]["code"] == 131026

    # a redelivered status after adoption: no new history, no move back
    outcome = await env.deliver(status_body(wamid, "delivered", 1750000001))
    assert outcome.result is not None and outcome.result.status_changes == [] and outcome.result.statuses_pending == 0
    assert await env.db.fetchval("SELECT status FROM messages WHERE wamid = $1", wamid) == "read"
    assert await counts(env.db) == rows(webhook_receipts=4, contacts=1, conversations=1, messages=2,
                                        message_statuses=3)


async def test_a_status_never_reaches_another_tenants_message(env: Env) -> None:
    """Beta's message shares a wamid with nothing of Acme's: Acme's app cannot move it."""
    beta_message = await outbound(env, "wamid.beta.1", tenant=env.beta, channel=env.channel_b)
    # signed by Acme's app, naming Acme's number: stored as a pending status of Acme, not Beta's message
    outcome = await env.deliver(status_body("wamid.beta.1", "read", 1750000000))
    assert outcome.status == 200 and outcome.result is not None and outcome.result.statuses_pending == 1
    # signed by Acme's app, naming Beta's number: ignored
    outcome = await env.deliver(status_body("wamid.beta.1", "read", 1750000001, pnid=PNID_B, waba=WABA_B))
    assert outcome.status == 200 and outcome.result is not None and outcome.result.ignored_phone_number_ids == {PNID_B}
    assert await env.db.fetchval("SELECT status FROM messages WHERE id = $1", beta_message) == "sent"
    assert [tuple(r) for r in await env.db.fetch("SELECT tenant_id, message_id FROM message_statuses")] == [
        (env.acme.id, None)]
    assert await counts(env.db) == rows(webhook_receipts=2, contacts=1, conversations=1, messages=1,
                                        message_statuses=1)


# --- 4b. customers named by a business-scoped user id (BSUID) -----------------------------------

BSUID = "US.13491208655302741918"  # USER's BSUID in the recorded bsuid_* payloads
PARENT_BSUID = "US.ENT.11815799212886844830"
CONTACT_COLUMNS = "wa_id, bsuid, parent_bsuid, username, profile_name"


def bsuid_payload(wamid: str, body: str = "ciao", *, bsuid: str = BSUID, phone: str | None = None,
                  username: str | None = None, at: int = 1779000000) -> dict[str, Any]:
    """A message as Meta sends it since 2026: always the BSUID; the phone only if the user shows it."""
    message = p.text_message(phone or bsuid, body, wamid=wamid, timestamp=at)
    if phone is not None:
        message = p.with_user_id(message, bsuid)
    return p.inbound(message, waba_id=WABA_A, phone_number_id=PNID_A, display_phone_number=DISPLAY_A,
                     profile_name="Sheena Nelson", username=username)


async def contact_rows(env: Env) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await env.db.fetch(f"SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY created_at, id")]


async def test_a_username_only_message_is_a_conversation_shown_by_its_username(env: Env) -> None:
    """A customer who adopted a username writes without a phone number: stored like any other."""
    data = recorded_bytes("bsuid_message_username_only")
    raw = recorded_message("bsuid_message_username_only")
    outcome = await env.receiver.receive(data, sign(data, SECRET_A))
    assert (outcome.status, outcome.detail) == (200, "stored")
    assert outcome.result is not None and [m.wamid for m in outcome.result.new_messages] == [raw["id"]]
    assert await counts(env.db) == rows(webhook_receipts=1, contacts=1, conversations=1, messages=1)
    assert await contact_rows(env) == [(None, BSUID, None, "sheena.nelson", "Sheena Nelson")]
    conversation = await env.db.fetchrow("SELECT * FROM conversations")
    assert (conversation["status"], conversation["unread_count"], conversation["last_inbound_at"]) == (
        "open", 1, ts(raw["timestamp"]))
    message = await env.db.fetchrow("SELECT * FROM messages")
    assert (message["wamid"], message["body"], message["payload"], message["conversation_id"]) == (
        raw["id"], "Hi, is my order ready?", raw, conversation["id"])
    assert await env.db.fetchval("SELECT rejected FROM webhook_receipts") == []

    # the inbox names them by username (and keeps the BSUID), finds them by it, with or without "@"
    view = (await inbox_conversations.views(env.db, env.acme.id, [conversation["id"]]))[conversation["id"]]
    assert view["contact"] == {"id": str(conversation["contact_id"]), "wa_id": None, "username": "sheena.nelson",
                               "bsuid": BSUID, "name": "Sheena Nelson"}
    supervisor = Principal(env.acme.id, uuid.uuid4(), "supervisor", "Sara")
    for q in ("@sheena", "sheena.nel", BSUID):
        found = await inbox_conversations.list_conversations(env.db, supervisor, ConversationQuery(q=q))
        assert [c["id"] for c in found["items"]] == [str(conversation["id"])], q
        listed = await inbox_contacts.list_contacts(env.db, supervisor, ContactQuery(q=q))
        assert [(c["wa_id"], c["username"], c["bsuid"]) for c in listed["items"]] == [
            (None, "sheena.nelson", BSUID)], q
    assert (await inbox_contacts.list_contacts(env.db, supervisor, ContactQuery(q="@nobody")))["items"] == []


@pytest.mark.parametrize("order", ["phone first", "username first"])
async def test_one_customer_by_phone_and_by_bsuid_alone_is_one_contact(env: Env, order: str) -> None:
    """Meta sends the BSUID with every message: whichever way the customer came first, the other
    identifier is recorded on the same row, and the messages share one conversation."""
    names = ["bsuid_message_with_phone", "bsuid_message_username_only"]
    for name in names if order == "phone first" else reversed(names):
        data = recorded_bytes(name)
        outcome = await env.receiver.receive(data, sign(data, SECRET_A))
        assert outcome.status == 200 and outcome.result is not None and len(outcome.result.new_messages) == 1
    assert await counts(env.db) == rows(webhook_receipts=2, contacts=1, conversations=1, messages=2)
    assert await contact_rows(env) == [(USER, BSUID, PARENT_BSUID, "sheena.nelson", "Sheena Nelson")]
    assert await env.db.fetchval("SELECT unread_count FROM conversations") == 2


async def test_a_contact_known_before_bsuids_learns_its_bsuid_from_the_next_message(env: Env) -> None:
    """A customer first seen by phone alone (before Meta sent BSUIDs) stays one contact when they
    later write by phone and BSUID, and then by username alone."""
    for name in ("message_text", "bsuid_message_with_phone", "bsuid_message_username_only"):
        data = recorded_bytes(name)
        assert (await env.receiver.receive(data, sign(data, SECRET_A))).status == 200
    assert await counts(env.db) == rows(webhook_receipts=3, contacts=1, conversations=1, messages=3)
    assert await contact_rows(env) == [(USER, BSUID, PARENT_BSUID, "sheena.nelson", "Sheena Nelson")]


async def test_a_bsuid_already_held_by_another_contact_stays_there(env: Env) -> None:
    """A customer seen by phone before BSUIDs existed, then by username alone, is two rows (nothing
    linked them). A later message naming both files under the phone's row and moves no identifier."""
    for name in ("message_text", "bsuid_message_username_only", "bsuid_message_with_phone"):
        data = recorded_bytes(name)
        outcome = await env.receiver.receive(data, sign(data, SECRET_A))
        assert outcome.status == 200 and outcome.result is not None and len(outcome.result.new_messages) == 1
    assert await contact_rows(env) == [(USER, None, PARENT_BSUID, None, "Sheena Nelson"),
                                       (None, BSUID, None, "sheena.nelson", "Sheena Nelson")]
    assert [tuple(r) for r in await env.db.fetch(
        "SELECT c.wa_id, c.bsuid, v.unread_count FROM conversations v JOIN contacts c ON c.id = v.contact_id "
        "ORDER BY c.created_at")] == [(USER, None, 2), (None, BSUID, 1)]


def bsuid_status(wamid: str, state: str, at: int, *, bsuid: str = BSUID, parent: str | None = None) -> dict[str, Any]:
    """A status for a message sent to USER's phone, naming USER's BSUID as Meta does since 2026."""
    item = p.status(wamid, state, USER, timestamp=at, recipient_user_id=bsuid, recipient_parent_user_id=parent)
    return p.status_webhook(item, waba_id=WABA_A, phone_number_id=PNID_A, display_phone_number=DISPLAY_A)


async def test_a_contact_written_to_by_phone_learns_its_bsuid_from_a_status(env: Env) -> None:
    """The business wrote to a customer known by phone alone; the delivered status names their BSUID,
    so when they later write by username alone (no phone) it is the same contact and conversation."""
    message_id = await outbound(env, "wamid.out.learn")
    assert await contact_rows(env) == [(USER, None, None, None, None)]
    outcome = await env.deliver(bsuid_status("wamid.out.learn", "delivered", 1779000100, parent=PARENT_BSUID))
    assert outcome.status == 200 and outcome.result is not None
    assert [(c.message_id, c.status) for c in outcome.result.status_changes] == [(message_id, "delivered")]
    assert await contact_rows(env) == [(USER, BSUID, PARENT_BSUID, None, None)]

    data = recorded_bytes("bsuid_message_username_only")
    outcome = await env.receiver.receive(data, sign(data, SECRET_A))
    assert outcome.status == 200 and outcome.result is not None and len(outcome.result.new_messages) == 1
    assert await counts(env.db) == rows(webhook_receipts=2, contacts=1, conversations=1, messages=2,
                                        message_statuses=1)
    assert await contact_rows(env) == [(USER, BSUID, PARENT_BSUID, "sheena.nelson", "Sheena Nelson")]


async def test_a_status_and_a_first_username_only_message_racing_for_one_bsuid_are_both_stored(env: Env) -> None:
    """The status teaching a phone contact its BSUID and the customer's first message by username alone,
    at the same moment: whichever the unique index lets through, both deliveries are 200 and stored."""
    people = 8
    for n in range(people):
        phone, bsuid = f"39334{n:07d}", f"IT.77{n:018d}"
        await outbound(env, f"wamid.race.out.{n}", to=phone)
    deliveries = []
    for n in range(people):
        phone, bsuid = f"39334{n:07d}", f"IT.77{n:018d}"
        item = p.status(f"wamid.race.out.{n}", "delivered", phone, timestamp=1779000100, recipient_user_id=bsuid)
        deliveries += [p.status_webhook(item, waba_id=WABA_A, phone_number_id=PNID_A, display_phone_number=DISPLAY_A),
                       bsuid_payload(f"wamid.race.in.{n}", bsuid=bsuid, username=f"cliente.{n}")]
    outcomes = await asyncio.gather(*(env.deliver(d) for d in deliveries))
    assert [o.status for o in outcomes] == [200] * 2 * people, [o.detail for o in outcomes]
    assert await env.db.fetchval("SELECT count(*) FROM messages WHERE direction = 'inbound'") == people
    assert await env.db.fetchval("SELECT count(*) FROM messages WHERE status = 'delivered'") == people
    holders = await env.db.fetch("SELECT bsuid, count(*) AS n FROM contacts WHERE bsuid IS NOT NULL GROUP BY bsuid")
    assert sorted((r["bsuid"], r["n"]) for r in holders) == [(f"IT.77{n:018d}", 1) for n in range(people)]


async def test_a_status_teaches_no_bsuid_another_contact_holds_nor_one_a_contact_has(env: Env) -> None:
    """A username-only customer already holds the BSUID: the phone contact's status leaves both rows
    as they were (no merge, no error). A contact with a BSUID keeps it whatever a status says."""
    data = recorded_bytes("bsuid_message_username_only")
    assert (await env.receiver.receive(data, sign(data, SECRET_A))).status == 200
    await outbound(env, "wamid.out.held")
    outcome = await env.deliver(bsuid_status("wamid.out.held", "delivered", 1779000100))
    assert outcome.status == 200 and outcome.result is not None and len(outcome.result.status_changes) == 1
    assert await contact_rows(env) == [(None, BSUID, None, "sheena.nelson", "Sheena Nelson"),
                                       (USER, None, None, None, None)]

    other = "IT.4242424242"
    await outbound(env, "wamid.out.other", to="393330000001")
    await env.db.execute("UPDATE contacts SET bsuid = $1 WHERE wa_id = '393330000001'", other)
    item = p.status("wamid.out.other", "read", "393330000001", timestamp=1779000200, recipient_user_id="IT.99")
    outcome = await env.deliver(p.status_webhook(item, waba_id=WABA_A, phone_number_id=PNID_A,
                                                 display_phone_number=DISPLAY_A))
    assert outcome.status == 200 and outcome.result is not None and len(outcome.result.status_changes) == 1
    assert await env.db.fetchval("SELECT bsuid FROM contacts WHERE wa_id = '393330000001'") == other


async def test_concurrent_first_messages_by_phone_and_by_bsuid_alone_make_one_contact(env: Env) -> None:
    """Eight deliveries of one new customer at once, half with the phone, half by username alone:
    the unique indexes decide, and every message lands in the one conversation."""
    people = 6
    for n in range(people):
        bsuid, phone = f"IT.88{n:018d}", f"39333{n:07d}"
        bodies = [encode(bsuid_payload(f"wamid.mix.{n}.{k}", bsuid=bsuid, phone=phone if k % 2 else None,
                                       username=f"cliente.{n}", at=1779000000 + k)) for k in range(8)]
        outcomes = await asyncio.gather(*(env.receiver.receive(b, sign(b, SECRET_A)) for b in bodies))
        assert [o.status for o in outcomes] == [200] * 8, [o.detail for o in outcomes]
    assert await counts(env.db) == rows(webhook_receipts=8 * people, contacts=people, conversations=people,
                                        messages=8 * people)
    assert sorted(tuple(r) for r in await env.db.fetch(
        "SELECT c.wa_id, c.bsuid, c.username, v.unread_count, v.last_inbound_at FROM conversations v "
        "JOIN contacts c ON c.id = v.contact_id")) == [
        (f"39333{n:07d}", f"IT.88{n:018d}", f"cliente.{n}", 8, ts(1779000007)) for n in range(people)]


async def test_statuses_by_recipient_user_id_advance_a_message_sent_to_a_bsuid(env: Env) -> None:
    wamid = recorded("bsuid_status_delivered")["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    contact = await env.db.fetchval("INSERT INTO contacts (tenant_id, bsuid, username) VALUES ($1, $2, $3) "
                                    "RETURNING id", env.acme.id, BSUID, "sheena.nelson")
    conversation = await env.db.fetchval("INSERT INTO conversations (tenant_id, channel_id, contact_id) "
                                         "VALUES ($1, $2, $3) RETURNING id", env.acme.id, env.channel_a.id, contact)
    message_id = await env.db.fetchval(
        "INSERT INTO messages (tenant_id, conversation_id, channel_id, direction, wamid, type, body, status, payload) "
        "VALUES ($1, $2, $3, 'outbound', $4, 'text', 'pronto!', 'sent', $5) RETURNING id", env.acme.id, conversation,
        env.channel_a.id, wamid, {"recipient": BSUID, "kind": "text", "body": "pronto!"})

    data = recorded_bytes("bsuid_status_delivered")
    outcome = await env.receiver.receive(data, sign(data, SECRET_A))
    assert outcome.status == 200 and outcome.result is not None
    assert [(c.message_id, c.status) for c in outcome.result.status_changes] == [(message_id, "delivered")]
    read = p.status(wamid, "read", None, recipient_user_id=BSUID, timestamp=1779000180)
    assert "recipient_id" not in read and read["recipient_user_id"] == BSUID
    outcome = await env.deliver(p.status_webhook(read, waba_id=WABA_A, phone_number_id=PNID_A,
                                                 display_phone_number=DISPLAY_A,
                                                 contacts=[p.contact(user_id=BSUID, username="sheena.nelson")]))
    assert outcome.result is not None and [c.status for c in outcome.result.status_changes] == ["read"]
    assert await env.db.fetchval("SELECT status FROM messages WHERE id = $1", message_id) == "read"
    assert [tuple(r) for r in await env.db.fetch(
        "SELECT status, message_id FROM message_statuses ORDER BY occurred_at")] == [
        ("delivered", message_id), ("read", message_id)]
    # a status's contacts name the customer: they never create one nor touch the inbox
    assert await counts(env.db) == rows(webhook_receipts=2, contacts=1, conversations=1, messages=1,
                                        message_statuses=2)
    assert await env.db.fetchval("SELECT unread_count FROM conversations") == 0


MALFORMED_BSUIDS: list[Any] = [
    "US." + "1" * 129, "x" * 100_000, "13491208655302741918", "us.1349", "US.1349 1208", "US.١٢٣٤", "", 4242,
    True, 1.5, [BSUID], {"id": BSUID}, {"a": [{"a": [{"a": [BSUID]}]}]},
]


@pytest.mark.parametrize("bad", MALFORMED_BSUIDS, ids=[f"bsuid{i}" for i in range(len(MALFORMED_BSUIDS))])
async def test_malformed_bsuids_are_refused_readably_never_a_500(env: Env, bad: Any) -> None:
    alone = bsuid_payload("wamid.bad.alone")
    alone["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"] = bad
    alone["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"] = bad
    outcome = await env.deliver(alone)
    assert (outcome.status, outcome.detail) == (200, "stored")
    assert outcome.result is not None and outcome.result.new_messages == []
    assert await env.db.fetchval("SELECT rejected FROM webhook_receipts") == [
        {"reason": "contact without a valid 'wa_id' (phone number) or 'user_id' (business-scoped user id)"},
        {"reason": "message without a valid 'from' (phone number) or 'from_user_id' (business-scoped user id)"}]

    beside_phone = bsuid_payload("wamid.bad.phone", phone=USER)
    beside_phone["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"] = bad
    outcome = await env.deliver(beside_phone)
    assert outcome.status == 200 and outcome.result is not None and len(outcome.result.new_messages) == 1
    assert await contact_rows(env) == [(USER, None, None, None, "Sheena Nelson")]
    assert await env.db.fetchval("SELECT rejected FROM webhook_receipts ORDER BY id DESC LIMIT 1") == [
        {"reason": "message with a malformed 'from_user_id'; the field was ignored"}]

    status = p.status("wamid.bad.status", "delivered", None, timestamp=1779000000)
    status["recipient_user_id"] = bad
    outcome = await env.deliver(p.status_webhook(status, waba_id=WABA_A, phone_number_id=PNID_A,
                                                 display_phone_number=DISPLAY_A))
    assert outcome.status == 200 and outcome.result is not None and outcome.result.statuses_pending == 1
    assert await counts(env.db) == rows(webhook_receipts=3, contacts=1, conversations=1, messages=1,
                                        message_statuses=1)


# --- 5. security and bad input -------------------------------------------------------------------


async def test_bad_signatures_are_refused_and_nothing_is_stored(env: Env) -> None:
    data = recorded_bytes("message_text")
    good = sign(data, SECRET_A)
    tampered = data.replace(b"color?", b"colos?")
    assert len(tampered) == len(data) and sum(a != b for a, b in zip(data, tampered, strict=True)) == 1
    cases: list[tuple[bytes, str | None]] = [
        (data, None),  # missing
        (data, ""),
        (data, "sha256=" + "0" * 64),  # wrong
        (data, good[:-1]),  # truncated
        (data, good.replace("sha256=", "sha1=")),
        (data, sign(data, "another-apps-secret")),  # a secret that is not ours
        (tampered, good),  # the body changed by one byte after signing
        (data + b" ", good),
        (b"", good),
    ]
    for body, signature in cases:
        outcome = await env.receiver.receive(body, signature)
        assert outcome.status == 401 and outcome.result is None, signature
    assert await counts(env.db) == rows()
    # the same body and signature are fine
    assert (await env.receiver.receive(data, good.upper().replace("SHA256=", "sha256="))).status == 200


@pytest.mark.parametrize("body", [
    b"not json", b"", b"{", b"\xff\xfe", b'{"object": "whatsapp_business_account", "entry": [}', b"NaN",
    b'{"object": "whatsapp_business_account", "entry": [], "x": 1e999}',
])
async def test_a_signed_body_that_is_not_json_is_400(env: Env, body: bytes) -> None:
    outcome = await env.receiver.receive(body, sign(body, SECRET_A))
    assert outcome.status == 400 and outcome.result is None
    assert await counts(env.db) == rows()
    # what Meta sent is kept for inspection, apart from the conversation data
    reject = await env.db.fetchrow("SELECT reason, size_bytes, body_head, body_sha256 FROM webhook_rejects")
    assert reject["reason"] == outcome.detail and reject["size_bytes"] == len(body)
    assert bytes(reject["body_head"]) == body[:65536]


async def test_unsigned_garbage_leaves_no_trace(env: Env) -> None:
    assert (await env.receiver.receive(b"not json", "sha256=" + "0" * 64)).status == 401
    assert (await env.receiver.receive(b"not json", None)).status == 401
    assert await env.db.fetchval("SELECT count(*) FROM webhook_rejects") == 0


@pytest.mark.parametrize("payload", [
    [], "whatsapp_business_account", None, 42, {},
    {"object": "page", "entry": []},
    {"object": "whatsapp_business_account"},
    {"object": "whatsapp_business_account", "entry": {"id": "1"}},
    {"object": ["whatsapp_business_account"], "entry": []},
])
async def test_json_of_the_wrong_shape_is_400(env: Env, payload: Any) -> None:
    body = json.dumps(payload).encode()
    outcome = await env.receiver.receive(body, sign(body, SECRET_A))
    assert outcome.status == 400 and outcome.result is None
    assert await counts(env.db) == rows()


async def test_oversized_bodies_are_413_before_anything_else(env: Env) -> None:
    small = WebhookReceiver(env.pool, env.box, max_bytes=4096, routes=env.receiver.routes)
    payload = text_payload("wamid.big.1", "x")
    base = len(encode(payload))
    at_limit = encode(text_payload("wamid.big.1", "x" * (4096 - base + 1)))
    assert len(at_limit) == 4096
    over = encode(text_payload("wamid.big.2", "x" * (4096 - base + 2)))
    outcome = await small.receive(over, sign(over, SECRET_A))
    assert outcome.status == 413
    assert (await small.receive(over, None)).status == 413  # size first: no HMAC over a huge body
    assert await counts(env.db) == rows()
    assert (await small.receive(at_limit, sign(at_limit, SECRET_A))).status == 200
    assert await counts(env.db) == rows(webhook_receipts=1, contacts=1, conversations=1, messages=1)


async def test_nul_characters_are_scrubbed_not_a_500(env: Env) -> None:
    message = p.text_message(USER, "a\x00b", wamid="wamid.nul.1", timestamp=1750000000)
    message["weird\x00key"] = {"v": "\x00"}
    payload = p.inbound(message, waba_id=WABA_A, phone_number_id=PNID_A, display_phone_number=DISPLAY_A,
                        profile_name="Nul\x00Name")
    body = encode(payload)
    assert b"\\u0000" in body
    outcome = await env.deliver(body)
    assert outcome.status == 200
    assert await counts(env.db) == rows(webhook_receipts=1, contacts=1, conversations=1, messages=1)
    stored = await env.db.fetchrow("SELECT body, payload FROM messages")
    assert stored["body"] == "a\ufffdb"
    assert stored["payload"]["weird\ufffdkey"] == {"v": "\ufffd"}
    assert await env.db.fetchval("SELECT profile_name FROM contacts") == "Nul\ufffdName"
    receipt = await env.db.fetchval("SELECT body FROM webhook_receipts")
    assert receipt["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] == "a\ufffdb"


def nested_body(depth: int, *, wamid: str, nul: bool = False) -> bytes:
    message = p.text_message(USER, "deep", wamid=wamid, timestamp=1750000000)
    message["deep"] = "__DEEP__"
    body = encode(p.inbound(message, waba_id=WABA_A, phone_number_id=PNID_A, display_phone_number=DISPLAY_A))
    inner = b'"\\u0000"' if nul else b"1"
    return body.replace(b'"__DEEP__"', b"[" * depth + inner + b"]" * depth)


@pytest.mark.parametrize("depth", [50, 100, 500, 900, 990, 1000, 1010, 1030, 5000, 100_000])
@pytest.mark.parametrize("nul", [False, True])
async def test_deep_nesting_is_refused_or_stored_never_an_exception(env: Env, depth: int, nul: bool) -> None:
    body = nested_body(depth, wamid=f"wamid.deep.{depth}", nul=nul)
    outcome = await env.deliver(body)
    if outcome.status == 200:
        assert await counts(env.db) == rows(webhook_receipts=1, contacts=1, conversations=1, messages=1)
        payload = await env.db.fetchval("SELECT payload FROM messages")
        level = payload["deep"]
        for _ in range(depth - 1):
            (level,) = level
        assert level == ["\ufffd" if nul else 1]
    else:
        assert outcome.status == 400, outcome
        assert await counts(env.db) == rows()
    if depth <= 100:  # a nesting Meta could plausibly send is stored, not refused
        assert outcome.status == 200


async def test_an_unknown_phone_number_id_leaves_only_a_receipt(env: Env) -> None:
    payload = text_payload("wamid.stranger.1", pnid="999999999999999")
    outcome = await env.deliver(payload)
    assert outcome.status == 200 and outcome.result is not None
    assert outcome.result.ignored_phone_number_ids == {"999999999999999"} and outcome.result.new_messages == []
    assert await counts(env.db) == rows(webhook_receipts=1)
    receipt = await env.db.fetchrow("SELECT tenant_id, channel_id, messages FROM webhook_receipts")
    assert tuple(receipt) == (None, None, 0)


async def test_app_a_cannot_write_into_the_tenant_of_app_b(env: Env) -> None:
    """Signed with Acme's app secret, naming Beta's number: nothing lands in Beta's tenant."""
    for payload in (text_payload("wamid.spoof.1", pnid=PNID_B, waba=WABA_B),
                    p.template_status_webhook(WABA_B, "778899", "welcome_it", "it", "APPROVED")):
        outcome = await env.deliver(payload, secret=SECRET_A)
        assert outcome.status == 200 and outcome.result is not None and outcome.result.new_messages == []
    assert await counts(env.db) == rows(webhook_receipts=2)
    assert await env.db.fetchval("SELECT count(*) FROM webhook_receipts WHERE tenant_id IS NOT NULL") == 0
    # a mixed delivery signed by A: A's message stored for A, the item naming B's number ignored
    mixed = p.webhook(
        p.entry(WABA_A, p.messages_change(PNID_A, DISPLAY_A, [p.text_message(USER, "mine", wamid="wamid.mix.a")])),
        p.entry(WABA_B, p.messages_change(PNID_B, DISPLAY_B, [p.text_message(USER, "theirs", wamid="wamid.mix.b")])))
    outcome = await env.deliver(mixed, secret=SECRET_A)
    assert outcome.status == 200 and outcome.result is not None
    assert outcome.result.ignored_phone_number_ids == {PNID_B}
    assert [(m.wamid, m.tenant_id) for m in outcome.result.new_messages] == [("wamid.mix.a", env.acme.id)]
    assert await counts(env.db) == rows(webhook_receipts=3, contacts=1, conversations=1, messages=1)
    assert await env.db.fetchval("SELECT count(*) FROM contacts WHERE tenant_id = $1", env.beta.id) == 0
    # and the same signed by B's own secret is stored for B
    assert (await env.deliver(text_payload("wamid.spoof.1", pnid=PNID_B, waba=WABA_B), secret=SECRET_B)).status == 200
    assert await env.db.fetchval("SELECT tenant_id FROM messages WHERE wamid = 'wamid.spoof.1'") == env.beta.id


# --- 6. PostgreSQL unavailable -------------------------------------------------------------------


@asynccontextmanager
async def env_in_own_database(postgres: Any) -> AsyncIterator[tuple[Env, asyncpg.Pool, str]]:
    """An Env in a database of its own, for the tests that take PostgreSQL away under it."""
    name = await postgres.create_database()
    url = postgres.app_url(name)
    conn = await connect(url)
    try:
        made, pool = await make_env(conn, url)
    finally:
        await conn.close()
    try:
        yield made, pool, name
    finally:
        pool.terminate()
        await postgres.drop_database(name)


async def test_postgres_unavailable_is_503_never_an_exception(postgres: Any) -> None:
    async with env_in_own_database(postgres) as (made, pool, name):
        cold = WebhookReceiver(pool, made.box, max_bytes=256 * 1024)  # its route cache is still empty
        assert (await made.deliver(text_payload("wamid.up.1"))).status == 200
        await postgres.drop_database(name)
        for wamid in ("wamid.down.1", "wamid.down.2"):
            outcome = await made.deliver(text_payload(wamid))
            assert outcome.status == 503 and outcome.result is None, outcome
        body = encode(text_payload("wamid.down.3"))
        assert (await cold.receive(body, sign(body, SECRET_A))).status == 503
        assert (await cold.receive(body, "sha256=" + "0" * 64)).status == 503  # cannot tell: retry, not 401
        with pytest.raises(ServiceUnavailable):
            await made.receiver.handshake("subscribe", "verify-acme", "1")


# --- 7. fuzz: mutated, correctly signed deliveries -----------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("PARLO_FUZZ_EXAMPLES", "300"))
_counter = itertools.count()


def _candidate_messages(payload: Any) -> list[tuple[str, Any]]:
    """(phone_number_id, message) for every message-like item, whatever its shape."""
    found = []
    entries = payload.get("entry") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
                continue
            metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
            for message in value["messages"]:
                found.append((metadata.get("phone_number_id"), message))
    return found


def _ident(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    return value if isinstance(value, str) and 0 < len(value) <= 512 else None


_BSUID = re.compile(r"[A-Z]{2}(?:\.[A-Z]{1,8})?\.[A-Za-z0-9]{1,128}")


def _bsuid(value: Any) -> str | None:
    """A business-scoped user id as Meta documents them ("US.13491208655302741918", "US.ENT.1181…")."""
    return value if isinstance(value, str) and _BSUID.fullmatch(value) else None


def _valid_timestamp(value: Any) -> bool:
    if isinstance(value, str) and 0 < len(value) <= 12 and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return False
    try:
        datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return False
    return True


def expected_wamids(payload: Any) -> set[str]:
    """Per the webhook contract: every message with an id, a sender (a phone number or a BSUID) and a
    valid timestamp, in a messages change of an entry with an id, on a number of the signing app, is stored."""
    wamids = set()
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        return wamids
    for entry in payload.get("entry") if isinstance(payload.get("entry"), list) else []:
        if not isinstance(entry, dict) or _ident(entry.get("id")) is None or not isinstance(entry.get("changes"), list):
            continue
        for change in entry["changes"]:
            if not isinstance(change, dict) or change.get("field") != "messages":
                continue
            value = change.get("value")
            if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
                continue
            metadata = value.get("metadata")
            pnid = _ident(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
            if pnid != PNID_A:
                continue
            for message in value["messages"]:
                if not isinstance(message, dict):
                    continue
                wamid = _ident(message.get("id"))
                sender = _ident(message.get("from")) or _bsuid(message.get("from_user_id"))
                if wamid and sender and _valid_timestamp(message.get("timestamp")):
                    wamids.add(wamid)
    return wamids


def _renumber(payload: Any, suffix: str) -> None:
    """Fresh wamids for this example, so that each one stores something new."""
    for _, message in _candidate_messages(payload):
        if isinstance(message, dict) and isinstance(message.get("id"), str):
            message["id"] = f"{message['id']}.{suffix}"


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if len(prefix) < 10:
        if isinstance(value, dict):
            for key, item in value.items():
                found += _paths(item, (*prefix, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                found += _paths(item, (*prefix, i))
    return found


def _parent(payload: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        payload = payload[key]
    return payload


@pytest.fixture(scope="module")
def fuzz_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def test_fuzzed_signed_deliveries_are_200_or_400_and_all_or_nothing(postgres: Any,
                                                                     fuzz_loop: asyncio.AbstractEventLoop) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    run = fuzz_loop.run_until_complete
    name = run(postgres.create_database())
    url = postgres.app_url(name)
    conn = run(connect(url))
    made, pool = run(make_env(conn, url))
    names = sorted(f.stem for f in DATA.glob("*.json"))
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                       st.text(max_size=30), st.sampled_from(["", "0", "-1", "1750000000", "99999999999999", "\x00",
                                                              "text", "image", "unsupported", PNID_A, PNID_B, USER]))
    values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                          max_leaves=8)
    seen: dict[int, int] = {}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(picked=st.lists(st.sampled_from(names), min_size=1, max_size=3), data=st.data())
    def example(picked: list[str], data: st.DataObject) -> None:
        payload = recorded(picked[0])
        for extra in picked[1:]:  # more entries in one delivery
            payload["entry"] += recorded(extra)["entry"]
        _renumber(payload, str(next(_counter)))
        for _ in range(data.draw(st.integers(0, 5), label="mutations")):
            paths = _paths(payload)
            path = data.draw(st.sampled_from(paths[1:] or [()]), label="path")
            action = data.draw(st.sampled_from(["replace", "drop", "add", "duplicate"]), label="action")
            if not path:
                break
            parent = _parent(payload, path)
            if action == "replace":
                parent[path[-1]] = data.draw(values, label="value")
            elif action == "drop":
                del parent[path[-1]]
            elif action == "add":
                target = parent[path[-1]]
                if isinstance(target, dict):
                    target[data.draw(st.text(max_size=12), label="key")] = data.draw(values, label="value")
                elif isinstance(target, list):
                    target.append(data.draw(values, label="value"))
            elif isinstance(parent, list):  # duplicate an item of a list
                parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
        body = encode(payload)

        async def check() -> None:
            before = await counts(conn)
            decoded = orjson.loads(body)  # as the receiver reads it (orjson turns ints beyond 64 bits into floats)
            wanted = expected_wamids(decoded)
            known = {r["wamid"] for r in await conn.fetch("SELECT wamid FROM messages WHERE wamid = ANY($1::text[])",
                                                          list(wanted))}
            outcome = await made.receiver.receive(body, sign(body, SECRET_A))
            seen[outcome.status] = seen.get(outcome.status, 0) + 1
            after = await counts(conn)
            assert outcome.status in (200, 400), outcome
            if outcome.status == 400:
                assert after == before
                # 400 tells Meta to drop the delivery: only for a top level that is not a webhook at all
                assert not (isinstance(decoded, dict) and decoded.get("object") == "whatsapp_business_account"
                            and isinstance(decoded.get("entry"), list)), outcome
                return
            assert outcome.result is not None
            new = {m.wamid for m in outcome.result.new_messages}
            assert new == wanted - known, (new, wanted, known)
            assert len(new) == len(outcome.result.new_messages)
            stored = await conn.fetch("SELECT wamid, tenant_id FROM messages WHERE wamid = ANY($1::text[])",
                                      list(wanted))
            assert {r["wamid"] for r in stored} == wanted and {r["tenant_id"] for r in stored} <= {made.acme.id}
            assert after["messages"] - before["messages"] == len(new)
            assert after["webhook_receipts"] - before["webhook_receipts"] == 1
            receipt = await conn.fetchrow("SELECT messages, duplicates FROM webhook_receipts ORDER BY id DESC LIMIT 1")
            assert receipt["messages"] == len(new)
            assert await conn.fetchval(
                "SELECT count(*) FROM messages m LEFT JOIN conversations v ON v.id = m.conversation_id "
                "WHERE v.tenant_id IS DISTINCT FROM m.tenant_id") == 0

        run(check())

    try:
        example()
        print(f"\nfuzz: {FUZZ_EXAMPLES} examples, answers {dict(sorted(seen.items()))}")
        assert seen.get(200, 0) > 0
        # every unread counter matches the messages that conversation holds
        assert run(conn.fetchval(
            "SELECT count(*) FROM conversations v WHERE unread_count <> "
            "(SELECT count(*) FROM messages m WHERE m.conversation_id = v.id AND m.direction = 'inbound')")) == 0
    finally:
        run(conn.close())
        run(pool.close())
        run(postgres.drop_database(name))



# PostgreSQL refusing a message row, as a trigger: text "poison" is a data exception (final),
# "contended" a deadlock (may pass on a retry)
REFUSE_SOME = """
    CREATE FUNCTION refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.body = 'poison' THEN RAISE EXCEPTION 'bad value' USING ERRCODE = '22023'; END IF;
        IF NEW.body = 'contended' THEN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER refuse_some BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_some();
"""


async def test_database_refusals_data_is_400_anything_else_503(env: Env) -> None:
    """PostgreSQL itself refuses a row (a trigger stands in for any such refusal): a data exception is
    the payload's fault and final (400); any other error may pass (503, Meta retries). Nothing is half-stored."""
    await env.db.execute(REFUSE_SOME)
    for body, status in (("poison", 400), ("contended", 503)):
        batch = p.webhook(p.entry(WABA_A, p.messages_change(PNID_A, DISPLAY_A, [
            p.text_message(USER, "fine", wamid=f"wamid.ok.{body}"),
            p.text_message("393330000009", body, wamid=f"wamid.{body}")])))
        outcome = await env.deliver(batch)
        assert (outcome.status, outcome.result) == (status, None), outcome
        assert await counts(env.db) == rows()


async def test_orphaned_statuses_are_adopted_by_the_sweep(db: asyncpg.Connection) -> None:
    """A status stored while its message's wamid was still uncommitted stays orphaned until the sweep."""
    from engine.whatsapp.ingest import adopt_orphans

    tenant = await tenants.create(db, "Orphans")
    channel = await db.fetchval("INSERT INTO channels (tenant_id, phone_number_id, waba_id) VALUES ($1, '1', '2') RETURNING id",
                                tenant.id)
    contact = await db.fetchval("INSERT INTO contacts (tenant_id, wa_id) VALUES ($1, '39333') RETURNING id", tenant.id)
    conversation = await db.fetchval(
        "INSERT INTO conversations (tenant_id, channel_id, contact_id) VALUES ($1, $2, $3) RETURNING id",
        tenant.id, channel, contact)
    message = await db.fetchval(
        "INSERT INTO messages (tenant_id, conversation_id, direction, type, status) "
        "VALUES ($1, $2, 'outbound', 'text', 'sending') RETURNING id", tenant.id, conversation)
    for status, minute in (("sent", 1), ("read", 3), ("delivered", 2)):
        await db.execute("INSERT INTO message_statuses (tenant_id, wamid, status, occurred_at, raw) "
                         "VALUES ($1, 'wamid.late', $2, now() + make_interval(mins => $3), '{}')", tenant.id, status, minute)
    await db.execute("UPDATE messages SET wamid = 'wamid.late' WHERE id = $1", message)  # adopt never ran
    assert await adopt_orphans(db) == 3
    assert await db.fetchval("SELECT status FROM messages WHERE id = $1", message) == "read"
    assert await db.fetchval("SELECT count(*) FROM message_statuses WHERE message_id IS NULL") == 0
    assert await adopt_orphans(db) == 0


async def test_value_level_errors_are_kept_and_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    body = recorded_bytes("change_errors")
    with caplog.at_level("ERROR", logger="parlo.whatsapp.webhook"):
        outcome = await env.receiver.receive(body, sign(body, SECRET_A))
    assert outcome.status == 200
    assert await env.db.fetchval("SELECT count(*) FROM webhook_receipts") == 1  # the raw JSON keeps the details
    [record] = [r for r in caplog.records if r.getMessage() == "Meta reported an error for a WhatsApp number"]
    assert record.code == 131000 and record.phone_number_id == "106540352242922"


async def test_a_number_added_a_moment_ago_under_a_known_app_secret_is_not_dropped(db: asyncpg.Connection,
                                                                                  database_url: str) -> None:
    """One Meta app (one secret) serves many numbers: the first message to a number added after
    the routes were read must be stored, not ignored as addressed to nobody."""
    from cryptography.fernet import Fernet

    from bench.simulator import payloads
    from bench.simulator.webhooks import encode, sign
    from engine.crypto import SecretBox
    from engine.db.pool import create_pool
    from engine.whatsapp import channels
    from engine.whatsapp.webhook import WebhookReceiver

    box = SecretBox(Fernet.generate_key().decode())
    first = await tenants.create(db, "Primo")
    await channels.add(db, box, first.id, phone_number_id="1110001", waba_id="2220001", app_secret="shared-app-secret",
                       verify_token="v1", access_token="t1")
    pool = await create_pool(database_url)
    try:
        receiver = WebhookReceiver(pool, box, max_bytes=3_000_000)

        def delivery(pnid: str, wamid: str) -> bytes:
            return encode(payloads.inbound(payloads.text_message("393331112222", "ciao", wamid=wamid),
                                           waba_id="2220000", phone_number_id=pnid, display_phone_number="39000"))

        body = delivery("1110001", "wamid.first")
        assert (await receiver.receive(body, sign(body, "shared-app-secret"))).status == 200  # routes now read
        second = await tenants.create(db, "Secondo")
        await channels.add(db, box, second.id, phone_number_id="1110002", waba_id="2220002", app_secret="shared-app-secret",
                           verify_token="v2", access_token="t2")
        body = delivery("1110002", "wamid.second")
        assert (await receiver.receive(body, sign(body, "shared-app-secret"))).status == 200
        stored = await db.fetchval("SELECT tenant_id FROM messages WHERE wamid = 'wamid.second'")
        assert stored == second.id
    finally:
        await pool.close()
