"""Inbound media: webhook → media row → fetched from the (simulated) Graph API into storage."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from bench.simulator import Simulator, payloads
from bench.simulator.webhooks import encode, sign
from engine import tenants
from engine.crypto import SecretBox
from engine.db.pool import create_pool
from engine.retry import RetryStrategy
from engine.whatsapp import channels
from engine.whatsapp.graph import GraphClient
from engine.whatsapp.media import LocalStorage, MediaFetcher, storage_key
from engine.whatsapp.webhook import RouteCache, WebhookReceiver

pytestmark = pytest.mark.integration

PNID, WABA, TOKEN, SECRET = "106540352242922", "102290129340398", "EAAG-media", "media-app-secret"
JPEG = b"\xff\xd8\xff\xe0" + b"parlo" * 2000


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator() as sim:
        sim.register_phone(PNID, TOKEN, WABA)
        yield sim


@pytest.fixture
async def world(database_url: str, db: asyncpg.Connection, simulator: Simulator,
                tmp_path: Path) -> AsyncIterator[tuple[WebhookReceiver, MediaFetcher, asyncpg.Pool]]:
    box = SecretBox(Fernet.generate_key().decode())
    tenant = await tenants.create(db, "Media")
    await channels.add(db, box, tenant.id, phone_number_id=PNID, waba_id=WABA, app_secret=SECRET,
                       verify_token="vt", access_token=TOKEN)
    pool = await create_pool(database_url)
    http = httpx.AsyncClient()
    routes = RouteCache(pool, box)
    fetcher = MediaFetcher(pool, routes, lambda r: GraphClient(r.access_token, base_url=simulator.base_url, client=http),
                           LocalStorage(tmp_path / "media"), max_bytes=50_000,
                           retry=RetryStrategy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001))
    try:
        yield WebhookReceiver(pool, box, max_bytes=3_000_000, routes=routes), fetcher, pool
    finally:
        await http.aclose()
        await pool.close()


async def _receive_image(receiver: WebhookReceiver, media_id: str, sha256: str | None, wamid: str,
                         mime: str = "image/jpeg") -> None:
    message = payloads.image_message("393330000001", media_id, mime_type=mime, sha256=sha256, wamid=wamid)
    body = encode(payloads.inbound(message, waba_id=WABA, phone_number_id=PNID, display_phone_number="1555"))
    outcome = await receiver.receive(body, sign(body, SECRET))
    assert outcome.status == 200, outcome.detail


async def _drain(fetcher: MediaFetcher, pool: asyncpg.Pool) -> None:
    for _ in range(10):
        await pool.execute("UPDATE media SET run_after = now() WHERE state = 'pending'")  # skip backoff waits
        if not await fetcher.run_once():
            return


async def test_media_is_fetched_checked_and_stored(world: tuple, simulator: Simulator, tmp_path: Path) -> None:
    receiver, fetcher, pool = world
    media_id = simulator.add_media(JPEG, "image/jpeg", phone_number_id=PNID)
    announced = base64.b64encode(hashlib.sha256(JPEG).digest()).decode()
    await _receive_image(receiver, media_id, announced, "wamid.img.1")
    await _receive_image(receiver, media_id, announced, "wamid.img.1")  # redelivery: still one media row
    assert await pool.fetchval("SELECT count(*) FROM media") == 1

    await _drain(fetcher, pool)
    row = await pool.fetchrow("SELECT m.*, t.id AS tenant FROM media m JOIN tenants t ON t.id = m.tenant_id")
    assert (row["state"], row["size_bytes"], row["mime_type"]) == ("fetched", len(JPEG), "image/jpeg")
    assert row["storage_key"] == storage_key(row["tenant"], media_id)
    assert (tmp_path / "media" / row["storage_key"]).read_bytes() == JPEG
    assert fetcher.fetched == 1


async def test_refusals_end_failed_with_a_reason(world: tuple, simulator: Simulator) -> None:
    receiver, fetcher, pool = world
    too_big = simulator.add_media(b"x" * 60_000, "image/jpeg", phone_number_id=PNID)
    exe = simulator.add_media(b"MZ\x90\x00", "application/x-msdownload", phone_number_id=PNID)
    corrupt = simulator.add_media(JPEG, "image/jpeg", phone_number_id=PNID)
    await _receive_image(receiver, too_big, None, "wamid.big")
    await _receive_image(receiver, exe, None, "wamid.exe", mime="application/x-msdownload")
    await _receive_image(receiver, corrupt, base64.b64encode(b"\x00" * 32).decode(), "wamid.bad")
    await _receive_image(receiver, "9999999999", None, "wamid.gone")  # a media id Meta does not know
    await _drain(fetcher, pool)
    rows = {r["media_id"]: r for r in await pool.fetch("SELECT media_id, state, last_error, attempts FROM media")}
    assert {k: v["state"] for k, v in rows.items()} == {too_big: "failed", exe: "failed", corrupt: "failed",
                                                        "9999999999": "failed"}
    assert "too large" in rows[too_big]["last_error"]
    assert "not accepted" in rows[exe]["last_error"]
    assert "corrupted" in rows[corrupt]["last_error"] and rows[corrupt]["attempts"] == 3  # retried, then gave up
    assert fetcher.fetched == 0


async def test_outage_is_retried_until_it_works(world: tuple, simulator: Simulator) -> None:
    receiver, fetcher, pool = world
    media_id = simulator.add_media(JPEG, "image/jpeg", phone_number_id=PNID)
    await _receive_image(receiver, media_id, base64.b64encode(hashlib.sha256(JPEG).digest()).decode(), "wamid.outage")
    simulator.inject_outage(requests=2)
    await _drain(fetcher, pool)
    row = await pool.fetchrow("SELECT state, attempts, last_error FROM media")
    assert row["state"] == "fetched" and row["attempts"] >= 2, dict(row)


@pytest.fixture
def s3_server() -> Iterator[str]:
    """moto's S3 server: the S3 wire protocol on a local port (a double of the network)."""
    from moto.server import ThreadedMotoServer

    from engine.embedded.ports import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def test_media_can_go_to_an_s3_compatible_bucket(world: tuple, simulator: Simulator, s3_server: str) -> None:
    import boto3

    from engine.whatsapp.media import S3Storage

    client = boto3.client("s3", endpoint_url=s3_server, region_name="eu-south-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    client.create_bucket(Bucket="parlo-media", CreateBucketConfiguration={"LocationConstraint": "eu-south-1"})
    receiver, fetcher, pool = world
    fetcher.storage = S3Storage("parlo-media", prefix="tenants/", client=client)
    media_id = simulator.add_media(JPEG, "image/jpeg", phone_number_id=PNID)
    await _receive_image(receiver, media_id, base64.b64encode(hashlib.sha256(JPEG).digest()).decode(), "wamid.s3")
    await _drain(fetcher, pool)
    row = await pool.fetchrow("SELECT state, storage_key FROM media")
    assert row["state"] == "fetched"
    stored = client.get_object(Bucket="parlo-media", Key="tenants/" + row["storage_key"])
    assert stored["Body"].read() == JPEG and stored["ContentType"] == "image/jpeg"
    assert await fetcher.storage.get(row["storage_key"]) == JPEG


def test_settings_choose_the_storage(tmp_path: Path) -> None:
    from engine.config import Settings
    from engine.whatsapp.media import LocalStorage, S3Storage, storage_for

    local = storage_for(Settings(home=tmp_path, _env_file=None))  # type: ignore[call-arg]
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "media"
    s3 = storage_for(Settings(home=tmp_path, media_s3_bucket="b", media_s3_region="eu-south-1",  # type: ignore[call-arg]
                              media_s3_endpoint_url="http://127.0.0.1:1", _env_file=None))
    assert isinstance(s3, S3Storage) and s3.bucket == "b"
