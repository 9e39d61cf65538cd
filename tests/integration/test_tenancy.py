"""Row-level security: inside a tenant transaction PostgreSQL itself hides other tenants' rows."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from engine import tenants
from engine.db.migrations import discover
from engine.db.tenancy import tenant_transaction
from engine.whatsapp import outbound

pytestmark = pytest.mark.integration

TENANT_TABLES = ("users", "channels", "contacts", "conversations", "messages", "message_statuses",
                 "webhook_receipts", "outbox", "audit_log", "media", "templates", "refresh_tokens", "teams",
                 "team_members", "labels", "conversation_labels", "notes", "canned_replies", "notifications",
                 "chat_channels", "chat_members", "chat_messages", "kb_sources", "kb_documents", "kb_chunks",
                 "ai_runs", "ai_usage", "ai_run_sources", "ai_examples")


async def _tenant_with_conversation(db: asyncpg.Connection, name: str, pnid: str) -> tuple[uuid.UUID, uuid.UUID]:
    tenant = await tenants.create(db, name)
    await db.execute("INSERT INTO channels (tenant_id, phone_number_id, waba_id) VALUES ($1, $2, '1')", tenant.id, pnid)
    conversation = await outbound.conversation_with(db, tenant.id, "393331234567")
    await db.execute("UPDATE conversations SET last_inbound_at = now() WHERE id = $1", conversation)
    await outbound.queue_text(db, tenant.id, conversation, f"ciao da {name}")
    return tenant.id, conversation


async def test_a_tenant_transaction_sees_and_writes_only_its_tenant(db: asyncpg.Connection) -> None:
    a, conv_a = await _tenant_with_conversation(db, "Alfa", "1001")
    b, conv_b = await _tenant_with_conversation(db, "Beta", "1002")

    async with tenant_transaction(db, a):
        assert await db.fetchval("SELECT current_user") == "parlo_api"
        assert [r["id"] for r in await db.fetch("SELECT id FROM tenants")] == [a]
        assert [r["id"] for r in await db.fetch("SELECT id FROM conversations")] == [conv_a]
        assert {r["body"] for r in await db.fetch("SELECT body FROM messages")} == {"ciao da Alfa"}
        # a query that forgot its tenant filter still cannot reach Beta
        assert await db.fetchval("SELECT count(*) FROM conversations WHERE id = $1", conv_b) == 0
        assert await db.execute("UPDATE conversations SET status = 'resolved' WHERE id = $1", conv_b) == "UPDATE 0"
        assert await db.execute("DELETE FROM messages WHERE tenant_id = $1", b) == "DELETE 0"

    async with tenant_transaction(db, a):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await db.execute("INSERT INTO contacts (tenant_id, wa_id) VALUES ($1, '390000')", b)
    for operator_only in ("schema_migrations", "webhook_rejects"):
        async with tenant_transaction(db, a):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await db.fetch(f"SELECT * FROM {operator_only}")

    # outside, the owning role (system paths) sees everything again
    assert await db.fetchval("SELECT current_user") == "parlo"
    assert await db.fetchval("SELECT count(*) FROM conversations") == 2
    assert await db.fetchval("SELECT status FROM conversations WHERE id = $1", conv_b) == "open"


async def test_without_a_tenant_the_api_role_sees_nothing(db: asyncpg.Connection) -> None:
    await _tenant_with_conversation(db, "Alfa", "1001")
    async with db.transaction():
        await db.execute("SET LOCAL ROLE parlo_api")
        for table in ("tenants", *TENANT_TABLES):
            assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_every_tenant_owned_table_has_a_policy(db: asyncpg.Connection) -> None:
    rows = await db.fetch("SELECT tablename FROM pg_policies WHERE policyname = 'tenant_isolation'")
    assert {r["tablename"] for r in rows} == {"tenants", *TENANT_TABLES}
    with_tenant_column = {r["table_name"] for r in await db.fetch(
        "SELECT table_name FROM information_schema.columns WHERE column_name = 'tenant_id' AND table_schema = 'public'")}
    assert with_tenant_column <= set(TENANT_TABLES), "a new tenant-owned table needs a tenant_isolation policy"
    assert len(discover()) >= 8


async def test_a_team_member_must_be_of_the_team_tenant(db: asyncpg.Connection) -> None:
    from engine import users

    a = await tenants.create(db, "Alfa")
    b = await tenants.create(db, "Beta")
    team_a = await db.fetchval("INSERT INTO teams (tenant_id, name) VALUES ($1, 'Vendite') RETURNING id", a.id)
    anna = await users.create(db, a.id, "anna@alfa.it", "Anna", "una password lunga")
    await db.execute("INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)", a.id, team_a, anna.id)
    bob = await users.create(db, b.id, "bob@beta.it", "Bob", "una password lunga")
    for tenant_id in (a.id, b.id):  # neither side can put Beta's user into Alfa's team
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await db.execute("INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)",
                             tenant_id, team_a, bob.id)
    async with tenant_transaction(db, b.id):
        assert await db.fetchval("SELECT count(*) FROM teams") == 0
        assert await db.fetchval("SELECT count(*) FROM team_members") == 0
