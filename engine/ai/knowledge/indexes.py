"""The in-memory indexes a KnowledgeShard holds: one :class:`HybridIndex` per tenant it owns,
built from PostgreSQL on first use and rebuilt after a sync. Plain Python, so it is tested without
Ray; ``actors/knowledge_shard.py`` is a shell around one :class:`TenantIndexes`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from engine.ai.knowledge.embeddings import Embedder, in_model_thread
from engine.ai.knowledge.index import HybridIndex
from engine.ai.knowledge.store import ChunkRecord, load_chunks

log = logging.getLogger("parlo.knowledge")


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
    embedder: str
    dim: int


class TenantIndexes:
    def __init__(self, embedder: Embedder | None, *, embedder_name: str | None = None, language: str = "italian",
                 alpha: float = 0.5) -> None:
        """``embedder`` embeds queries that arrive without a vector; a shard that is always given
        the vector needs only the model's name (the chunks it loads are that model's). A search
        may name another embedder (the Assistant's settings changed while this shard lived on):
        the tenant's index is then rebuilt from that embedder's chunks."""
        if embedder is None and embedder_name is None:
            raise ValueError("an embedder or its name is needed")
        self.embedder = embedder
        self.embedder_name = embedder_name or embedder.name  # type: ignore[union-attr]
        self.language = language
        self.alpha = alpha
        self._loaded: dict[uuid.UUID, _Loaded] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    async def load(self, pool: asyncpg.Pool | asyncpg.Connection, tenant_id: uuid.UUID,
                   embedder_name: str | None = None) -> int:
        """(Re)build the tenant's index from PostgreSQL, from the chunks of ``embedder_name`` (by
        default the one its index uses now, else this object's); searches keep using the old one
        until the new one is ready."""
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            current = self._loaded.get(tenant_id)
            name = embedder_name or (current.embedder if current is not None else self.embedder_name)
            records, vectors = await load_chunks(pool, tenant_id, name)
            index = await asyncio.to_thread(HybridIndex, [r.text for r in records], vectors, language=self.language)
            dim = int(vectors.shape[1]) if vectors.ndim == 2 and len(records) else 0
            self._loaded[tenant_id] = _Loaded(index, records, time.time(), name, dim)
            return len(records)

    async def _get(self, pool: asyncpg.Pool | asyncpg.Connection, tenant_id: uuid.UUID,
                   embedder_name: str | None) -> _Loaded:
        loaded = self._loaded.get(tenant_id)
        if loaded is None or (embedder_name is not None and loaded.embedder != embedder_name):
            await self.load(pool, tenant_id, embedder_name)
            loaded = self._loaded[tenant_id]
        return loaded

    def forget(self, tenant_id: uuid.UUID) -> None:
        self._loaded.pop(tenant_id, None)

    async def search(self, pool: asyncpg.Pool | asyncpg.Connection, tenant_id: uuid.UUID, query: str, *, k: int = 5,
                     query_vector: np.ndarray | None = None, min_score: float = 0.0,
                     embedder_name: str | None = None) -> list[Passage]:
        """The best passages; keywords only (BM25) when no vector can be had: none given and no
        embedder here (the network embedder failed for this question), or one of another size
        than the index's (a misconfiguration, logged)."""
        loaded = await self._get(pool, tenant_id, embedder_name)
        if not loaded.records or not query.strip():
            return []
        if query_vector is None and self.embedder is not None and loaded.embedder == self.embedder.name:
            query_vector = await in_model_thread(self.embedder.query, query)
        if query_vector is not None and np.shape(query_vector) != (loaded.dim,):
            log.warning("query vector does not fit the index: keywords only",
                        extra={"tenant": str(tenant_id), "embedder": loaded.embedder,
                               "dim": loaded.dim, "query_dim": int(np.size(query_vector))})
            query_vector = None
        alpha = self.alpha if query_vector is not None else 0.0
        hits = loaded.index.search(query, query_vector, k=k, alpha=alpha)
        return [Passage(r.chunk_id, r.text, r.title, r.source, r.source_kind, r.url, h.score, h.bm25, h.dense)
                for h in hits if h.score >= min_score for r in [loaded.records[h.position]]]

    async def unknown(self, pool: asyncpg.Pool | asyncpg.Connection, tenant_id: uuid.UUID,
                      words: Sequence[str]) -> set[str]:
        """The words the tenant's knowledge base never uses (as the index stems them)."""
        return (await self._get(pool, tenant_id, None)).index.unknown(words)

    def stats(self) -> dict[str, object]:
        return {"tenants": len(self._loaded), "chunks": sum(len(x.records) for x in self._loaded.values())}
