"""ConversationShard: a detached, named actor holding the hot state of many conversations.

There are ``S`` of them (``PARLO_CONVERSATION_SHARDS``), never one per conversation. A shard
rebuilds its state from PostgreSQL when it starts, so it can die and come back without loss.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import ray

from actors import NAMESPACE
from actors.settings import public_settings, secret_runtime_env
from engine.config import Settings, load_settings
from engine.conversations.hot_state import ConversationStore
from engine.db.pool import create_pool
from engine.logging import configure_logging
from engine.services import database_url
from engine.sharding import shard_name

log = logging.getLogger("parlo.shard")

@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class ConversationShard:
    def __init__(self, shard_index: int, shard_count: int, settings: dict[str, Any]) -> None:
        self.settings = load_settings(**settings)
        configure_logging(self.settings.log_level, json=self.settings.log_json)
        self.store = ConversationStore(shard_index, shard_count)
        self._pool: Any = None
        self._starting = asyncio.Lock()

    async def _ready(self) -> Any:
        if self._pool is None:
            async with self._starting:
                if self._pool is None:
                    pool = await create_pool(database_url(self.settings), min_size=1, max_size=4)
                    count = await self.store.load(pool)
                    self._pool = pool
                    log.info("shard loaded", extra={"shard": self.store.shard_index, "conversations": count})
        return self._pool

    async def ping(self) -> dict[str, object]:
        await self._ready()
        return self.store.stats()

    async def get(self, conversation_id: str) -> dict[str, object] | None:
        pool = await self._ready()
        state = await self.store.get(pool, uuid.UUID(conversation_id))
        return state.as_dict() if state else None

    async def apply(self, changed: dict[str, dict[str, Any] | None]) -> int:
        """Committed state of some conversations (None: re-read it). Returns how many were updated."""
        pool = await self._ready()
        return await self.store.apply(pool, {uuid.UUID(cid): row for cid, row in changed.items()})

    async def reload(self) -> int:
        pool = await self._ready()
        return await self.store.load(pool)


def ensure_shards(settings: Settings) -> list[Any]:
    """Get or create the ``S`` shard actors (idempotent, safe from many replicas at once)."""
    config = public_settings(settings)
    count = settings.conversation_shards
    return [
        ConversationShard.options(  # type: ignore[attr-defined]
            name=shard_name(i), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            runtime_env=secret_runtime_env(settings) or None,
        ).remote(i, count, config)
        for i in range(count)
    ]
