"""The in-memory indexes a KnowledgeShard holds: one :class:`HybridIndex` per tenant it owns,
built from PostgreSQL on first use and rebuilt after a sync. Plain Python, so it is tested without
Ray; ``actors/knowledge_shard.py`` is a shell around one :class:`TenantIndexes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg
import numpy as np

from engine.ai.knowledge.embeddings import Embedder, in_model_thread
from engine.ai.knowledge.index import HybridIndex
from engine.ai.knowledge.store import ChunkRecord, load_chunks


@dataclass(frozen=True, slots=True)
class Passage:
    chunk_id: int
    text: str
    title: str
    source: str
    source_kind: str
    url: str | None
    score: float
    bm25: float
    dense: float

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(slots=True)
class _Loaded:
    index: HybridIndex
    records: list[ChunkRecord]
    loaded_at: float


class TenantIndexes:
    def __init__(self, embedder: Embedder | None, *, embedder_name: str | None = None, language: str = "italian",
                 alpha: float = 0.5) -> None:
        """``embedder`` embeds queries that arrive without a vector; a shard that is always given
        the vector needs only the model's name (the chunks it loads are that model's)."""
        if embedder is None and embedder_name is None:
            raise ValueError("an embedder or its name is needed")
        self.embedder = embedder
        self.embedder_name = embedder_name or embedder.name  # type: ignore[union-attr]
        self.language = language
        self.alpha = alpha
        self._loaded: dict[uuid.UUID, _Loaded] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    async def load(self, pool: asyncpg.Pool | asyncpg.Connection, tenant_id: uuid.UUID) -> int:
        """(Re)build the tenant's index from PostgreSQL; searches keep using the old one until
        the new one is ready."""
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            records, vectors = await load_chunks(pool, tenant_id, self.embedder_name)
            index = await asyncio.to_thread(HybridIndex, [r.text for r in records], vectors, language=self.language)
            self._loaded[tenant_id] = _Loaded(index, records, time.time())
            return len(records)

    def forget(self, tenant_id: uuid.UUID) -> None:
        self._loaded.pop(tenant_id, None)

    async def search(self, pool: asyncpg.Pool | asyncpg.Connection, tenant_id: uuid.UUID, query: str, *, k: int = 5,
                     query_vector: np.ndarray | None = None, min_score: float = 0.0) -> list[Passage]:
        loaded = self._loaded.get(tenant_id)
        if loaded is None:
            await self.load(pool, tenant_id)
            loaded = self._loaded[tenant_id]
        if not loaded.records or not query.strip():
            return []
        if query_vector is None:
            if self.embedder is None:
                raise ValueError("this index has no embedder: pass the query's vector")
            query_vector = await in_model_thread(self.embedder.query, query)
        hits = loaded.index.search(query, query_vector, k=k, alpha=self.alpha)
        return [Passage(r.chunk_id, r.text, r.title, r.source, r.source_kind, r.url, h.score, h.bm25, h.dense)
                for h in hits if h.score >= min_score for r in [loaded.records[h.position]]]

    async def unknown(self, pool: asyncpg.Pool | asyncpg.Connection, tenant_id: uuid.UUID,
                      words: Sequence[str]) -> set[str]:
        """The words the tenant's knowledge base never uses (as the index stems them)."""
        loaded = self._loaded.get(tenant_id)
        if loaded is None:
            await self.load(pool, tenant_id)
            loaded = self._loaded[tenant_id]
        return loaded.index.unknown(words)

    def stats(self) -> dict[str, object]:
        return {"tenants": len(self._loaded), "chunks": sum(len(x.records) for x in self._loaded.values())}
