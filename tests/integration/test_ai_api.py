"""The assistant through the real Serve app: an agent's draft streams as SSE from the Assistant
deployment (the official Anthropic SDK talking to the local AI simulator), with progress, tokens
and a final event with citations; cancelling closes the provider's stream; usage reaches the
ledger and /api/ai/usage; an agent may not draft in a conversation they cannot see."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.ai_simulator import AISimulator
from engine.ai.knowledge import store
from engine.ai.knowledge.extract import extract
from engine.ai.service import offline_embedder
from tests.api_harness import Gateway, TenantKit

pytestmark = pytest.mark.integration

FAQ = ("domanda,risposta\nQuanto costa l'esame della vista?,L'esame della vista costa 35 euro e dura 30 minuti.\n"
       "Siete aperti il sabato?,Il sabato siamo aperti dalle 9:30 alle 19:00.\n").encode()


@pytest.fixture(scope="module")
def ai_sim() -> Iterator[AISimulator]:
    with AISimulator() as simulator:
        yield simulator


@pytest.fixture(scope="module")
def ai_gateway(ray_cluster: None, postgres: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory,
               ai_sim: AISimulator) -> Iterator[Gateway]:
    from tests.conftest import running_gateway

    with running_gateway(postgres, redis_server, tmp_path_factory.mktemp("ai-gateway"),
                         ai_anthropic_api_key="sk-ant-test", ai_anthropic_base_url=ai_sim.anthropic_base_url,
                         ai_fallback_model="none") as running:
        yield running


async def _tenant_with_faq(gateway: Gateway) -> TenantKit:
    kit = await gateway.tenant()
    embedder = offline_embedder(gateway.settings)
    async with gateway.connect() as conn:
        source = await store.add_source(conn, kit.id, "faq", "domande")
        await store.sync_documents(conn, source, extract("domande.csv", FAQ), embedder)
    return kit


async def _sse(http: httpx.AsyncClient, url: str, *, stop_after_deltas: int | None = None,
               **kwargs: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with http.stream("POST", url, timeout=120, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                deltas = sum(1 for e in events if e["type"] == "delta")
                if stop_after_deltas is not None and deltas >= stop_after_deltas:
                    break
    return events


async def test_an_agent_draft_streams_progress_tokens_and_a_cited_final(ai_gateway: Gateway,
                                                                        ai_sim: AISimulator) -> None:
    kit = await _tenant_with_faq(ai_gateway)
    kit.inbound("393331230001", "Buongiorno, quanto costa l'esame della vista?")
    conversation = await kit.conversation_of("393331230001")
    ai_sim.set_default_reply("L'esame della vista costa 35 euro [1].")
    async with kit.http("agent") as agent, kit.http("supervisor") as supervisor:
        # the agent is not on the conversation (unassigned, no team): as if it did not exist
        denied = await agent.post(f"/api/conversations/{conversation}/ai/draft")
        assert denied.status_code == 404
        events = await _sse(supervisor, f"/api/conversations/{conversation}/ai/draft")
    stages = [e["stage"] for e in events if e["type"] == "progress"]
    assert stages[:4] == ["classifying", "searching", "found", "generating"], events
    final = events[-1]
    assert final["type"] == "final", events
    assert final["text"] == "L'esame della vista costa 35 euro." and final["handler"] == "knowledge"
    assert final["citations"] and final["citations"][0]["source"] == "domande"
    assert final["usage"]["input_tokens"] > 0 and final["usage"]["cost_usd"] > 0
    request = ai_sim.requests()[-1]
    assert "Buongiorno, quanto costa" in json.dumps(request.body)  # the customer's words went to the model
    async with kit.http("admin") as admin, kit.http("agent") as agent:
        usage = (await admin.get("/api/ai/usage")).json()
        assert usage["month_spend_usd"] > 0 and usage["handler"][0]["handler"] == "knowledge"
        assert (await agent.get("/api/ai/usage")).status_code == 403


async def test_cancelling_a_draft_closes_the_provider_stream(ai_gateway: Gateway, ai_sim: AISimulator) -> None:
    kit = await _tenant_with_faq(ai_gateway)
    kit.inbound("393331230002", "siete aperti il sabato?")
    conversation = await kit.conversation_of("393331230002")
    ai_sim.set_default_reply(" ".join(["Sì, il sabato siamo aperti"] * 60))
    ai_sim.set_token_delay(0.05)
    closed_before = ai_sim.closed_early
    try:
        async with kit.http("supervisor") as supervisor:
            events = await _sse(supervisor, f"/api/conversations/{conversation}/ai/draft", stop_after_deltas=3)
        assert [e["type"] for e in events].count("delta") == 3
        assert ai_sim.wait_until(lambda: ai_sim.closed_early > closed_before, timeout=10)
        deadline = time.monotonic() + 10
        async with ai_gateway.connect() as conn:
            while (status := await conn.fetchval("SELECT status FROM ai_runs WHERE tenant_id = $1", kit.id)) != "cancelled":
                assert time.monotonic() < deadline, f"the run is {status}"
                await asyncio.sleep(0.1)
    finally:
        ai_sim.set_token_delay(0.0)


async def test_ask_validates_and_a_provider_outage_ends_in_an_error_event(ai_gateway: Gateway,
                                                                          ai_sim: AISimulator) -> None:
    kit = await _tenant_with_faq(ai_gateway)
    async with kit.http("agent") as agent:
        for bad in ({}, {"question": ""}, {"question": "x" * 5000}, {"question": "ok", "language": "fr"},
                    {"question": 3}):
            assert (await agent.post("/api/ai/ask", json=bad)).status_code == 422
        ai_sim.fail_next(5, 529)
        events = await _sse(agent, "/api/ai/ask", json={"question": "quanto costa l'esame della vista?"})
    assert events[-1]["type"] == "error" and events[-1]["retryable"], events[-1]
    assert "sk-ant-test" not in json.dumps(events)
