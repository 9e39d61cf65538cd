"""The Ray Serve application ``parlo``: the Gateway ingress (FastAPI) and its wiring."""

# No `from __future__ import annotations` here: FastAPI resolves route annotations at runtime,
# and Serve re-creates the ingress class in another module where string annotations break.

import asyncio
import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import ray
import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi import WebSocket
from pydantic import BaseModel, Field
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from ray import serve

import engine
from actors.conversation_shard import ensure_shards
from actors.knowledge_shard import ensure_knowledge_shards, shard_for
from actors.outbox_dispatcher import ensure_dispatcher
from actors.settings import public_settings, secret_runtime_env
from engine import events
from engine import live
from engine.config import Settings, load_settings
from engine.crypto import secret_box
from engine.db.pool import create_pool, pool_stats
from engine.auth.service import login
from engine.auth.tokens import TokenKeys, TokenPair, end_session, rotate, verify_access
from engine.ai.autoreply import relay
from engine.ai.drafts import draft_request, request_as_dict, request_from_dict, tenant_context
from engine.ai.knowledge.indexes import Passage
from engine.ai.knowledge import sources as kb_sources
from engine.ai.ledger import month_spend, usage_report
from engine.ai.pipeline import AskRequest
from engine.ai.knowledge.embeddings import OFFLINE_EMBEDDER
from engine.ai.providers.factory import embedder_name
from engine.db.tenancy import tenant_transaction
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound, ParloError, ServiceUnavailable, Unauthenticated
from engine.inbox.principal import Changes, Principal, load_principal
from engine.inbox import inputs
from engine.inbox import audit_view, canned, chat, notifications, teams, users_admin
from engine.inbox import attachments, templates_view
from engine.inbox import contacts as inbox_contacts
from engine.inbox import conversations as inbox_conversations
from engine.inbox import labels as inbox_labels
from engine.inbox import messages as inbox_messages
from engine.inbox import notes as inbox_notes
from engine.whatsapp.graph import GraphClient
from engine.whatsapp.media import storage_for
from urllib.parse import quote
from starlette.exceptions import HTTPException as StarletteHTTPException
from engine.ratelimit import Limit, RateLimited, RateLimiter
from engine.health import check_all, postgres_check, redis_check
from engine.logging import configure_logging
from engine.sharding import shard_of
from engine.whatsapp.ingest import IngestResult
from engine.whatsapp.webhook import WebhookReceiver
from engine.services import resolve

APP_NAME = "parlo"
REFRESH_COOKIE = "parlo_refresh"


class LoginRequest(BaseModel):
    tenant: str = Field(min_length=1, max_length=63)
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class AskBody(BaseModel):
    model_config = {"extra": "forbid"}
    question: str = Field(min_length=1, max_length=4000)
    language: str | None = Field(default=None, pattern="^(it|en)$")


AI_PER_TENANT = Limit("ai_requests_per_tenant", 120, 60)


class RefreshRequest(BaseModel):
    refresh_token: str | None = Field(default=None, max_length=512)
