"""Channels: the WhatsApp Business numbers of a tenant, and the routing of webhooks to them.

App secrets and access tokens are encrypted at rest (``engine.crypto``); the verify token is kept
encrypted and as a SHA-256 fingerprint for the GET handshake. Nothing here returns a secret
except :class:`ChannelRoute`, which the webhook and the outbox need in memory.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from engine.crypto import SecretBox, fingerprint
from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput, NotFound

_NUMERIC_ID = re.compile(r"^\d{1,32}$")


@dataclass(frozen=True, slots=True)
class Channel:
    id: uuid.UUID
    tenant_id: uuid.UUID
    phone_number_id: str
    waba_id: str
    display_phone: str | None
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ChannelRoute:
    channel_id: uuid.UUID
    tenant_id: uuid.UUID
    phone_number_id: str
    waba_id: str
    app_secret: str = field(repr=False)
    access_token: str = field(repr=False)


def _validate(phone_number_id: str, waba_id: str, app_secret: str, verify_token: str, access_token: str) -> None:
    for name, value in (("phone number id", phone_number_id), ("WABA id", waba_id)):
        if not _NUMERIC_ID.match(value):
            raise InvalidInput(f"the {name} must be digits only (as Meta shows it), got {value[:40]!r}")
    for name, value in (("app secret", app_secret), ("verify token", verify_token), ("access token", access_token)):
        if not value or len(value) > 4096 or any(ch.isspace() or ord(ch) < 32 for ch in value):
            raise InvalidInput(f"the {name} must be 1 to 4096 characters without spaces")


async def add(conn: asyncpg.Connection, box: SecretBox, tenant_id: uuid.UUID, *, phone_number_id: str, waba_id: str,
              app_secret: str, verify_token: str, access_token: str, display_phone: str | None = None,
              actor: str = "cli") -> Channel:
    _validate(phone_number_id, waba_id, app_secret, verify_token, access_token)
    async with conn.transaction():
        row = await conn.fetchrow(
            sql("channels", "add_channel"), tenant_id, phone_number_id, waba_id, display_phone,
            box.encrypt(app_secret), box.encrypt(access_token), box.encrypt(verify_token),
            fingerprint(verify_token), fingerprint(app_secret))
        if row is None:
            raise Conflict(f"phone number id {phone_number_id} is already registered")
        await conn.execute(sql("tenants", "audit"), tenant_id, actor, "channel.add", phone_number_id,
                           {"waba_id": waba_id, "display_phone": display_phone})
    return Channel(**dict(row))


async def list_all(conn: asyncpg.Connection, tenant_id: uuid.UUID | None = None) -> list[dict[str, object]]:
    return [dict(r) for r in await conn.fetch(sql("channels", "list_channels"), tenant_id)]


async def remove(conn: asyncpg.Connection, phone_number_id: str, tenant_id: uuid.UUID | None = None,
                 actor: str = "cli") -> None:
    """Deactivate a channel: its conversations and messages stay; webhooks for it are ignored from now on."""
    async with conn.transaction():
        row = await conn.fetchrow(sql("channels", "remove_channel"), phone_number_id, tenant_id)
        if row is None:
            raise NotFound(f"no active channel with phone number id {phone_number_id}")
        await conn.execute(sql("tenants", "audit"), row["tenant_id"], actor, "channel.remove", phone_number_id, {})


async def routes(conn: asyncpg.Connection | asyncpg.Pool, box: SecretBox) -> dict[str, ChannelRoute]:
    """phone_number_id → route, with secrets decrypted, for every active channel."""
    rows = await conn.fetch(sql("channels", "active_routes"))
    return {
        r["phone_number_id"]: ChannelRoute(r["id"], r["tenant_id"], r["phone_number_id"], r["waba_id"],
                                           box.decrypt(r["app_secret_encrypted"]), box.decrypt(r["access_token_encrypted"]))
        for r in rows
    }


async def verify_token_matches(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> bool:
    return await conn.fetchval(sql("channels", "channel_by_verify_token"), fingerprint(token)) is not None
