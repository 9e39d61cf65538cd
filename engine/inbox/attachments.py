"""Files in conversations: an agent's upload sent as WhatsApp media, and stored media served back.

An upload takes three steps so that no database connection waits on Meta: :func:`prepare_upload`
(visible, allowed, rate limit, window open; in a transaction), :func:`upload` (into our storage and
to Meta's media endpoint; no transaction), :func:`queue_upload` (the outbound message and its media
row; in a transaction, the window checked again).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from engine.crypto import SecretBox
from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from engine.inbox import messages
from engine.inbox.conversations import visible
from engine.inbox.inputs import TooLarge
from engine.inbox.principal import Changes, Principal
from engine.ratelimit import RateLimiter
from engine.whatsapp import outbound
from engine.whatsapp.errors import MetaApiError
from engine.whatsapp.graph import GraphClient
from engine.whatsapp.media import ALLOWED_MIME, Storage, storage_key

MB = 1024 * 1024
# what the Cloud API accepts per media kind (stickers: animated ones may reach 500 KB)
MEDIA_LIMITS = {"image": 5 * MB, "video": 16 * MB, "audio": 16 * MB, "document": 100 * MB, "sticker": 500 * 1024}
MAX_UPLOAD = max(MEDIA_LIMITS.values())
MAX_CAPTION = 1024
NO_CAPTION = ("audio", "sticker")


@dataclass(frozen=True, slots=True)
class UploadTarget:
    conversation_id: uuid.UUID
    tenant_id: uuid.UUID
    phone_number_id: str
    access_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Upload:
    """A checked file: its WhatsApp kind, type, cleaned name and bytes."""

    kind: str
    mime_type: str
    filename: str
    data: bytes = field(repr=False)
    caption: str | None = None


@dataclass(frozen=True, slots=True)
class Uploaded:
    upload: Upload
    meta_media_id: str
    storage_key: str
    sha256: str


@dataclass(frozen=True, slots=True)
class StoredFile:
    storage_key: str
    mime_type: str
    filename: str | None


def limit_for(mime_type: str, ceiling: int | None = None) -> int:
    limit = MEDIA_LIMITS[outbound.media_kind(mime_type)]
    return min(limit, ceiling) if ceiling else limit


def clean_filename(name: str | None, mime_type: str) -> str:
    name = unicodedata.normalize("NFC", (name or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"<>:|?*').strip(" .")
    return name[:200] or f"file.{mime_type.split('/')[-1].split(';')[0][:10]}"


def check(data: bytes, mime_type: str | None, filename: str | None, caption: str | None, *,
          ceiling: int | None = None) -> Upload:
    """The file as WhatsApp will take it, or why not (``TooLarge`` past the kind's size)."""
    mime = (mime_type or "").split(";")[0].strip().lower()
    if not mime or not ALLOWED_MIME.match(mime):
        raise InvalidInput(f"WhatsApp does not accept files of type {mime[:80] or 'unknown'!r}")
    kind = outbound.media_kind(mime)
    limit = limit_for(mime, ceiling)
    if len(data) > limit:
        raise TooLarge(f"a {kind} may be at most {limit // 1024} KiB; this file has {len(data) // 1024} KiB")
    if not data:
        raise InvalidInput("the file is empty")
    if caption is not None:
        caption = caption.strip() or None
    if caption is not None and (kind in NO_CAPTION or len(caption) > MAX_CAPTION):
        raise InvalidInput(f"a caption goes with images, videos and documents, up to {MAX_CAPTION} characters")
    return Upload(kind, mime, clean_filename(filename, mime), data, caption)


async def prepare_upload(conn: asyncpg.Connection, who: Principal, box: SecretBox, conversation_id: uuid.UUID, *,
                         limiter: RateLimiter | None = None, now: datetime | None = None) -> UploadTarget:
    await messages.may_send(conn, who, conversation_id, limiter)
    await outbound.require_open_window(conn, who.tenant_id, conversation_id, now)
    row = await conn.fetchrow(sql("inbox_messages", "send_target"), who.tenant_id, conversation_id)
    if row is None:
        raise NotFound(f"no conversation {conversation_id}")
    if not row["active"] or row["access_token_encrypted"] is None:
        raise Conflict("the conversation's WhatsApp number has been removed; messages cannot be sent on it")
    return UploadTarget(conversation_id, who.tenant_id, row["phone_number_id"], box.decrypt(row["access_token_encrypted"]))


async def upload(target: UploadTarget, file: Upload, storage: Storage,
                 graph_for: Callable[[str], GraphClient]) -> Uploaded:
    """Keep our copy (the inbox shows it), then hand the bytes to Meta for the send."""
    digest = hashlib.sha256(file.data).hexdigest()
    key = storage_key(target.tenant_id, f"out-{uuid.uuid4().hex}")
    await storage.put(key, file.data, file.mime_type)
    graph = graph_for(target.access_token)
    try:
        media_id = await graph.upload_media(target.phone_number_id, file.data, file.mime_type, file.filename)
    except MetaApiError as exc:
        if exc.retryable:
            raise ServiceUnavailable(f"WhatsApp did not take the file now ({exc.reason_en}); try again shortly") from None
        raise InvalidInput(f"WhatsApp refused the file: {exc.reason_en}") from None
    finally:
        await graph.aclose()
    return Uploaded(file, media_id, key, digest)


async def queue_upload(conn: asyncpg.Connection, who: Principal, changes: Changes, conversation_id: uuid.UUID,
                       uploaded: Uploaded, *, now: datetime | None = None) -> dict[str, Any]:
    conversation = await visible(conn, who, conversation_id)
    who.require("conversation.reply")
    file = uploaded.upload
    queued = await outbound.queue_media(conn, who.tenant_id, conversation_id, file.kind,
                                        media_id=uploaded.meta_media_id, caption=file.caption,
                                        filename=file.filename if file.kind == "document" else None,
                                        author_id=who.user_id, now=now)
    await conn.execute(sql("inbox_messages", "insert_outbound_media"), who.tenant_id, queued.message_id,
                       uploaded.meta_media_id, file.mime_type, uploaded.sha256, len(file.data), uploaded.storage_key)
    return await messages.sent(conn, who, changes, conversation, queued, file.kind)


async def locate(conn: asyncpg.Connection, who: Principal, media_id: int) -> StoredFile:
    """Where a stored file is, if ``who`` may see the conversation it belongs to."""
    who.require("conversation.read_own")
    row = await conn.fetchrow(sql("inbox_messages", "media_for_download"), who.tenant_id, media_id)
    if row is None:
        raise NotFound(f"no media {media_id}")
    await visible(conn, who, row["conversation_id"])
    if row["state"] == "pending":
        raise Conflict("this file is still being downloaded from WhatsApp; try again in a moment")
    if row["state"] != "fetched" or not row["storage_key"]:
        raise Conflict(f"this file could not be downloaded from WhatsApp ({row['last_error'] or 'unknown reason'})")
    return StoredFile(row["storage_key"], row["mime_type"] or "application/octet-stream",
                      clean_filename(row["filename"], row["mime_type"] or "application/octet-stream")
                      if row["filename"] else None)


async def read(storage: Storage, stored: StoredFile) -> bytes:
    try:
        return await storage.get(stored.storage_key)
    except (FileNotFoundError, KeyError):
        raise NotFound("the stored file is gone") from None


def inline(mime_type: str) -> bool:
    """Shown in the page (images, audio, video) rather than downloaded."""
    return bool(re.match(r"^(image|audio|video)/", mime_type))
