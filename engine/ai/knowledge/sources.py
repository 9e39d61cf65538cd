"""The knowledge base as the API offers it to a tenant's admins (``/api/kb/sources``): list, add a
file, FAQ or WordPress source, ask for a sync, replace a file, remove. Each call runs in the
caller's tenant transaction, checks ``knowledge.manage`` and writes the audit log; the sync itself
runs afterwards, elsewhere (engine/ai/knowledge/sync.py in the Assistant deployment)."""

from __future__ import annotations

import uuid
from pathlib import PurePath
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from engine.ai.knowledge import store, wordpress
from engine.ai.knowledge.extract import MAX_FILE_BYTES
from engine.ai.knowledge.sync import FILE_SUFFIXES, check_upload, kind_of
from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput
from engine.inbox.audit import record
from engine.inbox.principal import Principal

ACCEPTED = FILE_SUFFIXES + (".csv",)
MAX_UPLOAD = MAX_FILE_BYTES
PERMISSION = "knowledge.manage"


class WordPressSource(BaseModel):
    model_config = {"extra": "forbid"}
    kind: Literal["wordpress"]
    url: str = Field(min_length=1, max_length=2000)
    name: str | None = Field(default=None, min_length=1, max_length=200)


def view(row: store.Source | dict[str, Any]) -> dict[str, Any]:
    """A source as the API shows it (JSON types only)."""
    data = {k: getattr(row, k) for k in store.Source.__dataclass_fields__} if isinstance(row, store.Source) \
        else dict(row)
    stats = dict(data.get("stats") or {})
    stats.pop("wordpress_cursor", None)  # bookkeeping of the sync, not a number for people
    last = data.get("last_sync_at")
    return {"id": str(data["id"]), "kind": data["kind"], "name": data["name"], "url": data.get("url"),
            "state": data["state"], "last_sync_at": last.isoformat() if last is not None else None,
            "last_error": data.get("last_error"), "stats": stats,
            "documents": int(data.get("documents") or 0), "chunks": int(data.get("chunks") or 0),
            # which embedder its chunks were stored by (two while a switch is half-synced)
            "embedders": list(data.get("embedders") or [])}


def check_file(filename: str | None, size: int) -> tuple[str, str]:
    """(kind, name) of an uploaded file, or a refusal naming the accepted types / the limit."""
    filename = PurePath((filename or "").replace("\\", "/")).name
    if not filename:
        raise InvalidInput(f"the upload has no file name; accepted types: {', '.join(ACCEPTED)}")
    if PurePath(filename).suffix.lower() not in ACCEPTED:
        raise InvalidInput(f"{PurePath(filename).suffix or 'a file without an extension'} cannot be added; "
                           f"accepted types: {', '.join(ACCEPTED)}")
    if size == 0:
        raise InvalidInput(f"{filename} is empty")
    return kind_of(filename), filename


async def list_sources(conn: asyncpg.Connection, who: Principal) -> list[dict[str, Any]]:
    who.require(PERMISSION)
    return [view(row) for row in await store.list_sources(conn, who.tenant_id)]


async def add_file(conn: asyncpg.Connection, who: Principal, filename: str, name: str | None) -> dict[str, Any]:
    """A new file or FAQ source for ``filename`` (named after it unless ``name``), marked syncing."""
    who.require(PERMISSION)
    kind, filename = check_file(filename, 1)
    source = await store.add_source(conn, who.tenant_id, kind, name or PurePath(filename).stem)
    await store.set_state(conn, source.id, "syncing")
    await record(conn, who, "kb.source_add", str(source.id), {"kind": kind, "name": source.name, "file": filename})
    return view(await store.get_source(conn, who.tenant_id, str(source.id)))


async def add_wordpress(conn: asyncpg.Connection, who: Principal, body: WordPressSource) -> dict[str, Any]:
    who.require(PERMISSION)
    url = wordpress.site_root(body.url)
    name = body.name or url.split("://", 1)[1]
    source = await store.add_source(conn, who.tenant_id, "wordpress", name[:200], url)
    await store.set_state(conn, source.id, "syncing")
    await record(conn, who, "kb.source_add", str(source.id), {"kind": "wordpress", "name": source.name, "url": url})
    return view(await store.get_source(conn, who.tenant_id, str(source.id)))


async def request_sync(conn: asyncpg.Connection, who: Principal, source_id: uuid.UUID,
                       embedder: str) -> dict[str, Any]:
    """Mark a source syncing: a WordPress site is fetched again; a file or FAQ source only when
    some of its documents were embedded by another embedder than ``embedder`` (the configured
    one), whose stored text is then embedded again. New content for a file comes by uploading it."""
    who.require(PERMISSION)
    source = await store.get_source(conn, who.tenant_id, str(source_id))
    if source.kind != "wordpress" and not await conn.fetchval(sql("knowledge_sync", "has_stale_documents"),
                                                              source.id, embedder):
        raise Conflict(f"{source.name} is a {source.kind} source: upload the file again to sync it")
    await store.set_state(conn, source.id, "syncing")
    await record(conn, who, "kb.source_sync", str(source.id), {"name": source.name})
    return view(await store.get_source(conn, who.tenant_id, str(source.id)))


async def replace_file(conn: asyncpg.Connection, who: Principal, source_id: uuid.UUID, filename: str,
                       size: int) -> dict[str, Any]:
    who.require(PERMISSION)
    source = await store.get_source(conn, who.tenant_id, str(source_id))
    if source.kind == "wordpress":
        raise Conflict(f"{source.name} is a WordPress site: ask for a sync instead of uploading a file")
    _, filename = check_file(filename, size)
    check_upload(source.kind, filename)
    await store.set_state(conn, source.id, "syncing")
    await record(conn, who, "kb.source_replace", str(source.id), {"name": source.name, "file": filename})
    return view(await store.get_source(conn, who.tenant_id, str(source.id)))


async def remove(conn: asyncpg.Connection, who: Principal, source_id: uuid.UUID) -> None:
    who.require(PERMISSION)
    source = await store.get_source(conn, who.tenant_id, str(source_id))
    await store.remove_source(conn, who.tenant_id, source.id)
    await record(conn, who, "kb.source_remove", str(source.id), {"kind": source.kind, "name": source.name})
