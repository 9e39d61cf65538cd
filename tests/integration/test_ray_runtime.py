"""The actors and the Serve app under a real (shared) Ray instance."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from pydantic import SecretStr

from engine import tenants
from engine.config import Settings
from engine.embedded.redis import EmbeddedRedis
from engine.embedded.ports import free_port
from engine.sharding import shard_of

pytestmark = pytest.mark.integration


@pytest.fixture
def shards(ray_cluster: None, settings: Settings):  # noqa: ANN201
    from actors.conversation_shard import ensure_shards

    handles = ensure_shards(settings)
    yield handles
    _kill_shards(settings)


async def _open_conversation(db: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    t = await tenants.create(db, f"T {uuid.uuid4().hex[:6]}")
    channel = await db.fetchval("INSERT INTO channels (tenant_id, phone_number_id, waba_id) VALUES ($1, $2, 'w') RETURNING id",
                                t.id, uuid.uuid4().hex)
    contact = await db.fetchval("INSERT INTO contacts (tenant_id, wa_id) VALUES ($1, '393331234567') RETURNING id", t.id)
    cid = await db.fetchval(
        "INSERT INTO conversations (tenant_id, channel_id, contact_id, last_inbound_at) VALUES ($1, $2, $3, now()) RETURNING id",
        t.id, channel, contact)
    return t.id, cid


async def test_shards_are_named_detached_and_reused(shards: list, settings: Settings) -> None:
    import ray

    from actors import NAMESPACE
    from actors.conversation_shard import ensure_shards

    again = ensure_shards(settings)
    assert [h._actor_id for h in again] == [h._actor_id for h in shards]  # get_if_exists: no new actors
    named = ray.get_actor("conversation-shard-0", namespace=NAMESPACE)
    assert named._actor_id == shards[0]._actor_id
    stats = [await h.ping.remote() for h in shards]
    assert [s["shard"] for s in stats] == list(range(settings.conversation_shards))


async def test_shard_rebuilds_its_state_from_postgres_after_a_crash(shards: list, settings: Settings,
                                                                   db: asyncpg.Connection) -> None:
    import ray

    tenant_id, cid = await _open_conversation(db)
    owner = shards[shard_of(cid, settings.conversation_shards)]
    await owner.reload.remote()
    state = await owner.get.remote(str(cid))
    assert state["tenant_id"] == tenant_id and state["window_open"] is True

    ray.kill(owner, no_restart=False)  # the actor process dies; Ray restarts it (max_restarts=-1)
    deadline = time.monotonic() + 60
    while True:
        try:
            stats = await owner.ping.remote()
            break
        except ray.exceptions.RayActorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert stats["conversations"] == 1
    assert (await owner.get.remote(str(cid)))["id"] == cid


@contextlib.contextmanager
def serve_app_running(settings: Settings, name: str) -> Iterator[str]:
    """Run the real Serve app for these settings on a free port; yield its base URL."""
    from ray import serve

    import serve_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(serve_app.build(settings), name=name, route_prefix="/", blocking=False)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete(name)
        serve.shutdown()
        _kill_shards(settings)


def _kill_shards(settings: Settings) -> None:
    """Shards and the dispatcher are detached: without this they would outlive the test, holding its settings."""
    import ray

    from actors import NAMESPACE
    from engine.sharding import shard_name

    from actors.knowledge_shard import knowledge_shard_name
    from actors.outbox_dispatcher import NAME as DISPATCHER

    for name in [shard_name(i) for i in range(settings.conversation_shards)] + [DISPATCHER] + \
            [knowledge_shard_name(i) for i in range(settings.knowledge_shards)]:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass


def wait_for_health(base: str, want: int, timeout_s: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = httpx.get(f"{base}/healthz", timeout=15)
            if response.status_code == want:
                return response
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"/healthz never answered {want}"
        time.sleep(0.5)


def test_gateway_serves_health_metrics_docs_and_the_inbox(ray_cluster: None, settings: Settings) -> None:
    with serve_app_running(settings, "parlo-test") as base:
        report = wait_for_health(base, 200).json()
        assert set(report["components"]) == {"postgres", "redis", "ray", "shards", "dispatcher"}
        assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in report["components"].values())
        assert report["components"]["shards"]["count"] == settings.conversation_shards

        before = _healthz_count(httpx.get(f"{base}/metrics", timeout=10).text)
        for _ in range(12):
            assert httpx.get(f"{base}/healthz", timeout=15).status_code == 200
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        # Both replicas answer requests; whichever answers the scrape reports the sum of both.
        assert "parlo_gateway_replicas 2.0" in metrics
        assert _healthz_count(metrics) == before + 12
        assert f"parlo_conversation_shards {settings.conversation_shards:.1f}" in metrics
        assert 'parlo_db_pool_connections{state="size"}' in metrics
        assert 'parlo_http_request_seconds_bucket{le="0.005",method="GET",route="/healthz"}' in metrics

        assert "/healthz" in httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
        assert "Parlo" in httpx.get(f"{base}/", timeout=10).text
        assert httpx.get(f"{base}/no-such-page", timeout=10).status_code == 404


def _healthz_count(metrics: str) -> float:
    line = next((ln for ln in metrics.splitlines()
                 if ln.startswith('parlo_http_requests_total{method="GET",route="/healthz",status="200"}')), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_gateway_answers_503_naming_the_components_that_are_down(ray_cluster: None, settings: Settings,
                                                                 tmp_path: Path) -> None:
    doomed = EmbeddedRedis(tmp_path / "redis", free_port(), tmp_path / "redis.log")
    doomed.start("pw-doomed-redis")
    broken = settings.model_copy(update={
        "gateway_replicas": 1,
        "redis_url": SecretStr(doomed.url("pw-doomed-redis")),
        "database_url": SecretStr(f"postgresql://parlo:pw-dead@127.0.0.1:{free_port()}/parlo"),
        "health_timeout_s": 1.0,
    })
    try:
        with serve_app_running(broken, "parlo-broken") as base:
            doomed.stop()
            response = wait_for_health(base, 503)
            components = response.json()["components"]
            assert components["postgres"]["status"] == "error"
            assert "cannot reach PostgreSQL" in components["postgres"]["error"]
            assert "pw-dead" not in response.text
            assert components["redis"]["status"] == "error"
            assert components["ray"]["status"] == "ok"
    finally:
        doomed.stop()


async def test_webhooks_through_the_gateway_survive_a_shard_kill(ray_cluster: None, settings: Settings,
                                                                db: asyncpg.Connection) -> None:
    """Signed webhooks through the real Serve app while a ConversationShard is killed: every
    delivery is stored exactly once, and the restarted shard's hot state matches PostgreSQL."""
    import asyncio

    import ray

    from actors import NAMESPACE
    from bench.simulator import payloads
    from bench.simulator.webhooks import encode, sign
    from engine.crypto import secret_box
    from engine.sharding import shard_name
    from engine.whatsapp import channels

    tenant = await tenants.create(db, "Traffic")
    await channels.add(db, secret_box(settings), tenant.id, phone_number_id="1065", waba_id="2001",
                       app_secret="traffic-secret", verify_token="vt", access_token="token")
    deliveries = []
    for i in range(300):
        message = payloads.text_message(f"3933300{i % 30:05d}", f"msg {i}", wamid=f"wamid.traffic.{i}")
        body = encode(payloads.inbound(message, waba_id="2001", phone_number_id="1065", display_phone_number="1555"))
        deliveries.append(body)
    deliveries += deliveries[:30]  # Meta redelivers some

    with serve_app_running(settings.model_copy(update={"gateway_replicas": 1}), "parlo-traffic") as base:
        wait_for_health(base, 200)
        answers: list[int] = []
        killed = asyncio.Event()

        async def post(client: httpx.AsyncClient, body: bytes) -> None:
            response = await client.post(f"{base}/webhooks/whatsapp", content=body,
                                         headers={"x-hub-signature-256": sign(body, "traffic-secret")})
            answers.append(response.status_code)
            if len(answers) == 100 and not killed.is_set():
                killed.set()
                ray.kill(ray.get_actor(shard_name(0), namespace=NAMESPACE), no_restart=False)

        async with httpx.AsyncClient(timeout=30) as client:
            semaphore = asyncio.Semaphore(16)

            async def bounded(body: bytes) -> None:
                async with semaphore:
                    await post(client, body)

            await asyncio.gather(*(bounded(b) for b in deliveries))
        assert killed.is_set() and answers.count(200) == len(deliveries)

        assert await db.fetchval("SELECT count(*) FROM messages WHERE tenant_id = $1", tenant.id) == 300
        truth = {str(r["id"]): r["unread_count"] for r in await db.fetch(
            "SELECT id, unread_count FROM conversations WHERE tenant_id = $1", tenant.id)}
        assert len(truth) == 30 and set(truth.values()) == {10}

        shards = [ray.get_actor(shard_name(i), namespace=NAMESPACE) for i in range(settings.conversation_shards)]
        deadline = time.monotonic() + 30
        while True:
            seen = {}
            for cid in truth:
                owner = shards[shard_of(uuid.UUID(cid), settings.conversation_shards)]
                state = await owner.get.remote(cid)
                seen[cid] = state["unread_count"] if state else None
            if seen == truth or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert seen == truth


