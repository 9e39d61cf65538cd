"""`parlo channel|templates|send|outbox` against a real database and the Cloud API simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from bench.simulator import Simulator
from engine.config import Settings
from engine.crypto import SecretBox
from engine.db.pool import create_pool
from engine.pacing import Pacer
from engine.retry import RetryStrategy
from engine.whatsapp.dispatcher import Dispatcher
from engine.whatsapp.graph import GraphClient
from engine.whatsapp.webhook import RouteCache
from tests.e2e.cli import assert_one_line_error, clean_env, parlo

pytestmark = pytest.mark.e2e

PNID, WABA, TOKEN = "106540352242922", "102290129340398", "EAAG-sim-token"


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator() as sim:
        sim.register_phone(PNID, TOKEN, WABA)
        for i in range(7):
            sim.add_template(WABA, f"promo_{i}", "it")
        yield sim


async def _dispatch_once(database_url: str, key: str, sim: Simulator) -> Dispatcher:
    pool = await create_pool(database_url)
    http = httpx.AsyncClient()
    try:
        settings = Settings(home=Path("/nonexistent"), _env_file=None)  # type: ignore[call-arg]
        dispatcher = Dispatcher(
            pool, RouteCache(pool, SecretBox(key)),
            lambda route: GraphClient(route.access_token, base_url=sim.base_url, api_version=settings.graph_api_version,
                                      client=http),
            pacer=Pacer(80, 10), retry=RetryStrategy(max_attempts=1))
        while await dispatcher.run_once():
            pass
        return dispatcher
    finally:
        await http.aclose()
        await pool.close()


async def test_channel_templates_send_and_outbox(simulator: Simulator, database_url: str, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    env = clean_env(PARLO_HOME=str(tmp_path), PARLO_DATABASE_URL=database_url, PARLO_SECRET_KEY=key,
                    PARLO_GRAPH_BASE_URL=simulator.base_url)
    assert parlo("tenant", "create", "acme", env=env).code == 0
    added = parlo("channel", "add", "--tenant", "acme", "--phone-number-id", PNID, "--waba-id", WABA,
                  "--app-secret", "s3cret", "--verify-token", "vt", "--access-token", TOKEN, env=env)
    assert added.code == 0, added.err

    synced = parlo("templates", "sync", "--tenant", "acme", env=env)
    assert synced.code == 0, synced.err
    assert f"WABA {WABA}: 7 template(s) stored" in synced.out
    listed = json.loads(parlo("templates", "list", "--tenant", "acme", "--json", env=env).out)
    assert sorted(t["name"] for t in listed) == [f"promo_{i}" for i in range(7)]

    # a customer who never wrote: free text is refused before Meta, a template is queued
    refused = parlo("send", "--tenant", "acme", "--to", "393331112222", "--text", "ciao", env=env)
    assert_one_line_error(refused, "24-hour", "template")
    assert parlo("send", "--tenant", "acme", "--to", "+39 333 111 2222", "--template", "promo_1", env=env).code == 0
    for bad in (["--to", "not-a-number", "--template", "x"], ["--to", "393331112222"],
                ["--to", "393331112222", "--text", "a", "--template", "b"]):
        result = parlo("send", "--tenant", "acme", *bad, env=env)
        assert result.code != 0 and "Traceback" not in result.err

    simulator.fail_recipient("393339999999", code=131026)
    assert parlo("send", "--tenant", "acme", "--to", "393339999999", "--template", "promo_2", env=env).code == 0

    dispatcher = await _dispatch_once(database_url, key, simulator)
    assert (dispatcher.sent, dispatcher.failed) == (1, 1)
    assert [s.wa_id for s in simulator.sent] == ["393331112222"]

    dead = json.loads(parlo("outbox", "list", "--failed", "--json", env=env).out)
    assert len(dead) == 1 and dead[0]["recipient"] == "393339999999" and "131026" in dead[0]["last_error"]
    assert dead[0]["message_status"] == "failed"

    simulator.heal_recipient("393339999999")
    assert parlo("outbox", "retry", str(dead[0]["id"]), env=env).code == 0
    assert_one_line_error(parlo("outbox", "retry", str(dead[0]["id"]), env=env), "no failed outbox row")
    dispatcher = await _dispatch_once(database_url, key, simulator)
    assert dispatcher.sent == 1
    assert sorted(s.wa_id for s in simulator.sent) == ["393331112222", "393339999999"]
    assert json.loads(parlo("outbox", "list", "--failed", "--json", env=env).out) == []
    everything = (tmp_path / "logs" / "parlo.jsonl").read_text()
    assert TOKEN not in everything and "s3cret" not in everything


async def test_send_media_uploads_then_queues(simulator: Simulator, database_url: str, tmp_path: Path) -> None:
    import asyncpg

    key = Fernet.generate_key().decode()
    env = clean_env(PARLO_HOME=str(tmp_path), PARLO_DATABASE_URL=database_url, PARLO_SECRET_KEY=key,
                    PARLO_GRAPH_BASE_URL=simulator.base_url)
    assert parlo("tenant", "create", "acme", env=env).code == 0
    assert parlo("channel", "add", "--tenant", "acme", "--phone-number-id", PNID, "--waba-id", WABA,
                 "--app-secret", "s3cret", "--verify-token", "vt", "--access-token", TOKEN, env=env).code == 0
    photo = tmp_path / "scontrino.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + b"jpeg" * 100)

    closed = parlo("send", "--tenant", "acme", "--to", "393331112222", "--media", str(photo), env=env)
    assert_one_line_error(closed, "24-hour")
    assert simulator.state.media == {}  # refused before anything was uploaded

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE conversations SET last_inbound_at = now()")
    finally:
        await conn.close()
    sent = parlo("send", "--tenant", "acme", "--to", "393331112222", "--media", str(photo), "--caption", "ecco",
                 env=env)
    assert sent.code == 0, sent.err
    [uploaded] = simulator.state.media.values()
    assert uploaded.data == photo.read_bytes() and uploaded.mime_type == "image/jpeg"

    await _dispatch_once(database_url, key, simulator)
    [record] = simulator.sent
    assert record.type == "image" and record.payload["image"] == {"id": uploaded.id, "caption": "ecco"}
