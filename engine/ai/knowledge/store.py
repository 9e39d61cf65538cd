"""The knowledge base in PostgreSQL: sources, documents and chunks with their embeddings.

Adding or re-syncing a source is incremental: a document whose content hash did not change is
skipped, and a changed document's chunks reuse any embedding already stored for the same chunk
text (by SHA-256), so that editing one paragraph embeds one chunk, not the whole site.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np

from engine.ai.knowledge.chunking import chunk_document, contextual_text
from engine.ai.knowledge.embeddings import Embedder, ProviderEmbedder, embed_passages
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


async def sync_documents(conn: asyncpg.Connection, source: Source, documents: Sequence[Extracted],
                         embedder: Embedder | ProviderEmbedder, *, complete: bool = True,
                         progress: Progress | None = None, budget: int = 320,
                         count: Callable[[str], int] | None = None) -> SyncStats:
    """Make the source's documents equal to ``documents``: add new ones, re-chunk changed ones
    (and those embedded by another embedder), skip unchanged ones and, when ``complete`` (the list
    is the whole source), remove the rest. Each document is written in its own transaction, so a
    failure half-way keeps what was done and the rest of the last good content.

    The offline model embeds document by document; a network embedder gets every new chunk of
    the sync at once, in its own batches (one request per document would pay a round trip each),
    before anything is written."""
    stats = SyncStats()
    existing = {r["external_id"]: r for r in await conn.fetch(sql("knowledge", "source_documents"), source.id,
                                                              embedder.name)}
    remote = bool(getattr(embedder, "remote", False))  # a ProviderEmbedder, or one wrapped for progress
    plans: list[tuple[Extracted, list[Any], list[str], list[str]] | None] = []
    for doc in documents:
        stats.dropped_lines += doc.dropped_lines
        old = existing.get(doc.external_id)
        if old is not None and old["content_hash"] == doc.content_hash and old["current"]:
            plans.append(None)
            continue
        pieces = chunk_document(doc.text, budget=budget, **({"count": count} if count else {}))
        texts = [contextual_text(doc.title, p.text, p.heading) for p in pieces]
        plans.append((doc, pieces, texts, [_sha(t) for t in texts]))
    fresh: dict[str, np.ndarray] = {}
    wanted: dict[str, str] = {}
    if remote:
        hashes = sorted({h for plan in plans if plan for h in plan[3]})
        reuse = await _stored_vectors(conn, source.tenant_id, embedder.name, hashes)
        wanted = {h: t for plan in plans if plan for t, h in zip(plan[2], plan[3]) if h not in reuse}
        vectors = await embed_passages(embedder, list(wanted.values())) if wanted else []
        fresh = {**reuse, **dict(zip(wanted, vectors))}
        stats.chunks_embedded = len(wanted)
    total = len(documents)
    for n, (doc, plan) in enumerate(zip(documents, plans), 1):
        if plan is None:
            stats.unchanged += 1
        else:
            _, pieces, texts, hashes = plan
            if remote:
                vectors = [fresh[h] for h in hashes]
                stats.chunks_reused += sum(1 for h in hashes if h not in wanted)
            else:
                reuse = await _stored_vectors(conn, source.tenant_id, embedder.name, hashes)
                missing = [i for i, h in enumerate(hashes) if h not in reuse]
                new = await embed_passages(embedder, [texts[i] for i in missing]) if missing else None
                vectors = [reuse[h] if h in reuse else new[missing.index(i)]  # type: ignore[index]
                           for i, h in enumerate(hashes)]
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
            if doc.external_id not in existing:
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


async def _stored_vectors(conn: asyncpg.Connection, tenant_id: uuid.UUID, embedder: str,
                          hashes: Sequence[str]) -> dict[str, np.ndarray]:
    """Vectors already stored for these chunk texts by this embedder (any document of the tenant)."""
    if not hashes:
        return {}
    return {r["text_sha256"]: np.asarray(r["embedding"], dtype=np.float32) for r in await conn.fetch(
        sql("knowledge", "embeddings_by_hash"), tenant_id, embedder, list(hashes))}


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
    indexes). Chunks of another embedder are left out: their vectors are not comparable (they come
    back after the source is synced again with this embedder)."""
    rows = await conn.fetch(sql("knowledge", "tenant_chunks"), tenant_id, embedder)
    records = [ChunkRecord(r["id"], r["text"], r["title"], r["citation"], r["kind"], r["url"]) for r in rows]
    vectors = np.array([np.asarray(r["embedding"], dtype=np.float32) for r in rows], dtype=np.float32) \
        if rows else np.zeros((0, 0), dtype=np.float32)
    return records, vectors
