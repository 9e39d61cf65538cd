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
import redis.asyncio as aioredis

from actors import NAMESPACE
from actors.settings import public_settings, secret_runtime_env

from engine import events
from engine.ai.autoreply import AutoReplier, AutoReplyPolicy
from engine.config import Settings, load_settings
from engine.conversations.hot_state import ConversationStore
from engine.db.pool import create_pool
from engine.logging import configure_logging
from engine.services import database_url, resolve
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
        self._auto: AutoReplier | None = None

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

    # called by every Gateway replica several times a second: a task event each (the worker's
    # buffer, then the GCS) cost more than the call's own work, and no one looks them up
    @ray.method(enable_task_events=False)
    async def apply(self, changed: dict[str, dict[str, Any] | None]) -> int:
        """Committed state of some conversations (None: re-read it). Returns how many were updated.
        Conversations whose customer just wrote go to the auto-replier."""
        pool = await self._ready()
        count = await self.store.apply(pool, {uuid.UUID(cid): row for cid, row in changed.items()})
        if self.store.customer_wrote:
            replier = await self._replier()
            for tenant_id, conversation_id in self.store.customer_wrote:
                replier.customer_wrote(tenant_id, conversation_id)
        return count

    async def _replier(self) -> AutoReplier:
        if self._auto is None:
            pool = await self._ready()
            redis = aioredis.from_url(resolve(self.settings).redis)
            maxlen = self.settings.events_stream_maxlen
            app = self.settings.serve_app

            async def answer(request: dict[str, Any]) -> Any:
                from ray import serve

                handle = serve.get_deployment_handle("Assistant", app_name=app)
                # the Assistant shows the run to agents itself; cancelling this call (a newer
                # customer message) cancels the run there, which closes the model's stream
                return await handle.auto_reply.remote(request)

            async def publish(tenant_id: uuid.UUID, kind: str, data: dict[str, Any]) -> Any:
                return await events.publish(redis, tenant_id, kind, data, maxlen=maxlen)

            self._auto = AutoReplier(pool, answer, publish, AutoReplyPolicy(debounce_s=self.settings.ai_debounce_s))
        return self._auto

    async def auto_stats(self) -> dict[str, int]:
        replier = self._auto
        return {"replied": replier.replied if replier else 0, "cancelled": replier.cancelled if replier else 0}

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