WEB_DIR = Path(__file__).resolve().parent / "web"
# the web inbox: static files under web/, served only by suffix, never outside the folder (defined
# before the Gateway class: serve.ingress captures the globals its routes read when it decorates it)
WEB_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png"}
WEB_ASSET_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-cache"}
WEB_PAGE_HEADERS = WEB_ASSET_HEADERS | {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "media-src 'self' blob:; connect-src 'self' ws: wss:; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


def web_asset_path(path: str) -> Path | None:
    """The file under web/ that ``path`` names, or None (traversal, hidden files, unknown types)."""
    if "\\" in path or "\0" in path or any(part.startswith(".") for part in path.split("/")):
        return None
    root = WEB_DIR.resolve()
    asset = (root / path).resolve()
    if not asset.is_relative_to(root) or asset.suffix not in WEB_TYPES or not asset.is_file():
        return None
    return asset


log = logging.getLogger("parlo.gateway")

api = FastAPI(
    title="Parlo",
    version=engine.__version__,
    description="WhatsApp customer conversations for human agents and an AI assistant.",
)


METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """Gateway metrics. Every replica on a node writes them to a shared directory
    (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``) so that one scrape of
    ``/metrics``, whichever replica answers it, reports the sum over all live replicas."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("parlo_http_requests", "HTTP requests handled by the Gateway",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("parlo_http_request_seconds", "Gateway request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.shards = Gauge("parlo_conversation_shards", "Configured ConversationShard actors",
                            registry=self.registry, multiprocess_mode="max")
        self.shards_alive = Gauge("parlo_conversation_shards_alive",
                                  "ConversationShards that answered the last health check",
                                  registry=self.registry, multiprocess_mode="max")
        self.pool = Gauge("parlo_db_pool_connections", "PostgreSQL pool connections, summed over live replicas",
                          ["state"], registry=self.registry, multiprocess_mode="livesum")
        self.replicas = Gauge("parlo_gateway_replicas", "Live Gateway replicas reporting",
                              registry=self.registry, multiprocess_mode="livesum")
        self.replicas.set(1)

    def exposition(self) -> bytes:
        if os.environ.get(METRICS_DIR_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


_metrics: Metrics | None = None


def replica_metrics() -> Metrics:
    """This process's metrics (one Gateway replica per process)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def reset_metrics_dir(path: Path) -> None:
    """Called before a fresh deploy: files of replicas that no longer exist must not be summed."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


class MeasureRequests:
    """Counts and times every HTTP request (a plain ASGI middleware: BaseHTTPMiddleware's extra
    task per request cost more than a webhook's own work in the profile)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics = replica_metrics()
            metrics.requests.labels(scope["method"], route, str(status)).inc()
            metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


class RequireBearer:
    """Every ``/api/`` request but the login/refresh/logout ones needs a valid access token, checked
    before routing and body validation: an unauthenticated caller learns nothing about a route's
    parameters or bodies, only 401. (The handlers verify the token again and load its user.)"""

    OPEN = ("/api/auth/",)
    keys: TokenKeys | None = None  # set by the Gateway replica of this process

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/") or path.startswith(self.OPEN) or self.keys is None:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("missing bearer token")
            verify_access(self.keys, token.strip())
        except Unauthenticated as exc:
            response = JSONResponse({"error": exc.message, "code": "Unauthenticated"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class WebhookFastPath:
    """Meta's deliveries skip FastAPI's routing, dependency and exception layers (a third of a
    delivery's CPU in the replica's profile): at thousands a second they are most of the traffic.
    Same code as the documented route (Gateway.receive_webhook); still counted by MeasureRequests."""

    PATH = "/webhooks/whatsapp"
    gateway: Any = None  # the Gateway replica of this process sets itself here
    route = SimpleNamespace(path=PATH)  # what MeasureRequests labels it by

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gateway = self.gateway
        if gateway is None or scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.PATH:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        request = Request(scope, receive)  # a plain Starlette request: no routing, no dependencies
        try:
            status, answer = await gateway.receive_webhook(request.headers.get("content-length"),
                                                           request.headers.get("x-hub-signature-256"),
                                                           request.stream())
        except ClientDisconnect:
            return  # Meta gave up on this attempt; it will deliver again
        await JSONResponse(answer, status_code=status)(scope, receive, send)


api.add_middleware(RequireBearer)
api.add_middleware(WebhookFastPath)
api.add_middleware(MeasureRequests)

def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses its JSON itself (engine.inbox.inputs), so
    that /docs shows it and generated clients and the cross-tenant walk can build one."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


# the one place where the engine's exception tree becomes HTTP statuses (see engine/errors.py)
_STATUS_OF = ((Unauthenticated, 401), (Forbidden, 403), (NotFound, 404), (Conflict, 409), (inputs.TooLarge, 413),
              (InvalidInput, 422),
              (RateLimited, 429), (ServiceUnavailable, 503))


@api.exception_handler(ParloError)
async def _parlo_error(request: Request, exc: ParloError) -> JSONResponse:
    status = next((code for cls, code in _STATUS_OF if isinstance(exc, cls)), 500)
    body: dict[str, Any] = {"error": exc.message, "code": getattr(exc, "code", type(exc).__name__)}
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = exc.retry_after_header
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if status == 500:
        log.error("unexpected engine error", exc_info=exc)
        body = {"error": "internal error", "code": "internal"}
    return JSONResponse(body, status_code=status, headers=headers)


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming what is wrong and where, never echoing the input (it may hold a password)."""
    problems = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse({"error": "; ".join(problems) or "invalid request", "code": "invalid"}, status_code=422)


@api.exception_handler(asyncpg.PostgresError)
async def _database_error(request: Request, exc: asyncpg.PostgresError) -> JSONResponse:
    """A constraint the service layer did not check first is still the client's error, not a 500."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return JSONResponse({"error": "that already exists", "code": "conflict"}, status_code=409)
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return JSONResponse({"error": "a referenced record does not exist", "code": "not_found"}, status_code=422)
    if isinstance(exc, (asyncpg.CheckViolationError, asyncpg.NotNullViolationError, asyncpg.DataError)):
        return JSONResponse({"error": "a value is out of range or malformed", "code": "invalid"}, status_code=422)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return JSONResponse({"error": "not allowed", "code": "forbidden"}, status_code=403)
    log.error("unexpected database error", exc_info=exc)
    return JSONResponse({"error": "internal error", "code": "internal"}, status_code=500)


@api.exception_handler(OSError)
async def _unreachable(request: Request, exc: OSError) -> JSONResponse:
    log.warning("a service is unreachable", extra={"error": type(exc).__name__})
    return JSONResponse({"error": "a service is unavailable, try again shortly", "code": "unavailable"},
                        status_code=503, headers={"Retry-After": "2"})


@serve.deployment(name="Assistant", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64,
                  health_check_period_s=10, graceful_shutdown_timeout_s=20,
                  logging_config={"enable_access_log": False})
class AssistantDeployment:
    """The AI pipeline (engine/ai/pipeline.py) as a streaming deployment: the Gateway relays its
    events to an agent's browser as SSE, and ConversationShards consume them for auto-replies.
    It holds the offline embedder and the routers (and the network embedder of the knowledge base,
    when one is configured); the knowledge indexes live in KnowledgeShards."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings: Settings = load_settings(**settings)
        configure_logging(self.settings.log_level, json=self.settings.log_json)
        self.knowledge = ensure_knowledge_shards(self.settings)
        self._embedder_name = embedder_name(self.settings)
        self._assistant: Any = None
        self._pool: Any = None
        self._redis: Any = None
        self._warming: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> Any:
        if self._assistant is None:
            async with self._lock:
                if self._assistant is None:
                    # the model, scikit-learn and the provider SDKs load here, not in the Gateway
                    from engine.ai.service import RouterBook, build_assistant, offline_embedder

                    self._pool = await create_pool(resolve(self.settings).database, min_size=1, max_size=4)
                    embedder = await asyncio.to_thread(offline_embedder, self.settings)
                    book = await RouterBook.build(embedder)
                    assistant = await build_assistant(self.settings, self._pool, self._retrieve, embedder=embedder,
                                                      router=book.shared)
                    pool = self._pool
                    assistant.routers = lambda tenant_id: book.for_tenant(pool, tenant_id)
                    assistant.unknown_words = self._unknown_words
                    self._assistant = assistant
        return self._assistant

    async def _retrieve(self, tenant_id: Any, query: str, vector: Any, k: int) -> list[Passage]:
        # the shard searches the configured embedder's chunks; no vector: keywords only. The name
        # goes only when it is not the offline model's, the one a shard of an older version knows
        # (shards are detached: they outlive a rolling upgrade of this deployment)
        named = {} if self._embedder_name == OFFLINE_EMBEDDER else {"embedder": self._embedder_name}
        rows = await shard_for(self.knowledge, tenant_id).search.remote(
            str(tenant_id), query, None if vector is None else vector.tolist(), k, **named)
        return [Passage(**row) for row in rows]

    async def _unknown_words(self, tenant_id: Any, words: list[str]) -> set[str]:
        return set(await shard_for(self.knowledge, tenant_id).unknown.remote(str(tenant_id), words))

    async def check_health(self) -> None:
        # Healthy means this process serves: PostgreSQL being down is /healthz's news (a replica
        # that failed its check for it would be restarted, not fixed). The model loads in the
        # background on the first check so that the first draft does not wait for it.
        if self._warming is None and self.settings.ai_warm_up:
            self._warming = asyncio.create_task(self._warm())
        self._kb_schedule()  # the WordPress re-sync schedule starts with the first health check

    async def _warm(self) -> None:
        try:
            await self._ready()
        except Exception as exc:  # retried by the first request that needs it
            log.warning("assistant not warmed up", extra={"error": type(exc).__name__})

    async def run(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        assistant = await self._ready()
        async with contextlib.aclosing(assistant.run(request_from_dict(request))) as events:
            async for event in events:
                yield event

    async def auto_reply(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """A ConversationShard's auto-reply: the run shown live to agents on the tenant's stream,
        its final (or error) event returned."""
        assistant = await self._ready()
        ask = request_from_dict(request)
        if self._redis is None:
            self._redis = aioredis.from_url(resolve(self.settings).redis)
        redis, maxlen = self._redis, self.settings.events_stream_maxlen

        async def publish(tenant_id: Any, kind: str, data: dict[str, Any]) -> Any:
            return await events.publish(redis, tenant_id, kind, data, maxlen=maxlen)

        return await relay(assistant.run(ask), publish, ask.tenant_id, ask.conversation_id)


    # --- knowledge base: syncs and the WordPress schedule (engine/ai/knowledge/sync.py) ----------

    _kb_redis: Any = None
    _kb_scheduler: "asyncio.Task[None] | None" = None

    async def sync(self, tenant_id: str, source_id: str, upload: dict[str, Any] | None = None,
                   wait: bool = True) -> dict[str, Any]:
        """Sync one knowledge source with this replica's embedder (``upload``: {"name", "data"} for
        a file or FAQ source), publish ``kb.progress`` (at most 5 a second) and ``kb.synced`` on
        the tenant's stream, then have the tenant's KnowledgeShard rebuild its index."""
        from uuid import UUID

        from engine.ai.knowledge import sync as kb_sync

        assistant = await self._ready()
        self._kb_schedule()
        tenant = UUID(tenant_id)
        if self._kb_redis is None:
            self._kb_redis = aioredis.from_url(resolve(self.settings).redis, socket_timeout=self.settings.health_timeout_s,
                                               socket_connect_timeout=self.settings.health_timeout_s)
        queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

        async def publish() -> None:  # one writer, so the stream keeps the order of the stages
            while (item := await queue.get()) is not None:
                await events.publish(self._kb_redis, tenant, item[0], item[1],
                                     maxlen=self.settings.events_stream_maxlen)

        def progress(stage: str, done: int, total: int) -> None:
            queue.put_nowait(("kb.progress", {"source_id": source_id, "stage": stage, "done": done, "total": total}))

        publisher = asyncio.create_task(publish())
        try:
            result = await kb_sync.sync_source(
                self._pool, assistant.query_embedder or assistant.embedder, tenant, source_id, wait=wait,
                upload=(str(upload["name"]), bytes(upload["data"])) if upload else None,
                progress=kb_sync.ProgressThrottle(progress, interval_s=0.2))
        except ParloError as exc:  # removed meanwhile (NotFound), or another sync holds it (Conflict)
            log.info("knowledge sync not run", extra={"tenant": tenant_id, "source": source_id, "error": exc.message})
            return {"source_id": source_id, "state": "skipped", "error": exc.message}
        finally:
            queue.put_nowait(None)
            await publisher
        synced = {"source_id": source_id, "state": result.state,
                  "stats": {k: v for k, v in result.stats.items() if k != "wordpress_cursor"}}
        if result.error is not None:
            synced["error"] = result.error
        await self.reload_knowledge(tenant_id)
        await events.publish(self._kb_redis, tenant, "kb.synced", synced, maxlen=self.settings.events_stream_maxlen)
        return result.as_dict()

    async def reload_knowledge(self, tenant_id: str) -> bool:
        """Best effort: a shard that misses this rebuilds from PostgreSQL when it next loads."""
        try:
            named = {} if self._embedder_name == OFFLINE_EMBEDDER else {"embedder": self._embedder_name}
            await asyncio.wait_for(shard_for(self.knowledge, tenant_id).reload.remote(tenant_id, **named), 120)
            return True
        except Exception as exc:
            log.warning("knowledge index not rebuilt", extra={"tenant": tenant_id, "error": type(exc).__name__})
            return False

    def _kb_schedule(self) -> None:
        if self._kb_scheduler is None or self._kb_scheduler.done():
            self._kb_scheduler = asyncio.get_running_loop().create_task(self._kb_resync_loop())

    async def _kb_resync_loop(self) -> None:
        """Fetch WordPress sources again once their last sync is older than kb_resync_interval_s.
        Every replica runs this; the source's advisory lock lets one of them sync it."""
        from engine.db.queries import sql

        interval = self.settings.kb_resync_interval_s
        pool: Any = None
        while True:
            try:
                # only a pool to look: the model loads (self.sync → _ready) when a source is due,
                # not on every start (it costs seconds of both cores)
                pool = self._pool or pool or await create_pool(resolve(self.settings).database, min_size=0, max_size=1)
                for row in await pool.fetch(sql("knowledge_sync", "due_wordpress"), interval, 50):
                    await self.sync(str(row["tenant_id"]), str(row["id"]), None, wait=False)
            except Exception as exc:  # the schedule must outlive a bad round (PostgreSQL restarting…)
                log.warning("knowledge re-sync round failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(min(300.0, interval / 4))


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024,
                  health_check_period_s=10, graceful_shutdown_timeout_s=20,
                  # one line per request in Ray's files costs more than the webhook itself; our
                  # metrics count every request instead
                  logging_config={"enable_access_log": False})
@serve.ingress(api)
class Gateway:
    def __init__(self, settings: dict[str, Any], assistant: Any = None) -> None:
        self.assistant = assistant
        self.settings: Settings = load_settings(**settings)
        configure_logging(self.settings.log_level, json=self.settings.log_json)
        self.urls = resolve(self.settings)
        if os.environ.get(METRICS_DIR_ENV):
            Path(os.environ[METRICS_DIR_ENV]).mkdir(parents=True, exist_ok=True)
        self.metrics = replica_metrics()
        self.metrics.shards.set(self.settings.conversation_shards)
        self.shards = ensure_shards(self.settings)
        self.dispatcher = ensure_dispatcher(self.settings)
        self.dispatcher.start.remote()  # idempotent; the actor also starts itself after a restart
        self.redis = aioredis.from_url(self.urls.redis, socket_timeout=self.settings.health_timeout_s,
                                       socket_connect_timeout=self.settings.health_timeout_s)
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._box = secret_box(self.settings)
        self._keys = TokenKeys.from_settings(self.settings)
        RequireBearer.keys = self._keys
        WebhookFastPath.gateway = self
        self._limiter = RateLimiter(self.redis)
        self._receiver: WebhookReceiver | None = None
        self._dirty: dict[int, dict[str, dict[str, Any] | None]] = {}
        self._events: list[tuple[Any, str, dict[str, Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._shard_flusher: asyncio.Task[None] | None = None

    async def receiver(self) -> WebhookReceiver:
        if self._receiver is None:
            self._receiver = WebhookReceiver(await self.pool(), self._box, max_bytes=self.settings.webhook_max_bytes,
                                             group_commit=self.settings.webhook_group_commit)
        return self._receiver

    def _after_commit(self, result: IngestResult) -> None:
        """Queue committed changes for the shards and the live streams; a flusher sends them in
        batches (one actor call per shard, one Redis pipeline) so Meta's 200 never waits on them."""
        # the shards get the conversations' new state as committed; they query only for ones they lack
        for conversation_id, row in result.conversations.items():
            self._dirty.setdefault(shard_of(conversation_id, len(self.shards)), {})[str(conversation_id)] = row
        for change in result.status_changes:
            shard = self._dirty.setdefault(shard_of(change.conversation_id, len(self.shards)), {})
            shard.setdefault(str(change.conversation_id), None)
        for m in result.new_messages:
            self._events.append((m.tenant_id, "message.created", {
                "conversation_id": m.conversation_id, "message_id": m.message_id, "wamid": m.wamid, "type": m.type,
                "text": m.text, "occurred_at": m.occurred_at}))
        for c in result.status_changes:
            self._events.append((c.tenant_id, "message.status", {
                "conversation_id": c.conversation_id, "message_id": c.message_id, "wamid": c.wamid, "status": c.status}))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._events and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_events())
        if self._dirty and (self._shard_flusher is None or self._shard_flusher.done()):
            self._shard_flusher = asyncio.create_task(self._flush_shards())

    async def _flush_events(self, linger_s: float = 0.002) -> None:
        # no fixed wait: deliveries that commit while one batch is being sent form the next batch
        # (a 100 ms linger here was most of an agent's webhook → screen latency)
        while self._events:
            await asyncio.sleep(linger_s)
            batch, self._events = self._events, []
            await events.publish_many(self.redis, batch, maxlen=self.settings.events_stream_maxlen)

    async def _flush_shards(self, linger_s: float = 0.1) -> None:
        # the shards' hot state may trail by up to 0.1 s (agents' screens do not: they follow the
        # events above; an auto-reply waits its debounce of seconds anyway). An actor call costs
        # both processes far more than a conversation's row in it: an actor call per delivery cost
        # more CPU than the delivery's own transaction, one per shard every 25 ms still ~0.15 ms
        # a delivery at 1,000/s
        while self._dirty:
            await asyncio.sleep(linger_s)
            dirty, self._dirty = self._dirty, {}
            for index, changed in dirty.items():
                self.shards[index].apply.remote(changed)  # best effort: a shard rebuilds from PostgreSQL anyway

    async def pool(self) -> Any:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await create_pool(self.urls.database, min_size=self.settings.db_pool_min,
                                                   max_size=self.settings.db_pool_max,
                                                   timeout=self.settings.health_timeout_s)
        return self._pool

    async def _check_postgres(self) -> Any:
        pool = await self.pool()
        details = await postgres_check(pool)
        for state, value in pool_stats(pool).items():
            self.metrics.pool.labels(state).set(value)
        return details

    def __del__(self) -> None:
        # Serve calls this when it stops the replica: its live gauges leave the sums.
        if os.environ.get(METRICS_DIR_ENV):
            multiprocess.mark_process_dead(os.getpid())

    async def _check_redis(self) -> Any:
        return await redis_check(self.redis)

    async def _check_ray(self) -> Any:
        resources = await asyncio.to_thread(ray.cluster_resources)
        return {"cpus": resources.get("CPU", 0)}

    async def _check_dispatcher(self) -> Any:
        stats = await self.dispatcher.stats.remote()
        if not stats["running"]:
            self.dispatcher.start.remote()  # it retries its start (e.g. after PostgreSQL came back)
            raise RuntimeError("the outbox dispatcher is not running")
        return {k: stats[k] for k in ("sent", "failed", "retried", "media_fetched")}

    async def _check_shards(self) -> Any:
        answers = await asyncio.gather(*(shard.ping.remote() for shard in self.shards), return_exceptions=True)
        alive = [a for a in answers if isinstance(a, dict)]
        self.metrics.shards_alive.set(len(alive))
        if len(alive) < len(self.shards):
            failed = next(a for a in answers if not isinstance(a, dict))
            raise RuntimeError(f"{len(alive)}/{len(self.shards)} shards answered ({type(failed).__name__})")
        return {"count": len(alive), "conversations": sum(int(a["conversations"]) for a in alive)}

    @api.get("/healthz", summary="Health of every component")
    async def healthz(self) -> JSONResponse:
        healthy, report = await check_all(
            {"postgres": self._check_postgres, "redis": self._check_redis,
             "ray": self._check_ray, "shards": self._check_shards, "dispatcher": self._check_dispatcher},
            self.settings.health_timeout_s,
        )
        report["version"] = engine.__version__
        return JSONResponse(report, status_code=200 if healthy else 503)

    @api.get("/metrics", summary="Prometheus metrics of this Gateway replica")
    async def metrics_text(self) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/webhooks/whatsapp", summary="Meta's webhook verification handshake", response_class=PlainTextResponse)
    async def whatsapp_handshake(self, request: Request) -> Response:
        params = request.query_params
        try:
            challenge = await (await self.receiver()).handshake(
                params.get("hub.mode"), params.get("hub.verify_token"), params.get("hub.challenge"))
        except ParloError as exc:
            return PlainTextResponse(str(exc), status_code=503)
        if challenge is None:
            return PlainTextResponse("verification failed", status_code=403)
        return PlainTextResponse(challenge)

    @api.post("/webhooks/whatsapp", summary="Signed WhatsApp Cloud API notifications")
    async def whatsapp_webhook(self, request: Request) -> Response:
        # served by WebhookFastPath before FastAPI's routing; this route documents it in OpenAPI
        status, answer = await self.receive_webhook(request.headers.get("content-length"),
                                                    request.headers.get("x-hub-signature-256"), request.stream())
        return JSONResponse(answer, status_code=status)

    async def receive_webhook(self, declared: str | None, signature: str | None,
                              chunks: AsyncIterator[bytes]) -> tuple[int, dict[str, str]]:
        """Meta's delivery: read (bounded), verify, store, then queue the after-commit work."""
        limit = self.settings.webhook_max_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return 413, {"error": f"body larger than {limit} bytes"}
        try:
            body = await inputs.read_bounded(chunks, limit)
        except inputs.TooLarge:
            return 413, {"error": f"body larger than {limit} bytes"}
        try:
            receiver = await self.receiver()
        except ParloError as exc:
            return 503, {"error": str(exc)}
        outcome = await receiver.receive(body, signature)
        if outcome.result is not None:
            self._after_commit(outcome.result)
        return outcome.status, ({"status": outcome.detail} if outcome.status == 200 else {"error": outcome.detail})

    # --- auth ---------------------------------------------------------------------------------

    def _session_response(self, pair: TokenPair) -> JSONResponse:
        response = JSONResponse({
            "access_token": pair.access_token, "token_type": "bearer",
            "expires_at": pair.access_expires_at.isoformat(), "refresh_token": pair.refresh_token,
            "user": {"id": str(pair.user.id), "tenant_id": str(pair.user.tenant_id), "email": pair.user.email,
                     "name": pair.user.display_name, "role": pair.user.role},
        })
        # browsers keep the refresh token where scripts cannot read it; API clients use the body
        response.set_cookie(REFRESH_COOKIE, pair.refresh_token, httponly=True, samesite="strict",
                            secure=self.settings.http_host not in ("127.0.0.1", "localhost"), path="/api/auth",
                            expires=pair.refresh_expires_at)
        return response

    @api.post("/api/auth/login", summary="Exchange credentials for an access token and a refresh token")
    async def auth_login(self, request: Request, body: LoginRequest) -> Response:
        address = request.client.host if request.client else "unknown"
        try:
            async with (await self.pool()).acquire() as conn:
                pair = await login(conn, self._keys, self._limiter, tenant_slug=body.tenant, email=body.email,
                                   password=body.password, address=address)
        except RateLimited as exc:
            return JSONResponse({"error": str(exc)}, status_code=429,
                                headers={"Retry-After": exc.retry_after_header})
        except Unauthenticated as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        return self._session_response(pair)

    @api.post("/api/auth/refresh", summary="Rotate a refresh token (cookie or body) into a new pair")
    async def auth_refresh(self, request: Request, body: RefreshRequest | None = None) -> Response:
        token = (body.refresh_token if body and body.refresh_token else None) or request.cookies.get(REFRESH_COOKIE)
        if not token:
            return JSONResponse({"error": "no refresh token"}, status_code=401)
        try:
            async with (await self.pool()).acquire() as conn:
                pair = await rotate(conn, self._keys, token)
        except Unauthenticated as exc:
            response = JSONResponse({"error": str(exc)}, status_code=401)
            response.delete_cookie(REFRESH_COOKIE, path="/api/auth")
            return response
        return self._session_response(pair)

    @api.post("/api/auth/logout", summary="End this login (revokes its refresh token family)")
    async def auth_logout(self, request: Request, body: RefreshRequest | None = None) -> Response:
        token = (body.refresh_token if body and body.refresh_token else None) or request.cookies.get(REFRESH_COOKIE)
        if token:
            async with (await self.pool()).acquire() as conn:
                await end_session(conn, token)
        response = Response(status_code=204)
        response.delete_cookie(REFRESH_COOKIE, path="/api/auth")
        return response

    @api.get("/api/me", summary="The user of the access token")
    async def me(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise Unauthenticated("missing bearer token")
            claims = verify_access(self._keys, token.strip())
        except Unauthenticated as exc:
            return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return JSONResponse({"user_id": str(claims.user_id), "tenant_id": str(claims.tenant_id), "role": claims.role,
                             "expires_at": claims.expires_at.isoformat()})

    # --- API plumbing: who is asking, their tenant's transaction, live events after commit ------

    async def _claims(self, request: Request) -> Any:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token")
        return verify_access(self._keys, token.strip())

    @contextlib.asynccontextmanager
    async def _tenant(self, request: Request) -> AsyncIterator[tuple[Any, Principal, Changes]]:
        """One tenant transaction for an API request: the caller's principal (its role read again
        from PostgreSQL), row-level security on, and the live events the request produced
        published after commit (never for a request that failed)."""
        claims = await self._claims(request)
        changes = Changes()
        async with (await self.pool()).acquire() as conn:
            async with tenant_transaction(conn, claims.tenant_id):
                principal = await load_principal(conn, claims)
                yield conn, principal, changes
        if changes.events:
            await events.publish_many(self.redis, [(claims.tenant_id, kind, data) for kind, data in changes.events],
                                      maxlen=self.settings.events_stream_maxlen)

    # --- inbox: conversations, messages, notes, labels, contacts, templates (engine/inbox) ------

    # Bodies and queries are parsed by engine.inbox.inputs (not by FastAPI) so that every refusal
    # has the API's error shape; TooLarge is InvalidInput for the engine, 413 on the wire.

    async def _inbox_body(self, request: Request, limit: int = inputs.MAX_JSON_BODY) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise inputs.TooLarge(f"the request body is larger than {limit} bytes")
        return await inputs.read_bounded(request.stream(), limit)

    def _inbox_touched(self, changes: Changes) -> None:
        """After commit: the shards re-read the conversations an inbox change touched (their hot
        state — unread, assignment, status, AI mode — follows PostgreSQL)."""
        touched = {data["conversation_id"] for kind, data in changes.events
                   if data.get("conversation_id") is not None and kind in ("conversation.updated", "message.created")}
        for conversation_id in touched:
            self._dirty.setdefault(shard_of(conversation_id, len(self.shards)), {})[str(conversation_id)] = None
        self._schedule_flush()

    def _inbox_graph(self, access_token: str) -> GraphClient:
        return GraphClient(access_token, base_url=self.settings.graph_base_url,
                           api_version=self.settings.graph_api_version, timeout=self.settings.graph_timeout_s)

    @api.get("/api/conversations", summary="Conversations the caller may see, newest activity first")
    async def inbox_list_conversations(self, request: Request) -> Response:
        query = inputs.parse_query(inbox_conversations.ConversationQuery, request.query_params)
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await inbox_conversations.list_conversations(conn, who, query))

    @api.get("/api/conversations/{conversation_id}", summary="One conversation")
    async def inbox_get_conversation(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await inbox_conversations.get(conn, who, cid))

    @api.patch("/api/conversations/{conversation_id}", summary="Change status, snooze or AI mode", openapi_extra=body_doc(inbox_conversations.ConversationPatch))
    async def inbox_conversation_patch(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        patch = inputs.parse_body(inbox_conversations.ConversationPatch, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, changes):
            result = await inbox_conversations.update(conn, who, changes, cid, patch)
        self._inbox_touched(changes)
        return JSONResponse(result)

    @api.post("/api/conversations/{conversation_id}/read", summary="Mark a conversation read", status_code=204)
    async def inbox_conversation_read(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        async with self._tenant(request) as (conn, who, changes):
            await inbox_conversations.mark_read(conn, who, changes, cid)
        self._inbox_touched(changes)
        return Response(status_code=204)

    @api.post("/api/conversations/{conversation_id}/assign", summary="Assign to a user and/or a team", openapi_extra=body_doc(inbox_conversations.AssignRequest))
    async def inbox_conversation_assign(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        body = inputs.parse_body(inbox_conversations.AssignRequest, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, changes):
            result = await inbox_conversations.assign(conn, who, changes, cid, body)
        self._inbox_touched(changes)
        return JSONResponse(result)

    @api.post("/api/conversations/{conversation_id}/labels", summary="Put a label on a conversation", openapi_extra=body_doc(inbox_conversations.LabelRef))
    async def inbox_conversation_label(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        body = inputs.parse_body(inbox_conversations.LabelRef, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, changes):
            result = await inbox_conversations.add_label(conn, who, changes, cid, body.label_id)
        self._inbox_touched(changes)
        return JSONResponse(result)

    @api.delete("/api/conversations/{conversation_id}/labels/{label_id}", summary="Take a label off")
    async def inbox_conversation_unlabel(self, request: Request, conversation_id: str, label_id: str) -> Response:
        cid, lid = inputs.parse_id(conversation_id, "conversation"), inputs.parse_id(label_id, "label")
        async with self._tenant(request) as (conn, who, changes):
            result = await inbox_conversations.remove_label(conn, who, changes, cid, lid)
        self._inbox_touched(changes)
        return JSONResponse(result)

    @api.get("/api/conversations/{conversation_id}/messages", summary="Messages, oldest to newest, a page at a time")
    async def inbox_list_messages(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        query = inputs.parse_query(inbox_messages.MessageQuery, request.query_params)
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await inbox_messages.list_messages(conn, who, cid, query))

    @api.post("/api/conversations/{conversation_id}/messages", summary="Send text, a reaction or a template",
              status_code=201, openapi_extra=body_doc(inbox_messages.SendRequest))
    async def inbox_send(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        body = inputs.parse_body(inbox_messages.SendRequest, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, changes):
            message = await inbox_messages.send(conn, who, changes, cid, body.root, limiter=self._limiter)
        self._inbox_touched(changes)
        return JSONResponse(message, status_code=201)

    @api.post("/api/conversations/{conversation_id}/media", summary="Send a file (multipart: file, caption)",
              status_code=201, openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"], "properties": {
                      "file": {"type": "string", "format": "binary"},
                      "caption": {"type": "string", "maxLength": 1024}}}}}}})
    async def inbox_send_media(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        ceiling = min(attachments.MAX_UPLOAD, self.settings.media_max_bytes)
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            raise InvalidInput("an upload needs a Content-Length")
        if int(declared) > ceiling + 64 * 1024:  # room for the multipart framing and the caption
            raise inputs.TooLarge(f"a file may be at most {ceiling // (1024 * 1024)} MiB")
        async with self._tenant(request) as (conn, who, _):
            target = await attachments.prepare_upload(conn, who, self._box, cid, limiter=self._limiter)
        try:
            form = await request.form(max_files=1, max_fields=4)
        except StarletteHTTPException:  # Starlette's answer to a malformed or oversized form
            raise InvalidInput("the upload is not a valid multipart form (one 'file', an optional 'caption')") from None
        try:
            file, caption = form.get("file"), form.get("caption")
            if isinstance(file, str) or file is None or (caption is not None and not isinstance(caption, str)):
                raise InvalidInput("send the file in the multipart field 'file' (and an optional text 'caption')")
            upload = attachments.check(await file.read(ceiling + 1), file.content_type, file.filename, caption,
                                       ceiling=self.settings.media_max_bytes)
        finally:
            await form.close()
        uploaded = await attachments.upload(target, upload, storage_for(self.settings), self._inbox_graph)
        async with self._tenant(request) as (conn, who, changes):
            message = await attachments.queue_upload(conn, who, changes, cid, uploaded)
        self._inbox_touched(changes)
        return JSONResponse(message, status_code=201)

    @api.get("/api/media/{media_id}", summary="A stored file of a message the caller may see")
    async def inbox_media(self, request: Request, media_id: str) -> Response:
        mid = inputs.parse_int_id(media_id, "media")
        async with self._tenant(request) as (conn, who, _):
            stored = await attachments.locate(conn, who, mid)
        data = await attachments.read(storage_for(self.settings), stored)
        disposition = "inline" if attachments.inline(stored.mime_type) else "attachment"
        if stored.filename:
            disposition += f"; filename*=UTF-8''{quote(stored.filename)}"
        return Response(data, media_type=stored.mime_type, headers={
            "Content-Disposition": disposition, "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'", "Cache-Control": "private, max-age=3600"})

    @api.get("/api/conversations/{conversation_id}/notes", summary="Internal notes of a conversation")
    async def inbox_list_notes(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await inbox_notes.list_notes(conn, who, cid))

    @api.post("/api/conversations/{conversation_id}/notes", summary="Write an internal note", status_code=201, openapi_extra=body_doc(inbox_notes.NoteRequest))
    async def inbox_note(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        body = inputs.parse_body(inbox_notes.NoteRequest, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, changes):
            note = await inbox_notes.create(conn, who, changes, cid, body)
        return JSONResponse(note, status_code=201)

    @api.get("/api/contacts", summary="Contacts, by name")
    async def inbox_list_contacts(self, request: Request) -> Response:
        query = inputs.parse_query(inbox_contacts.ContactQuery, request.query_params)
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await inbox_contacts.list_contacts(conn, who, query))

    @api.get("/api/contacts/{contact_id}", summary="One contact and their conversations")
    async def inbox_get_contact(self, request: Request, contact_id: str) -> Response:
        kid = inputs.parse_id(contact_id, "contact")
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await inbox_contacts.get(conn, who, kid))

    @api.patch("/api/contacts/{contact_id}", summary="Edit a contact", openapi_extra=body_doc(inbox_contacts.ContactPatch))
    async def inbox_contact_patch(self, request: Request, contact_id: str) -> Response:
        kid = inputs.parse_id(contact_id, "contact")
        body = inputs.parse_body(inbox_contacts.ContactPatch, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, changes):
            result = await inbox_contacts.update(conn, who, changes, kid, body)
        return JSONResponse(result)

    @api.get("/api/labels", summary="The tenant's labels")
    async def inbox_list_labels(self, request: Request) -> Response:
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await inbox_labels.list_labels(conn, who))

    @api.post("/api/labels", summary="Create a label", status_code=201, openapi_extra=body_doc(inbox_labels.LabelCreate))
    async def inbox_label_create(self, request: Request) -> Response:
        body = inputs.parse_body(inbox_labels.LabelCreate, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, changes):
            return JSONResponse(await inbox_labels.create(conn, who, changes, body), status_code=201)

    @api.patch("/api/labels/{label_id}", summary="Rename or recolour a label", openapi_extra=body_doc(inbox_labels.LabelPatch))
    async def inbox_label_patch(self, request: Request, label_id: str) -> Response:
        lid = inputs.parse_id(label_id, "label")
        body = inputs.parse_body(inbox_labels.LabelPatch, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, changes):
            return JSONResponse(await inbox_labels.update(conn, who, changes, lid, body))

    @api.delete("/api/labels/{label_id}", summary="Delete a label (it leaves every conversation)", status_code=204)
    async def inbox_label_delete(self, request: Request, label_id: str) -> Response:
        lid = inputs.parse_id(label_id, "label")
        async with self._tenant(request) as (conn, who, changes):
            await inbox_labels.delete(conn, who, changes, lid)
        return Response(status_code=204)

    @api.get("/api/templates", summary="Message templates (e.g. ?status=APPROVED)")
    async def inbox_list_templates(self, request: Request) -> Response:
        query = inputs.parse_query(templates_view.TemplateQuery, request.query_params)
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await templates_view.list_templates(conn, who, query))

    @api.post("/api/templates/{template_id}/preview", summary="A template with its parameters filled in", openapi_extra=body_doc(templates_view.PreviewRequest))
    async def inbox_template_preview(self, request: Request, template_id: str) -> Response:
        tid = inputs.parse_int_id(template_id, "template")
        body = inputs.parse_body(templates_view.PreviewRequest, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, _):
            return JSONResponse(await templates_view.preview(conn, who, tid, body))

    # --- inbox: canned replies, team chat, notifications, users, teams, audit (engine/inbox) ----
    # Bodies are read as bytes and validated by engine.inbox.inputs (the API's one error shape, and
    # no echo of what was sent: POST /api/users carries a password); their schema is documented here.

    def _team_body_doc(model: Any) -> dict[str, Any]:  # type: ignore[misc]  # used while the class body runs
        return {"requestBody": {"required": True,
                                "content": {"application/json": {"schema": model.model_json_schema()}}}}

    @staticmethod
    def _team_json(payload: Any, status_code: int = 200) -> Response:
        # asyncpg's own UUID type is not one orjson knows: default=str writes it as the usual text
        return Response(orjson.dumps(payload, default=str), status_code=status_code, media_type="application/json")

    @api.get("/api/users", summary="Every user of the tenant (for mentions and assignment)")
    async def users_list(self, request: Request) -> Response:
        async with self._tenant(request) as (conn, who, _):
            items = await users_admin.list_users(conn, who)
        return self._team_json({"items": items})

    @api.post("/api/users", summary="Create a user (users.manage; only an owner creates owners)", status_code=201,
              openapi_extra=_team_body_doc(users_admin.NewUser))
    async def users_create(self, request: Request) -> Response:
        body = inputs.parse_body(users_admin.NewUser, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            user = await users_admin.create_user(conn, who, changes, body)
        return self._team_json(user, 201)

    @api.patch("/api/users/{id}", summary="Rename, change role or capacity, deactivate (users.manage)",
               openapi_extra=_team_body_doc(users_admin.UserPatch))
    async def users_patch(self, request: Request, id: str) -> Response:
        user_id = inputs.parse_id(id, "user")
        body = inputs.parse_body(users_admin.UserPatch, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            user = await users_admin.update_user(conn, who, changes, user_id, body)
        return self._team_json(user)

    @api.put("/api/me/presence", summary="Set one's presence (online, away, offline)", status_code=204,
             openapi_extra=_team_body_doc(users_admin.PresenceUpdate))
    async def me_presence(self, request: Request) -> Response:
        body = inputs.parse_body(users_admin.PresenceUpdate, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            await users_admin.set_presence(conn, who, changes, body.presence)
        return Response(status_code=204)

    @api.get("/api/teams", summary="Teams and their members")
    async def teams_list(self, request: Request) -> Response:
        async with self._tenant(request) as (conn, who, _):
            items = await teams.list_teams(conn, who)
        return self._team_json({"items": items})

    @api.post("/api/teams", summary="Create a team (teams.manage)", status_code=201,
              openapi_extra=_team_body_doc(teams.TeamBody))
    async def teams_create(self, request: Request) -> Response:
        body = inputs.parse_body(teams.TeamBody, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            team = await teams.create_team(conn, who, changes, body)
        return self._team_json(team, 201)

    @api.patch("/api/teams/{id}", summary="Rename a team (teams.manage)", openapi_extra=_team_body_doc(teams.TeamBody))
    async def teams_patch(self, request: Request, id: str) -> Response:
        team_id = inputs.parse_id(id, "team")
        body = inputs.parse_body(teams.TeamBody, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            team = await teams.rename_team(conn, who, changes, team_id, body)
        return self._team_json(team)

    @api.delete("/api/teams/{id}", summary="Delete a team; its conversations stay, without a team", status_code=204)
    async def teams_delete(self, request: Request, id: str) -> Response:
        team_id = inputs.parse_id(id, "team")
        async with self._tenant(request) as (conn, who, changes):
            await teams.delete_team(conn, who, changes, team_id)
        return Response(status_code=204)

    @api.put("/api/teams/{id}/members/{user_id}", summary="Add a member to a team (teams.manage)", status_code=204)
    async def teams_add_member(self, request: Request, id: str, user_id: str) -> Response:
        team_id, member_id = inputs.parse_id(id, "team"), inputs.parse_id(user_id, "user")
        async with self._tenant(request) as (conn, who, changes):
            await teams.add_member(conn, who, changes, team_id, member_id)
        return Response(status_code=204)

    @api.delete("/api/teams/{id}/members/{user_id}", summary="Remove a member from a team (teams.manage)",
                status_code=204)
    async def teams_remove_member(self, request: Request, id: str, user_id: str) -> Response:
        team_id, member_id = inputs.parse_id(id, "team"), inputs.parse_id(user_id, "user")
        async with self._tenant(request) as (conn, who, changes):
            await teams.remove_member(conn, who, changes, team_id, member_id)
        return Response(status_code=204)

    @api.get("/api/canned", summary="Canned replies, optionally those matching q")
    async def canned_list(self, request: Request) -> Response:
        query = inputs.parse_query(canned.CannedQuery, request.query_params)
        async with self._tenant(request) as (conn, who, _):
            items = await canned.list_canned(conn, who, query.q)
        return self._team_json({"items": items})

    @api.post("/api/canned", summary="Create a canned reply (canned.manage)", status_code=201,
              openapi_extra=_team_body_doc(canned.NewCanned))
    async def canned_create(self, request: Request) -> Response:
        body = inputs.parse_body(canned.NewCanned, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            item = await canned.create_canned(conn, who, changes, body)
        return self._team_json(item, 201)

    @api.patch("/api/canned/{id}", summary="Change a canned reply (canned.manage)",
               openapi_extra=_team_body_doc(canned.CannedPatch))
    async def canned_patch(self, request: Request, id: str) -> Response:
        canned_id = inputs.parse_id(id, "canned reply")
        body = inputs.parse_body(canned.CannedPatch, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            item = await canned.update_canned(conn, who, changes, canned_id, body)
        return self._team_json(item)

    @api.delete("/api/canned/{id}", summary="Delete a canned reply (canned.manage)", status_code=204)
    async def canned_delete(self, request: Request, id: str) -> Response:
        canned_id = inputs.parse_id(id, "canned reply")
        async with self._tenant(request) as (conn, who, changes):
            await canned.delete_canned(conn, who, changes, canned_id)
        return Response(status_code=204)

    @api.get("/api/chat/channels", summary="Named channels and one's direct channels, with unread counts")
    async def chat_channels(self, request: Request) -> Response:
        async with self._tenant(request) as (conn, who, _):
            items = await chat.list_channels(conn, who)
        return self._team_json({"items": items})

    @api.post("/api/chat/channels", summary="Create a named channel (its creator joins it)", status_code=201,
              openapi_extra=_team_body_doc(chat.NewChannel))
    async def chat_create_channel(self, request: Request) -> Response:
        body = inputs.parse_body(chat.NewChannel, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            channel = await chat.create_channel(conn, who, changes, body)
        return self._team_json(channel, 201)

    @api.post("/api/chat/channels/{id}/join", summary="Join a named channel", status_code=204)
    async def chat_join(self, request: Request, id: str) -> Response:
        channel_id = inputs.parse_id(id, "chat channel")
        async with self._tenant(request) as (conn, who, changes):
            await chat.join(conn, who, changes, channel_id)
        return Response(status_code=204)

    @api.post("/api/chat/direct", summary="The direct channel between me and another user (201 when created now)",
              openapi_extra=_team_body_doc(chat.DirectRequest))
    async def chat_direct(self, request: Request) -> Response:
        body = inputs.parse_body(chat.DirectRequest, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            channel, created = await chat.direct(conn, who, changes, body.user_id)
        return self._team_json(channel, 201 if created else 200)

    @api.get("/api/chat/channels/{id}/messages", summary="A channel's messages, oldest first (members only)")
    async def chat_messages(self, request: Request, id: str) -> Response:
        channel_id = inputs.parse_id(id, "chat channel")
        query = inputs.parse_query(chat.MessagesQuery, request.query_params)
        async with self._tenant(request) as (conn, who, _):
            items, has_more = await chat.messages(conn, who, channel_id, before=query.before, limit=query.limit)
        return self._team_json({"items": items, "has_more": has_more})

    @api.post("/api/chat/channels/{id}/messages", summary="Write in a channel (members only)", status_code=201,
              openapi_extra=_team_body_doc(chat.NewChatMessage))
    async def chat_post(self, request: Request, id: str) -> Response:
        channel_id = inputs.parse_id(id, "chat channel")
        body = inputs.parse_body(chat.NewChatMessage, await request.body())
        async with self._tenant(request) as (conn, who, changes):
            message = await chat.post(conn, who, changes, channel_id, body)
        return self._team_json(message, 201)

    @api.post("/api/chat/channels/{id}/read", summary="Mark a channel read up to its newest message", status_code=204)
    async def chat_read(self, request: Request, id: str) -> Response:
        channel_id = inputs.parse_id(id, "chat channel")
        async with self._tenant(request) as (conn, who, changes):
            await chat.mark_read(conn, who, changes, channel_id)
        return Response(status_code=204)

    @api.get("/api/notifications", summary="One's notifications, newest first, and the unread count")
    async def notifications_list(self, request: Request) -> Response:
        query = inputs.parse_query(notifications.NotificationsQuery, request.query_params)
        async with self._tenant(request) as (conn, who, _):
            items, unread = await notifications.list_notifications(conn, who, unread=query.unread,
                                                                   before=query.before, limit=query.limit)
        return self._team_json({"items": items, "unread_count": unread})

    @api.post("/api/notifications/read-all", summary="Mark all of one's notifications read", status_code=204)
    async def notifications_read_all(self, request: Request) -> Response:
        async with self._tenant(request) as (conn, who, _):
            await notifications.mark_all_read(conn, who)
        return Response(status_code=204)

    @api.post("/api/notifications/{id}/read", summary="Mark one of one's notifications read", status_code=204)
    async def notifications_read(self, request: Request, id: str) -> Response:
        notification_id = inputs.parse_int_id(id, "notification")
        async with self._tenant(request) as (conn, who, _):
            await notifications.mark_read(conn, who, notification_id)
        return Response(status_code=204)

    @api.get("/api/audit", summary="The tenant's audit log, newest first (audit.read)")
    async def audit_list(self, request: Request) -> Response:
        query = inputs.parse_query(audit_view.AuditQuery, request.query_params)
        async with self._tenant(request) as (conn, who, _):
            items = await audit_view.list_audit(conn, who, before=query.before, action=query.action, limit=query.limit)
        return self._team_json({"items": items})

    del _team_body_doc

    # --- AI: drafts and questions as SSE, usage (engine/ai) ---------------------------------------

    async def _sse(self, request: Request, ask: dict[str, Any]) -> StreamingResponse:
        """The Assistant's events as Server-Sent Events. A client that goes away (the cancel
        button closes the fetch) ends this generator, which closes the deployment's stream and,
        under it, the provider's HTTP stream."""
        stream = self.assistant.options(stream=True).run.remote(ask)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for event in stream:
                    yield b"data: " + orjson.dumps(event) + b"\n\n"
            except Exception as exc:  # the stream must end with a readable event, never hang
                log.warning("assistant stream failed", extra={"error": type(exc).__name__})
                yield b"data: " + orjson.dumps({"type": "error", "message": "the assistant is unavailable",
                                                "retryable": True}) + b"\n\n"
            finally:
                stream.cancel()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _ai_limit(self, tenant_id: Any) -> None:
        await self._limiter.hit(AI_PER_TENANT, str(tenant_id))

    @api.post("/api/conversations/{conversation_id}/ai/draft", summary="Stream an AI draft reply (SSE)",
              response_class=StreamingResponse)
    async def ai_draft(self, request: Request, conversation_id: str) -> Response:
        cid = inputs.parse_id(conversation_id, "conversation")
        async with self._tenant(request) as (conn, who, _):
            ask = await draft_request(conn, who, cid)
        await self._ai_limit(who.tenant_id)
        return await self._sse(request, request_as_dict(ask))

    @api.post("/api/ai/ask", summary="Ask the assistant a question over the knowledge base (SSE)",
              response_class=StreamingResponse, openapi_extra=body_doc(AskBody))
    async def ai_ask(self, request: Request) -> Response:
        body = inputs.parse_body(AskBody, await self._inbox_body(request))
        async with self._tenant(request) as (conn, who, _):
            who.require("conversation.reply")
            context = await tenant_context(conn, who.tenant_id)
        await self._ai_limit(who.tenant_id)
        ask = AskRequest(who.tenant_id, body.question, purpose="ask", language=body.language, **context)
        return await self._sse(request, request_as_dict(ask))

    @api.get("/api/ai/usage", summary="AI runs and cost per day, intent, handler and cited source")
    async def ai_usage(self, request: Request, days: int = 30) -> Response:
        async with self._tenant(request) as (conn, who, _):
            who.require("ai.settings")
            report = await usage_report(conn, who.tenant_id, max(1, min(days, 366)))
            spend = await month_spend(conn, who.tenant_id)
        return JSONResponse({"days": days, "month_spend_usd": spend, **orjson.loads(orjson.dumps(report, default=str))})

    # --- knowledge base (engine/ai/knowledge) ---------------------------------------------------

    # The Gateway records the request (source, state "syncing", audit) and answers 202; the sync runs
    # in the Assistant deployment, which holds the embedder, and reports on the tenant's stream.

    _kb_pending: set = set()  # fired syncs, referenced until they finish
    _KB_UPLOAD_DOC = {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "name": {"type": "string", "maxLength": 200}}}}}

    def _kb_fire(self, method: str, *args: Any) -> None:
        """Call the Assistant without waiting, from a task outside this request's context: Serve
        cancels a request's child calls when its client goes away, and a sync must outlive that."""
        import contextvars

        async def call() -> None:
            try:
                await getattr(self.assistant, method).remote(*args)
            except Exception as exc:
                log.warning("knowledge call to the Assistant failed", extra={"call": method, "error": type(exc).__name__})

        task = asyncio.get_running_loop().create_task(call(), context=contextvars.Context())
        self._kb_pending.add(task)
        task.add_done_callback(self._kb_pending.discard)

    async def _kb_upload(self, request: Request) -> tuple[str, bytes, str | None]:
        """(file name, bytes, name field) of a multipart upload of at most 20 MB."""
        limit = kb_sources.MAX_UPLOAD
        too_large = f"a knowledge file may be at most {limit // (1024 * 1024)} MB"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise inputs.TooLarge(too_large)
        try:
            form = await request.form(max_files=1, max_fields=4)
        except StarletteHTTPException:  # Starlette's answer to a malformed or oversized form
            raise InvalidInput("the upload is not a valid multipart form (one 'file', an optional 'name')") from None
        try:
            file, name = form.get("file"), form.get("name")
            if isinstance(file, str) or file is None or (name is not None and not isinstance(name, str)):
                raise InvalidInput("send the file in the multipart field 'file' (and an optional text 'name')")
            data = await file.read(limit + 1)
            if len(data) > limit:
                raise inputs.TooLarge(too_large)
            return file.filename or "", data, (name or "").strip() or None
        finally:
            await form.close()

    @api.get("/api/kb/sources", summary="Knowledge sources with their sync state (knowledge.manage)")
    async def kb_list(self, request: Request) -> Response:
        async with self._tenant(request) as (conn, who, _):
            # ``embedder``: what chunks are stored by now; a source with others is synced to it
            return JSONResponse({"items": await kb_sources.list_sources(conn, who), "embedder": embedder_name(self.settings)})

    @api.post("/api/kb/sources", summary="Add a file or FAQ (multipart) or a WordPress site (JSON); syncs in the background",
              status_code=202, openapi_extra={"requestBody": {"required": True, "content": {
                  **body_doc(kb_sources.WordPressSource)["requestBody"]["content"], **_KB_UPLOAD_DOC}}})
    async def kb_add(self, request: Request) -> Response:
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            filename, data, name = await self._kb_upload(request)
            _, filename = kb_sources.check_file(filename, len(data))
            async with self._tenant(request) as (conn, who, _):
                source = await kb_sources.add_file(conn, who, filename, name)
            self._kb_fire("sync", str(who.tenant_id), source["id"], {"name": filename, "data": data})
        else:
            body = inputs.parse_body(kb_sources.WordPressSource, await self._inbox_body(request))
            async with self._tenant(request) as (conn, who, _):
                source = await kb_sources.add_wordpress(conn, who, body)
            self._kb_fire("sync", str(who.tenant_id), source["id"], None)
        return JSONResponse({"source": source}, status_code=202)

    @api.post("/api/kb/sources/{source_id}/sync", summary="Fetch a WordPress source again, or embed a file's stored "
              "text again after the embedder changed (202; a file with nothing to embed again: 409)", status_code=202)
    async def kb_sync(self, request: Request, source_id: str) -> Response:
        sid = inputs.parse_id(source_id, "knowledge source")
        async with self._tenant(request) as (conn, who, _):
            source = await kb_sources.request_sync(conn, who, sid, embedder_name(self.settings))
        self._kb_fire("sync", str(who.tenant_id), source["id"], None)
        return JSONResponse({"source": source}, status_code=202)

    @api.put("/api/kb/sources/{source_id}/file", summary="Replace a file or FAQ source's content (multipart; 202)",
             status_code=202, openapi_extra={"requestBody": {"required": True, "content": _KB_UPLOAD_DOC}})
    async def kb_replace(self, request: Request, source_id: str) -> Response:
        sid = inputs.parse_id(source_id, "knowledge source")
        filename, data, _ = await self._kb_upload(request)
        async with self._tenant(request) as (conn, who, _):
            source = await kb_sources.replace_file(conn, who, sid, filename, len(data))
        self._kb_fire("sync", str(who.tenant_id), source["id"], {"name": filename, "data": data})
        return JSONResponse({"source": source}, status_code=202)

    @api.delete("/api/kb/sources/{source_id}", summary="Remove a knowledge source and its documents", status_code=204)
    async def kb_remove(self, request: Request, source_id: str) -> Response:
        sid = inputs.parse_id(source_id, "knowledge source")
        async with self._tenant(request) as (conn, who, _):
            await kb_sources.remove(conn, who, sid)
        self._kb_fire("reload_knowledge", str(who.tenant_id))
        return Response(status_code=204)

    # --- live events: /ws (engine/live.py) -------------------------------------------------------

    def _live_hub(self) -> live.LiveHub:
        """This replica's hub, created with its first socket; its read loop stops by itself after
        the last socket closes and starts again with the next one. (Each open socket is an ongoing
        request: max_ongoing_requests above is sized for them.)"""
        hub: live.LiveHub | None = getattr(self, "_live", None)
        if hub is None:
            limits = live.LiveLimits()
            # the blocking XREAD gets its own client: the shared one times out after health_timeout_s
            blocking = aioredis.from_url(self.urls.redis, socket_timeout=limits.block_ms / 1000 + 10,
                                         socket_connect_timeout=self.settings.health_timeout_s)
            hub = self._live = live.LiveHub(self.redis, blocking, live.postgres_scopes(self.pool), limits=limits)
            self._live_typing = live.TypingThrottle(limits.typing_interval_s)
        return hub

    @api.websocket("/ws")
    async def live_events(self, websocket: WebSocket) -> None:
        """Live events of the caller's tenant (contract: "Live events"); ?token=<access token>&last_id=."""
        await websocket.accept()  # before any check: a refusal is a close code (4401), not an HTTP 403
        hub = self._live_hub()
        outcome = await live.serve_socket(
            hub, self.pool, self._keys, token=websocket.query_params.get("token"),
            last_id=websocket.query_params.get("last_id"), receive=websocket.receive, send_text=websocket.send_text,
            typing=self._live_typing, maxlen=self.settings.events_stream_maxlen)
        if outcome is not None:
            with contextlib.suppress(RuntimeError):  # the client may have gone meanwhile
                await websocket.close(outcome.code, outcome.reason)

    @api.get("/", include_in_schema=False)
    async def index(self) -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=WEB_PAGE_HEADERS)

    @api.get("/web/{path:path}", include_in_schema=False)
    async def web_asset(self, path: str) -> Response:
        asset = web_asset_path(path)
        if asset is None:
            return JSONResponse({"error": "not found", "code": "not_found"}, status_code=404)
        return FileResponse(asset, media_type=WEB_TYPES[asset.suffix], headers=WEB_ASSET_HEADERS)


def build(settings: Settings) -> Any:
    """The Serve application graph for these settings (secret-free arguments only)."""
    runtime_env = secret_runtime_env(settings)
    runtime_env.setdefault("env_vars", {})[METRICS_DIR_ENV] = str(settings.home / "metrics")
    actor_options: dict[str, Any] = {"num_cpus": 0, "runtime_env": runtime_env}
    assistant = AssistantDeployment.options(ray_actor_options=actor_options).bind(public_settings(settings))
    return Gateway.options(num_replicas=settings.gateway_replicas, ray_actor_options=actor_options).bind(
        public_settings(settings), assistant)
