"""The actors and the Serve app under a real (shared) Ray instance."""

from __future__ import annotations

import time
import uuid

import asyncpg
import httpx
import pytest

from engine import tenants
from engine.config import Settings
from engine.embedded.ports import free_port
from engine.sharding import shard_of

pytestmark = pytest.mark.integration


@pytest.fixture
def shards(ray_cluster: None, settings: Settings):  # noqa: ANN201
    import ray

    from actors.conversation_shard import ensure_shards

    handles = ensure_shards(settings)
    yield handles
    for handle in handles:
        ray.kill(handle, no_restart=True)


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


def test_gateway_serves_health_metrics_docs_and_the_inbox(ray_cluster: None, settings: Settings) -> None:
    from ray import serve

    import serve_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(serve_app.build(settings.model_copy(update={"gateway_replicas": 1})), name="parlo-test",
                  route_prefix="/", blocking=False)
        deadline = time.monotonic() + 90
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                response = httpx.get(f"{base}/healthz", timeout=10)
                if response.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway never became healthy"
            time.sleep(0.5)
        report = response.json()
        assert set(report["components"]) == {"postgres", "redis", "ray", "shards"}
        assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in report["components"].values())
        assert report["components"]["shards"]["count"] == settings.conversation_shards

        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'parlo_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics
        assert "parlo_conversation_shards 4.0" in metrics
        assert 'parlo_db_pool_connections{state="size"}' in metrics
        assert "/healthz" in httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
        assert "Parlo" in httpx.get(f"{base}/", timeout=10).text
        assert httpx.get(f"{base}/no-such-page", timeout=10).status_code == 404
    finally:
        serve.delete("parlo-test")
        serve.shutdown()
