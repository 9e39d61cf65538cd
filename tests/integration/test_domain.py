from __future__ import annotations

import uuid

import asyncpg
import pytest

from engine import tenants, users
from engine.conversations.hot_state import ConversationStore
from engine.errors import Conflict
from engine.sharding import bucket_of, shard_of

pytestmark = pytest.mark.integration


async def _conversation(db: asyncpg.Connection, tenant_id: uuid.UUID, n: int, status: str = "open") -> uuid.UUID:
    channel = await db.fetchval(
        "INSERT INTO channels (tenant_id, phone_number_id, waba_id) VALUES ($1, $2, 'waba') "
        "ON CONFLICT (phone_number_id) DO UPDATE SET waba_id = EXCLUDED.waba_id RETURNING id",
        tenant_id, f"pn-{tenant_id}")
    contact = await db.fetchval(
        "INSERT INTO contacts (tenant_id, wa_id) VALUES ($1, $2) RETURNING id", tenant_id, f"39333{n:07d}")
    return await db.fetchval(
        "INSERT INTO conversations (tenant_id, channel_id, contact_id, status) VALUES ($1, $2, $3, $4) RETURNING id",
        tenant_id, channel, contact, status)


async def test_tenant_create_list_and_duplicate(db: asyncpg.Connection) -> None:
    acme = await tenants.create(db, "Acme S.p.A.")
    assert acme.slug == "acme-s-p-a"
    with pytest.raises(Conflict, match="already exists"):
        await tenants.create(db, "Acme", slug="acme-s-p-a")
    listed = await tenants.list_all(db)
    assert [t["slug"] for t in listed] == ["acme-s-p-a"]
    assert await db.fetchval("SELECT count(*) FROM tenants") == 1
    audit = await db.fetchrow("SELECT action, subject FROM audit_log WHERE tenant_id = $1", acme.id)
    assert (audit["action"], audit["subject"]) == ("tenant.create", "acme-s-p-a")


async def test_users_authenticate_by_tenant(db: asyncpg.Connection) -> None:
    a = await tenants.create(db, "A")
    b = await tenants.create(db, "B")
    await users.create(db, a.id, "Anna@Example.com", "Anna", "a long password 1", role="admin")
    assert (await users.authenticate(db, a.id, "anna@example.com", "a long password 1")) is not None
    assert await users.authenticate(db, a.id, "anna@example.com", "wrong password!!") is None
    assert await users.authenticate(db, b.id, "anna@example.com", "a long password 1") is None
    with pytest.raises(Conflict):
        await users.create(db, a.id, "anna@example.com", "Anna", "a long password 2")


async def test_bucket_column_matches_python(db: asyncpg.Connection) -> None:
    t = await tenants.create(db, "Buckets")
    for n in range(50):
        cid = await _conversation(db, t.id, n)
        assert await db.fetchval("SELECT bucket FROM conversations WHERE id = $1", cid) == bucket_of(cid)


async def test_shards_partition_open_conversations(db: asyncpg.Connection) -> None:
    t = await tenants.create(db, "Shards")
    open_ids = {await _conversation(db, t.id, n) for n in range(40)}
    await _conversation(db, t.id, 99, status="resolved")
    stores = [ConversationStore(i, 4) for i in range(4)]
    counts = [await s.load(db) for s in stores]
    assert sum(counts) == 40
    for cid in open_ids:
        owner = stores[shard_of(cid, 4)]
        state = await owner.get(db, cid)
        assert state is not None and state.tenant_id == t.id and not state.window_open()
        other = stores[(shard_of(cid, 4) + 1) % 4]
        with pytest.raises(ValueError, match="belongs to shard"):
            await other.get(db, cid)
    assert await stores[0].get(db, next(c for c in [uuid.uuid4() for _ in range(50)] if shard_of(c, 4) == 0)) is None
