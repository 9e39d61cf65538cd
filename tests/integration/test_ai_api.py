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
                         ai_fallback_model="none", ai_debounce_s=0.5) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_ai_sim(ai_sim: AISimulator) -> Iterator[None]:
    """Each test starts with no scripted replies, faults or delays left by the one before."""
    ai_sim.reset()
    yield
    ai_sim.reset()


async def _tenant_with_faq(gateway: Gateway) -> TenantKit:
    kit = await gateway.tenant()
    embedder = offline_embedder(gateway.settings)
    async with gateway.connect() as conn:
        await conn.execute("UPDATE tenants SET settings = settings || '{\"ai_auto_reply\": true}' WHERE id = $1",
                           kit.id)
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


async def _wait(condition: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)
    return value


async def test_a_burst_of_customer_messages_gets_one_auto_reply_with_its_sources(ai_gateway: Gateway,
                                                                                 ai_sim: AISimulator) -> None:
    kit = await _tenant_with_faq(ai_gateway)
    ai_sim.set_default_reply("Il sabato siamo aperti dalle 9:30 alle 19:00 [1].")
    wa_id = "393331230010"
    for text in ("buongiorno", "una domanda:", "siete aperti il sabato?"):
        kit.inbound(wa_id, text)
    conversation = await kit.conversation_of(wa_id)

    async def replies() -> list[Any]:
        return ai_gateway.simulator.sends_to(wa_id)

    sent = await _wait(replies)
    await asyncio.sleep(1.5)  # a second answer would have come by now
    assert len(ai_gateway.simulator.sends_to(wa_id)) == 1
    assert "9:30" in json.dumps(sent[0].payload)
    async with kit.http("supervisor") as http:
        messages = (await http.get(f"/api/conversations/{conversation}/messages")).json()["items"]
    reply = [m for m in messages if m["direction"] == "outbound"][-1]
    assert reply["author"] is None and reply["ai"]["citations"][0]["source"] == "domande"
    asked = json.dumps(ai_sim.requests()[-1].body)
    assert "buongiorno" in asked and "siete aperti il sabato?" in asked  # the burst is one question


async def test_a_person_replying_pauses_the_assistant_and_draft_mode_never_sends(ai_gateway: Gateway,
                                                                                  ai_sim: AISimulator) -> None:
    kit = await _tenant_with_faq(ai_gateway)
    ai_sim.set_default_reply("Risposta automatica.")
    wa_id, other = "393331230011", "393331230012"
    kit.inbound(wa_id, "salve")
    conversation = await kit.conversation_of(wa_id)
    async with kit.http("supervisor") as http:
        await _wait(lambda: _async(len(ai_gateway.simulator.sends_to(wa_id)) == 1))
        answer = await http.post(f"/api/conversations/{conversation}/messages", json={"type": "text", "text": "Ciao, sono Marta"})
        assert answer.status_code == 201
        kit.inbound(wa_id, "quanto costa l'esame?")
        kit.inbound(other, "buongiorno")
        second = await kit.conversation_of(other)
        assert (await http.patch(f"/api/conversations/{second}", json={"ai_mode": "draft"})).status_code == 200
        kit.inbound(other, "siete aperti?")
        await asyncio.sleep(3)
    # the first customer got the auto-reply and the person's answer, nothing after the person spoke
    texts = [json.dumps(s.payload) for s in ai_gateway.simulator.sends_to(wa_id)]
    assert len(texts) == 2 and "Marta" in texts[1]
    # the second customer's first message may have been answered before draft mode; none after it
    async with ai_gateway.connect() as conn:
        state = await conn.fetchval("SELECT ai_state FROM conversations WHERE id = $1", conversation)
        assert state == "paused"


async def _async(value: Any) -> Any:
    return value


async def test_a_customer_asking_for_a_person_is_handed_over(ai_gateway: Gateway, ai_sim: AISimulator) -> None:
    kit = await _tenant_with_faq(ai_gateway)
    wa_id = "393331230013"
    kit.inbound(wa_id, "voglio parlare con una persona vera, subito!")
    conversation = await kit.conversation_of(wa_id)

    async def handed_over() -> bool:
        async with ai_gateway.connect() as conn:
            return await conn.fetchval("SELECT ai_state FROM conversations WHERE id = $1", conversation) == "handoff"

    await _wait(handed_over)
    # the reply is queued in the transaction that hands over; the OutboxDispatcher sends it after
    sent = await _wait(lambda: _async(ai_gateway.simulator.sends_to(wa_id)))
    assert len(sent) == 1 and "collega" in json.dumps(sent[0].payload)


async def test_a_spent_budget_stops_auto_replies_but_not_drafts(ai_gateway: Gateway, ai_sim: AISimulator) -> None:
    kit = await _tenant_with_faq(ai_gateway)
    async with ai_gateway.connect() as conn:
        await conn.execute("UPDATE tenants SET settings = settings || '{\"ai_monthly_budget_usd\": 0}' WHERE id = $1",
                           kit.id)
    ai_sim.set_default_reply("L'esame costa 35 euro [1].")
    wa_id = "393331230014"
    kit.inbound(wa_id, "quanto costa l'esame della vista?")
    conversation = await kit.conversation_of(wa_id)
    await asyncio.sleep(3)
    assert ai_gateway.simulator.sends_to(wa_id) == []
    async with kit.http("supervisor") as http:
        events = await _sse(http, f"/api/conversations/{conversation}/ai/draft")
    assert events[-1]["type"] == "final" and "35" in events[-1]["text"]