async def test_auth_endpoints_through_the_gateway(ray_cluster: None, settings: Settings, db: asyncpg.Connection,
                                                  redis_server) -> None:  # noqa: ANN001
    import redis.asyncio as aioredis

    from engine import users

    client_redis = aioredis.from_url(redis_server.url)
    await client_redis.flushdb()  # rate-limit windows of earlier tests
    await client_redis.aclose()
    tenant = await tenants.create(db, "Authco")
    await users.create(db, tenant.id, "anna@authco.it", "Anna", "una password lunga", role="admin")

    with serve_app_running(settings.model_copy(update={"gateway_replicas": 1}), "parlo-auth") as base:
        wait_for_health(base, 200)
        async with httpx.AsyncClient(base_url=base, timeout=15) as http:
            good = {"tenant": "authco", "email": "anna@authco.it", "password": "una password lunga"}
            login = await http.post("/api/auth/login", json=good)
            assert login.status_code == 200
            body = login.json()
            assert body["user"]["role"] == "admin" and body["token_type"] == "bearer"
            cookie = login.headers["set-cookie"]
            assert "parlo_refresh=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
            me = await http.get("/api/me", headers={"authorization": f"Bearer {body['access_token']}"})
            assert me.status_code == 200 and me.json()["tenant_id"] == str(tenant.id)

            rotated = await http.post("/api/auth/refresh")  # the browser path: the cookie
            assert rotated.status_code == 200 and rotated.json()["refresh_token"] != body["refresh_token"]
            reuse = await http.post("/api/auth/refresh", json={"refresh_token": body["refresh_token"]})
            assert reuse.status_code == 401 and "already used" in reuse.json()["error"]
            dead = await http.post("/api/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]})
            assert dead.status_code == 401  # the whole family went with the reuse

            relogin = await http.post("/api/auth/login", json=good)
            assert (await http.post("/api/auth/logout")).status_code == 204
            after = await http.post("/api/auth/refresh", json={"refresh_token": relogin.json()["refresh_token"]})
            assert after.status_code == 401

            for bad in ({"authorization": "Bearer forged.token.here"}, {"authorization": "Basic abc"}, {}):
                answer = await http.get("/api/me", headers=bad)
                assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
            for payload in (b"{not json", b'{"tenant": 1}', b"[]", b'{"tenant": "a", "email": "b@c", "password": ""}'):
                answer = await http.post("/api/auth/login", content=payload, headers={"content-type": "application/json"})
                assert answer.status_code == 422
            wrong = {**good, "password": "sbagliata!!"}
            answers = [(await http.post("/api/auth/login", json=wrong)) for _ in range(11)]  # limit: 10 per window
            assert {a.status_code for a in answers[:10]} == {401}
            assert answers[10].status_code == 429 and int(answers[10].headers["retry-after"]) > 0
