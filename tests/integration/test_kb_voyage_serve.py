"""The knowledge base embedded by Voyage through the real Serve app: an upload is synced by the
Assistant deployment with Voyage's embeddings (the local AI simulator speaking Voyage's wire
format), KnowledgeShards search those chunks with the question embedded by Voyage, and the answer
cites the upload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench.ai_simulator import AISimulator
from tests.api_harness import Gateway
from tests.integration.test_kb_api import _ask, _settled, _upload

pytestmark = pytest.mark.integration

VOYAGE_KEY = "pa-test-voyage-serve-4567"
LISTINO = ("# Listino\n\n## Esami\n\nL'esame della vista costa 35 euro e dura mezz'ora.\n\n"
           "## Montature\n\nLa montatura in titanio costa 180 euro.\n").encode()
# another text (the embedding cache would otherwise answer for Voyage): the offline model's until re-indexed
MONTATURE = ("# Montature\n\n## Titanio\n\nLa montatura leggera in titanio costa 190 euro, astuccio compreso.\n\n"
             "## Acetato\n\nLe montature in acetato costano da 90 euro.\n").encode()


@pytest.fixture(scope="module")
def ai_sim() -> Iterator[AISimulator]:
    with AISimulator() as simulator:
        simulator.require_key("voyage", VOYAGE_KEY)
        yield simulator


@pytest.fixture(scope="module")
def voyage_gateway(ray_cluster: None, postgres: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory,
                   ai_sim: AISimulator) -> Iterator[Gateway]:
    from tests.conftest import running_gateway

    with running_gateway(postgres, redis_server, tmp_path_factory.mktemp("voyage-gateway"), ai_embedder="voyage",
                         ai_voyage_api_key=VOYAGE_KEY, ai_voyage_base_url=ai_sim.voyage_base_url) as running:
        yield running


def _embedding_kinds(sim: AISimulator) -> list[str]:
    return [r.body["input_type"] for r in sim.requests("voyage") if r.path.endswith("/embeddings")]


async def test_an_upload_is_embedded_by_voyage_and_answers_cite_it(voyage_gateway: Gateway, ai_sim: AISimulator) -> None:
    kit = await voyage_gateway.tenant()
    async with kit.http("admin") as admin:
        added = await admin.post("/api/kb/sources", **_upload("listino.md", LISTINO))
        assert added.status_code == 202, added.text
        listino = await _settled(admin, "listino")
        assert listino["state"] == "ok", listino
        assert "document" in _embedding_kinds(ai_sim)
        async with voyage_gateway.connect() as conn:
            embedders = {r["embedder"]: r["dims"] for r in await conn.fetch(
                "SELECT embedder, vector_dims(embedding) AS dims FROM kb_chunks WHERE tenant_id = $1", kit.id)}
        assert embedders == {"voyage:voyage-3.5@1024": 1024}

        events = await _ask(admin, "Quanto costa l'esame della vista?")
    final = events[-1]
    assert final["type"] == "final" and "35 euro" in final["text"], events
    assert "listino" in {c["source"] for c in final["citations"]}
    assert _embedding_kinds(ai_sim)[-1] == "query"  # the question was embedded by Voyage too


async def test_a_file_embedded_offline_is_indexed_again_by_voyage_from_the_inbox_without_an_upload(
        voyage_gateway: Gateway, ai_sim: AISimulator, e5: Any) -> None:
    from engine.ai.knowledge import store
    from engine.ai.knowledge.embeddings import OFFLINE_EMBEDDER
    from engine.ai.knowledge.extract import extract

    kit = await voyage_gateway.tenant()
    async with voyage_gateway.connect() as conn:  # stored before the switch, by the offline model
        source = await store.add_source(conn, kit.id, "file", "montature")
        await store.sync_documents(conn, source, extract("montature.md", MONTATURE), e5, count=e5.token_count)
    async with kit.http("admin") as admin:
        listed = await admin.get("/api/kb/sources")
        assert listed.status_code == 200 and listed.json()["embedder"] == "voyage:voyage-3.5@1024"
        [before] = listed.json()["items"]
        assert before["embedders"] == [OFFLINE_EMBEDDER]

        documents_before = len([r for r in ai_sim.requests("voyage") if r.path.endswith("/embeddings")])
        assert (await admin.post(f"/api/kb/sources/{source.id}/sync")).status_code == 202
        after = await _settled(admin, "montature")
        assert after["state"] == "ok" and after["embedders"] == ["voyage:voyage-3.5@1024"], after
        assert after["documents"] == before["documents"]
        embedded = [r.body for r in ai_sim.requests("voyage")
                    if r.path.endswith("/embeddings")][documents_before:]
        assert embedded and embedded[0]["input_type"] == "document"
        assert any("titanio" in text for text in embedded[0]["input"])  # the stored text, not a new upload

        # nothing left to index again: a file's new content comes by uploading it
        again = await admin.post(f"/api/kb/sources/{source.id}/sync")
        assert again.status_code == 409 and "upload the file again" in again.json()["error"]
        events = await _ask(admin, "Quanto costa la montatura in titanio?")
    assert events[-1]["type"] == "final" and "190 euro" in events[-1]["text"], events
    assert "montature" in {c["source"] for c in events[-1]["citations"]}
