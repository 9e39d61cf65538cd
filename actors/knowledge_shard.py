"""KnowledgeShard: a detached, named actor holding the in-memory knowledge indexes of the tenants
that hash to it (``PARLO_KNOWLEDGE_SHARDS`` of them, never one per tenant). Indexes are built from
PostgreSQL on first use and rebuilt after a sync, so a shard can die and come back without loss.
Queries arrive with their vector, embedded by the knowledge base's embedder (the offline model's
vector serves routing too; a network embedder's is asked for by the Assistant), and with that
embedder's name: the index holds that embedder's chunks. No vector means keywords only."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
import ray

from actors import NAMESPACE
from actors.settings import public_settings, secret_runtime_env
from engine.ai.knowledge.embeddings import OFFLINE_EMBEDDER
from engine.ai.knowledge.indexes import TenantIndexes
from engine.ai.providers.factory import embedder_name
from engine.config import Settings, load_settings
from engine.db.pool import create_pool
from engine.logging import configure_logging
from engine.services import database_url
from engine.sharding import shard_of

log = logging.getLogger("parlo.knowledge")
__all__ = ["OFFLINE_EMBEDDER", "KnowledgeShard", "ensure_knowledge_shards", "knowledge_shard_name", "shard_for"]


def knowledge_shard_name(index: int) -> str:
    return f"knowledge-shard-{index}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class KnowledgeShard:
    def __init__(self, shard_index: int, settings: dict[str, Any]) -> None:
        self.settings = load_settings(**settings)
        configure_logging(self.settings.log_level, json=self.settings.log_json)
        self.index = shard_index
        self.indexes = TenantIndexes(None, embedder_name=embedder_name(self.settings))
        self._pool: Any = None

    async def _ready(self) -> Any:
        if self._pool is None:
            self._pool = await create_pool(database_url(self.settings), min_size=1, max_size=4)
        return self._pool

    async def search(self, tenant_id: str, query: str, vector: list[float] | None, k: int = 5,
                     embedder: str | None = None) -> list[dict[str, Any]]:
        pool = await self._ready()
        passages = await self.indexes.search(pool, uuid.UUID(tenant_id), query, k=k, embedder_name=embedder,
                                             query_vector=None if vector is None else np.asarray(vector, dtype=np.float32))
        return [p.as_dict() for p in passages]

    async def unknown(self, tenant_id: str, words: list[str]) -> list[str]:
        pool = await self._ready()
        return sorted(await self.indexes.unknown(pool, uuid.UUID(tenant_id), words))

    async def reload(self, tenant_id: str, embedder: str | None = None) -> int:
        pool = await self._ready()
        count = await self.indexes.load(pool, uuid.UUID(tenant_id), embedder)
        log.info("knowledge index rebuilt", extra={"tenant": tenant_id, "chunks": count, "embedder": embedder})
        return count

    async def ping(self) -> dict[str, object]:
        return {"shard": self.index, **self.indexes.stats()}


# One BLAS thread: a query is one matrix-vector product, and two threads fighting over two
# cores with the rest of the engine made it ten times slower (bench/ai_pipeline.py).
SINGLE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def ensure_knowledge_shards(settings: Settings) -> list[Any]:
    config = public_settings(settings)
    runtime_env = secret_runtime_env(settings)
    runtime_env.setdefault("env_vars", {}).update(SINGLE_THREAD)
    return [
        KnowledgeShard.options(  # type: ignore[attr-defined]
            name=knowledge_shard_name(i), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            runtime_env=runtime_env,
        ).remote(i, config)
        for i in range(settings.knowledge_shards)
    ]


def shard_for(shards: list[Any], tenant_id: uuid.UUID | str) -> Any:
    return shards[shard_of(tenant_id, len(shards))]
