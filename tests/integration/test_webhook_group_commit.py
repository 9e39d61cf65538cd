"""Group commit of one-message deliveries (WebhookReceiver(group_commit=True), as the Gateway runs
it): deliveries that arrive together share one transaction, yet each is answered as if alone —
200 only once its rows are committed, its own 400/503 when PostgreSQL refuses it, nothing doubled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from bench.simulator.webhooks import encode, sign
from engine.whatsapp.webhook import WebhookOutcome, WebhookReceiver
from tests.integration.test_webhook_receiver import (
    REFUSE_SOME, SECRET_A, USER, Env, counts, env_in_own_database, make_env, rows, text_payload,
)

pytestmark = pytest.mark.integration


def grouped(made: Env) -> Env:
    made.receiver = WebhookReceiver(made.pool, made.box, max_bytes=256 * 1024, group_commit=True)
    return made


@pytest.fixture
async def env(db: asyncpg.Connection, database_url: str) -> AsyncIterator[Env]:
    made, pool = await make_env(db, database_url)
    try:
        yield grouped(made)
    finally:
        await pool.close()


async def deliver_all(env: Env, payloads: list[dict[str, Any]]) -> list[WebhookOutcome]:
    bodies = [encode(payload) for payload in payloads]
    return await asyncio.gather(*(env.receiver.receive(b, sign(b, SECRET_A)) for b in bodies))


async def warm(env: Env) -> None:
    """One delivery first, so the route cache is loaded and the next ones arrive together."""
    assert (await env.deliver(text_payload("wamid.warm", sender="393339999999"))).status == 200


async def test_deliveries_that_arrive_together_share_one_transaction(env: Env) -> None:
    await warm(env)
    group = env.receiver.group
    assert group is not None
    batches = group.batches
    payloads = [text_payload(f"wamid.gc.{i}", f"m{i}", sender=f"3933300000{i % 4:02d}", at=1750000000 + i)
                for i in range(24)]
    outcomes = await deliver_all(env, payloads)
    assert [o.status for o in outcomes] == [200] * 24
    assert group.batches - batches == 1 and group.fallbacks == 0
    # each answer carries its own message and its conversation as committed with it
    assert [o.result.new_messages[0].wamid for o in outcomes if o.result] == [f"wamid.gc.{i}" for i in range(24)]
    assert await counts(env.db) == rows(webhook_receipts=25, contacts=5, conversations=5, messages=25)
    unread = {r["wa_id"]: r["unread_count"] for r in await env.db.fetch(
        "SELECT c.wa_id, v.unread_count FROM conversations v JOIN contacts c ON c.id = v.contact_id")}
    assert unread == {"393339999999": 1, **{f"3933300000{s:02d}": 6 for s in range(4)}}
    # a conversation's messages keep their delivery order within the batch
    assert [r["wamid"] for r in await env.db.fetch(
        "SELECT m.wamid FROM messages m JOIN contacts c ON c.id = (SELECT contact_id FROM conversations "
        "WHERE id = m.conversation_id) WHERE c.wa_id = '393330000001' ORDER BY m.id")] == [
        f"wamid.gc.{i}" for i in range(1, 24, 4)]


async def test_redeliveries_in_one_batch_store_one_message(env: Env) -> None:
    await warm(env)
    outcomes = await deliver_all(env, [text_payload("wamid.same")] * 8)
    assert [o.status for o in outcomes] == [200] * 8
    assert sum(len(o.result.new_messages) for o in outcomes if o.result) == 1
    assert sum(o.result.duplicates for o in outcomes if o.result) == 7
    assert await counts(env.db) == rows(webhook_receipts=9, contacts=2, conversations=2, messages=2)
    # and the same again later: a no-op but for its receipt
    assert (await env.deliver(text_payload("wamid.same"))).result.duplicates == 1  # type: ignore[union-attr]
    assert await counts(env.db) == rows(webhook_receipts=10, contacts=2, conversations=2, messages=2)


@pytest.mark.parametrize(("poison", "status", "rejects"), [("poison", 400, 1), ("contended", 503, 0)])
async def test_one_refused_delivery_gets_its_own_answer_and_the_others_are_stored(
        env: Env, poison: str, status: int, rejects: int) -> None:
    await env.db.execute(REFUSE_SOME)
    await warm(env)
    group = env.receiver.group
    assert group is not None
    payloads = [text_payload(f"wamid.p.{i}", poison if i == 5 else f"m{i}", sender=f"39333000{i:04d}")
                for i in range(12)]
    outcomes = await deliver_all(env, payloads)
    assert [o.status for o in outcomes] == [status if i == 5 else 200 for i in range(12)]
    assert outcomes[5].result is None
    assert group.fallbacks == 1
    assert await counts(env.db) == rows(webhook_receipts=12, contacts=12, conversations=12, messages=12)
    assert await env.db.fetchval("SELECT count(*) FROM messages WHERE wamid = 'wamid.p.5'") == 0
    assert await env.db.fetchval("SELECT count(*) FROM webhook_rejects") == rejects
    # Meta's retry of the refused one, once PostgreSQL takes it, is stored once; the others stay single
    await env.db.execute("DROP TRIGGER refuse_some ON messages")
    outcomes = await deliver_all(env, payloads)
    assert [o.status for o in outcomes] == [200] * 12
    assert sum(len(o.result.new_messages) for o in outcomes if o.result) == 1
    assert await counts(env.db) == rows(webhook_receipts=24, contacts=13, conversations=13, messages=13)


async def test_postgres_unavailable_is_503_for_every_delivery_of_the_batch(postgres: Any) -> None:
    async with env_in_own_database(postgres) as (made, _, name):
        made = grouped(made)
        await warm(made)
        await postgres.drop_database(name)
        outcomes = await deliver_all(made, [text_payload(f"wamid.down.{i}", sender=f"3933301{i:04d}")
                                            for i in range(6)])
        assert [(o.status, o.result) for o in outcomes] == [(503, None)] * 6, outcomes


async def test_a_delivery_of_more_than_one_message_is_stored_on_its_own(env: Env) -> None:
    from bench.simulator import payloads as p
    from tests.integration.test_webhook_receiver import DISPLAY_A, PNID_A, WABA_A

    await warm(env)
    group = env.receiver.group
    assert group is not None
    calls = group.calls
    two = p.webhook(p.entry(WABA_A, p.messages_change(PNID_A, DISPLAY_A, [
        p.text_message(USER, "a", wamid="wamid.two.1"), p.text_message(USER, "b", wamid="wamid.two.2")])))
    outcomes = await deliver_all(env, [two, text_payload("wamid.one")])
    assert [o.status for o in outcomes] == [200, 200]
    assert group.calls - calls == 1
    assert await counts(env.db) == rows(webhook_receipts=3, contacts=2, conversations=2, messages=4)
