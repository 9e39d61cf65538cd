"""OutboxDispatcher: a detached, named actor that sends what the outbox holds, and fetches
inbound media in a second loop (both are Graph API I/O with the channels' tokens).

It owns its loop (started by :meth:`start`, idempotent), so a caller that goes away cannot
cancel a send half way. Killed, it restarts and claims again; rows it held come back when their
lease ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import ray
import redis.asyncio as aioredis

from actors import NAMESPACE
from actors.settings import public_settings, secret_runtime_env
from engine import events
from engine.config import Settings, load_settings
from engine.crypto import secret_box
from engine.db.pool import create_pool
from engine.logging import configure_logging
from engine.pacing import Pacer
from engine.retry import RetryStrategy
from engine.services import database_url, redis_url
from engine.whatsapp.channels import ChannelRoute
from engine.whatsapp.dispatcher import Dispatcher, Outcome
from engine.whatsapp.graph import GraphClient
from engine.whatsapp.media import MediaFetcher, storage_for
from engine.whatsapp.webhook import RouteCache

NAME = "outbox-dispatcher"
log = logging.getLogger("parlo.dispatcher")


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class OutboxDispatcher:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings: Settings = load_settings(**settings)
        configure_logging(self.settings.log_level, json=self.settings.log_json)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.dispatcher: Dispatcher | None = None
        self.media: MediaFetcher | None = None
        self._starting = asyncio.Lock()
        # Ray runs an async actor's constructor inside its event loop: start at once, so that a
        # dispatcher restarted by Ray after a crash resumes without anyone calling start().
        self._boot = asyncio.get_running_loop().create_task(self.start())

    async def start(self) -> bool:
        """Start the loop if it is not running. Returns True if it was started now."""
        async with self._starting:
            if self._task is not None and not self._task.done():
                return False
            await self._start()
            return True

    async def _start(self) -> None:
        s = self.settings
        pool = await create_pool(database_url(s), min_size=2, max_size=8)
        self._redis = aioredis.from_url(redis_url(s))
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64))
        clients: dict[Any, GraphClient] = {}

        def graph_for(route: ChannelRoute) -> GraphClient:
            client = clients.get(route.channel_id)
            if client is None:
                client = clients[route.channel_id] = GraphClient(
                    route.access_token, base_url=s.graph_base_url, api_version=s.graph_api_version, client=http,
                    timeout=s.graph_timeout_s)
            return client

        self.dispatcher = Dispatcher(
            pool, RouteCache(pool, secret_box(s)), graph_for,
            pacer=Pacer(s.outbound_rate_per_number, s.outbound_rate_per_recipient, s.outbound_recipient_burst),
            retry=RetryStrategy(max_attempts=s.outbox_max_attempts, base_delay_s=s.outbox_base_delay_s,
                                max_delay_s=s.outbox_max_delay_s),
            lease_s=s.outbox_lease_s, on_outcome=self._publish)
        self._stop.clear()
        self.media = MediaFetcher(pool, RouteCache(pool, secret_box(s)), graph_for, storage_for(s),
                                  max_bytes=s.media_max_bytes)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self.dispatcher.run(self._stop))
        self._task.add_done_callback(self._finished)
        self._media_task = loop.create_task(self._fetch_media())
        self._media_task.add_done_callback(self._finished)

    async def _fetch_media(self, idle_s: float = 1.0) -> None:
        """Inbound media runs beside the outbox in this actor: both are I/O-bound Graph API work."""
        assert self.media is not None
        while not self._stop.is_set():
            try:
                fetched = await self.media.run_once()
            except Exception:
                log.exception("media fetch round failed")
                fetched = 0
            if not fetched:
                await asyncio.sleep(idle_s)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("dispatcher loop stopped", exc_info=task.exception())

    async def _publish(self, outcome: Outcome) -> None:
        if outcome.message_status is None:
            return
        await events.publish(self._redis, outcome.tenant_id, "message.status",
                             {"conversation_id": outcome.conversation_id, "message_id": outcome.message_id,
                              "wamid": outcome.wamid, "status": outcome.message_status, "reason": outcome.reason},
                             maxlen=self.settings.events_stream_maxlen)

    async def stats(self) -> dict[str, Any]:
        d = self.dispatcher
        running = self._task is not None and not self._task.done()
        m = self.media
        return {"running": running, "sent": d.sent if d else 0, "failed": d.failed if d else 0,
                "retried": d.retried if d else 0, "media_fetched": m.fetched if m else 0,
                "media_failed": m.failed if m else 0}

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


def ensure_dispatcher(settings: Settings) -> Any:
    handle = OutboxDispatcher.options(  # type: ignore[attr-defined]
        name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        runtime_env=secret_runtime_env(settings) or None,
    ).remote(public_settings(settings))
    return handle
