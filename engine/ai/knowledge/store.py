"""The knowledge base in PostgreSQL: sources, documents and chunks with their embeddings.

Adding or re-syncing a source is incremental: a document whose content hash did not change is
skipped, and a changed document's chunks reuse any embedding already stored for the same chunk
text (by SHA-256), so that editing one paragraph embeds one chunk, not the whole site.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np

from engine.ai.knowledge.chunking import chunk_document, contextual_text
from engine.ai.knowledge.embeddings import Embedder, in_model_thread
from engine.ai.knowledge.extract import Extracted
from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput, NotFound

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True, slots=True)
class Source:
    id: uuid.UUID
    tenant_id: uuid.UUID
    kind: str
    name: str
    url: str | None
    state: str
    last_sync_at: datetime | None
    last_error: str | None
    stats: dict[str, Any]


@dataclass(slots=True)
class SyncStats:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    dropped_lines: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged, "removed": self.removed,
                "chunks_embedded": self.chunks_embedded, "chunks_reused": self.chunks_reused,
                "dropped_instruction_lines": self.dropped_lines, "errors": self.errors[:20]}


def _source(row: asyncpg.Record) -> Source:
    return Source(**{k: row[k] for k in Source.__dataclass_fields__})


async def add_source(conn: asyncpg.Connection, tenant_id: uuid.UUID, kind: str, name: str,
                     url: str | None = None) -> Source:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidInput("a source name must be 1 to 200 characters")
    row = await conn.fetchrow(sql("knowledge", "add_source"), tenant_id, kind, name, url)
    if row is None:
        raise Conflict(f"the knowledge base already has a source named {name!r}")
    return _source(row)


async def get_source(conn: asyncpg.Connection, tenant_id: uuid.UUID, name_or_id: str) -> Source:
    try:
        source_id: uuid.UUID | None = uuid.UUID(name_or_id)
    except ValueError:
        source_id = None
    row = await conn.fetchrow(sql("knowledge", "get_source"), tenant_id, name_or_id, source_id)
    if row is None:
        raise NotFound(f"no knowledge source {name_or_id!r}")
    return _source(row)


async def list_sources(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(sql("knowledge", "list_sources"), tenant_id)]


async def remove_source(conn: asyncpg.Connection, tenant_id: uuid.UUID, source_id: uuid.UUID) -> None:
    await conn.execute(sql("knowledge", "remove_source"), tenant_id, source_id)


async def set_state(conn: asyncpg.Connection, source_id: uuid.UUID, state: str, *, error: str | None = None,
                    stats: dict[str, Any] | None = None) -> None:
    await conn.execute(sql("knowledge", "set_state"), source_id, state, error, stats)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def sync_documents(conn: asyncpg.Connection, source: Source, documents: Sequence[Extracted], embedder: Embedder,
                         *, complete: bool = True, progress: Progress | None = None, budget: int = 320,
                         count: Callable[[str], int] | None = None) -> SyncStats:
    """Make the source's documents equal to ``documents``: add new ones, re-chunk changed ones,
    skip unchanged ones and, when ``complete`` (the list is the whole source), remove the rest.
    Each document is written in its own transaction, so a failure half-way keeps what was done
    and the rest of the last good content."""
    stats = SyncStats()
    existing = {r["external_id"]: r for r in await conn.fetch(sql("knowledge", "source_documents"), source.id)}
    total = len(documents)
    for n, doc in enumerate(documents, 1):
        stats.dropped_lines += doc.dropped_lines
        old = existing.get(doc.external_id)
        if old is not None and old["content_hash"] == doc.content_hash:
            stats.unchanged += 1
        else:
            pieces = chunk_document(doc.text, budget=budget, **({"count": count} if count else {}))
            texts = [contextual_text(doc.title, p.text, p.heading) for p in pieces]
            hashes = [_sha(t) for t in texts]
            reuse = {r["text_sha256"]: r["embedding"] for r in await conn.fetch(
                sql("knowledge", "embeddings_by_hash"), source.tenant_id, embedder.name, hashes)}
            missing = [i for i, h in enumerate(hashes) if h not in reuse]
            fresh = await in_model_thread(embedder.passages, [texts[i] for i in missing]) if missing else None
            vectors: list[np.ndarray] = []
            for i, h in enumerate(hashes):
                vectors.append(np.asarray(reuse[h], dtype=np.float32) if h in reuse
                               else fresh[missing.index(i)])  # type: ignore[index]
            stats.chunks_embedded += len(missing)
            stats.chunks_reused += len(hashes) - len(missing)
            async with conn.transaction():
                document_id = await conn.fetchval(
                    sql("knowledge", "upsert_document"), source.tenant_id, source.id, doc.external_id, doc.title,
                    doc.url, doc.content_hash, doc.text)
                await conn.execute(sql("knowledge", "delete_chunks"), document_id)
                await conn.executemany(sql("knowledge", "insert_chunk"), [
                    (source.tenant_id, document_id, i, t, h, pieces[i].tokens, embedder.name, vectors[i])
                    for i, (t, h) in enumerate(zip(texts, hashes))])
            if old is None:
                stats.added += 1
            else:
                stats.updated += 1
        if progress is not None:
            progress("indexing", n, total)
    if complete:
        gone = [r["id"] for key, r in existing.items() if key not in {d.external_id for d in documents}]
        if gone:
            await conn.execute(sql("knowledge", "delete_documents"), gone)
            stats.removed = len(gone)
    return stats


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    chunk_id: int
    text: str
    title: str
    source: str       # the document's name as a citation shows it (a file's name without extension)
    source_kind: str
    url: str | None


async def load_chunks(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: uuid.UUID,
                      embedder: str) -> tuple[list[ChunkRecord], np.ndarray]:
    """Every chunk of the tenant embedded by ``embedder``, with its vectors (what a KnowledgeShard
    indexes). Chunks of another embedder are left out: their vectors are not comparable."""
    rows = await conn.fetch(sql("knowledge", "tenant_chunks"), tenant_id, embedder)
    records = [ChunkRecord(r["id"], r["text"], r["title"], r["citation"], r["kind"], r["url"]) for r in rows]
    vectors = np.array([np.asarray(r["embedding"], dtype=np.float32) for r in rows], dtype=np.float32) \
        if rows else np.zeros((0, 384), dtype=np.float32)
    return records, vectors
