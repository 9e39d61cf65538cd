"""The providers through the official SDKs, against local servers speaking each real wire protocol
(``bench.ai_simulator``): streaming order, thinking and reasoning filtered, usage with prompt-cache
reads and writes, the retry decision per status, cancel closing the HTTP stream, timeouts, the
fallback chain, Anthropic's web search (the tool sent only when asked, citations, searches
counted, never to a provider without it), embeddings and rerank."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator

import pytest

from bench.ai_simulator import AISimulator, Reply, WebPage
from bench.ai_simulator.text import tokens
from engine.ai.providers.anthropic import AnthropicChat
from engine.ai.providers.base import (ChatEvent, ChatMessage, ChatRequest, ProviderError, SystemBlock, TextDelta, Usage,
                                      WebCitation, WebSearch, WebSearchStarted)
from engine.ai.providers.chain import ChainError, FallbackChain
from engine.ai.providers.embeddings import OpenAIEmbeddings, VoyageEmbeddings, VoyageReranker
from engine.ai.providers.openai_chat import OpenAIChat

pytestmark = pytest.mark.integration

ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
OPENAI_KEY = "sk-test-openai-0123456789abcdef"
VOYAGE_KEY = "pa-test-voyage-0123456789abcdef"
LONG_FACTS = "Ottica Bellavista, via Roma 12, Milano. Orari: lun-sab 9-19. " * 80  # ~4,900 chars, ~1,225 tokens


@pytest.fixture(scope="module")
def sim() -> Iterator[AISimulator]:
    with AISimulator() as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def fresh(sim: AISimulator) -> None:
    sim.reset()


@pytest.fixture
async def claude(sim: AISimulator) -> AsyncIterator[AnthropicChat]:
    provider = AnthropicChat(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url, timeout_s=10)
    yield provider
    await provider.aclose()


@pytest.fixture
async def gpt(sim: AISimulator) -> AsyncIterator[OpenAIChat]:
    provider = OpenAIChat(api_key=OPENAI_KEY, base_url=sim.openai_base_url, timeout_s=10)
    yield provider
    await provider.aclose()


def ask(text: str = "Quanto costa un paio di occhiali?", *, system: tuple[SystemBlock, ...] = (), model: str = "claude-haiku-4-5",
        max_tokens: int = 256) -> ChatRequest:
    return ChatRequest(system=system, messages=[ChatMessage("user", text)], max_tokens=max_tokens, model=model)


async def collect(events: AsyncIterator[ChatEvent]) -> tuple[list[str], list[Usage]]:
    deltas, usages = [], []
    async for event in events:
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            usages.append(event)
    return deltas, usages


# -- Anthropic ------------------------------------------------------------------------------------


async def test_anthropic_streams_text_in_order_and_never_the_thinking(sim: AISimulator, claude: AnthropicChat) -> None:
    answer = "Una montatura parte da 89 euro, lenti escluse."
    sim.script(Reply(answer, thinking="SECRET-REASONING the customer wants a price"))
    system = (SystemBlock("Sei l'assistente di Ottica Bellavista.", cache=True), SystemBlock("Oggi è lunedì."))

    deltas, usages = await collect(claude.stream(ask(system=system)))

    assert "".join(deltas) == answer and len(deltas) > 1
    assert not any("SECRET" in d for d in deltas)
    assert len(usages) == 1 and usages[0].stop_reason == "end_turn"
    assert usages[0].output_tokens > len(deltas)  # thinking is billed though never shown
    body = sim.requests("anthropic")[-1].body
    assert body["stream"] is True
    assert body["system"] == [
        {"type": "text", "text": "Sei l'assistente di Ottica Bellavista.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Oggi è lunedì."},
    ]
    assert "temperature" not in body  # API version 2026-10-21 refuses sampling parameters


async def test_anthropic_usage_writes_the_cached_prefix_then_reads_it(sim: AISimulator, claude: AnthropicChat) -> None:
    system = (SystemBlock(LONG_FACTS, cache=True), SystemBlock("Il cliente si chiama Anna."))
    prefix, rest = tokens(LONG_FACTS), tokens("Il cliente si chiama Anna.") + tokens("Orari?")

    _, [first] = await collect(claude.stream(ask("Orari?", system=system)))
    _, [second] = await collect(claude.stream(ask("Orari?", system=system)))

    assert (first.cache_write_tokens, first.cache_read_tokens, first.input_tokens) == (prefix, 0, rest)
    assert (second.cache_write_tokens, second.cache_read_tokens, second.input_tokens) == (0, prefix, rest)
    assert first.model == "claude-haiku-4-5"


async def test_anthropic_short_prefix_is_not_cached(sim: AISimulator, claude: AnthropicChat) -> None:
    system = (SystemBlock("Breve.", cache=True),)
    for _ in range(2):
        _, [usage] = await collect(claude.stream(ask(system=system)))
        assert usage.cache_write_tokens == usage.cache_read_tokens == 0


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (529, True), (500, True), (503, True),
                                                    (400, False), (403, False), (404, False)])
async def test_anthropic_status_decides_retryable(sim: AISimulator, claude: AnthropicChat, status: int, retryable: bool) -> None:
    sim.fail_next(1, status, api="anthropic", retry_after=7 if status == 429 else None)
    with pytest.raises(ProviderError) as info:
        await collect(claude.stream(ask()))
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert info.value.provider == "anthropic"
    assert str(info.value).startswith(f"anthropic: HTTP {status}")
    if status == 429:
        assert info.value.retry_after_s == 7
    if status == 529:
        assert "overloaded_error" in str(info.value)


async def test_anthropic_bad_key_is_not_retryable_and_not_echoed(sim: AISimulator, claude: AnthropicChat) -> None:
    sim.require_key("anthropic", "sk-ant-the-right-one-000000")
    with pytest.raises(ProviderError) as info:
        await collect(claude.stream(ask()))
    assert (info.value.status, info.value.retryable) == (401, False)
    assert "authentication_error" in str(info.value)
    assert ANTHROPIC_KEY not in str(info.value) and "0123456789abcdef" not in str(info.value)


async def test_anthropic_overloaded_mid_stream_raises_after_the_deltas(sim: AISimulator, claude: AnthropicChat) -> None:
    sim.script(Reply("uno due tre quattro cinque", error_after=2))
    deltas: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for event in claude.stream(ask()):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
    assert deltas == ["uno ", "due "]
    assert info.value.retryable and info.value.status is None
    assert "overloaded_error" in str(info.value)


async def test_anthropic_aclose_after_two_deltas_closes_the_http_stream(sim: AISimulator, claude: AnthropicChat) -> None:
    words = " ".join(f"parola{i}" for i in range(200))
    sim.script(Reply(words))
    sim.set_token_delay(0.02)
    stream = claude.stream(ask())
    seen = [await anext(stream), await anext(stream)]  # type: ignore[call-overload]
    await stream.aclose()  # type: ignore[attr-defined]

    assert all(isinstance(e, TextDelta) for e in seen)
    assert await sim.until(lambda: sim.closed_early == 1, timeout=10)
    record = sim.streams[-1]
    assert not record.finished and record.deltas_sent < 200


async def test_anthropic_timeout_is_retryable(sim: AISimulator) -> None:
    sim.set_latency(3.0)
    provider = AnthropicChat(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url, timeout_s=0.3)
    try:
        with pytest.raises(ProviderError) as info:
            await collect(provider.stream(ask()))
    finally:
        await provider.aclose()
    assert info.value.retryable and "timed out" in str(info.value)


async def test_anthropic_connection_refused_is_retryable() -> None:
    provider = AnthropicChat(api_key=ANTHROPIC_KEY, base_url="http://127.0.0.1:9", timeout_s=2)
    try:
        with pytest.raises(ProviderError) as info:
            await collect(provider.stream(ask()))
    finally:
        await provider.aclose()
    assert info.value.retryable and "connection failed" in str(info.value)


async def test_anthropic_max_tokens_stop_reason(sim: AISimulator, claude: AnthropicChat) -> None:
    sim.script("uno due tre quattro cinque sei")
    deltas, [usage] = await collect(claude.stream(ask(max_tokens=3)))
    assert "".join(deltas) == "uno due tre " and usage.stop_reason == "max_tokens"


# -- Anthropic web search (the server tool) --------------------------------------------------------

SITES = WebSearch(("ottica-blu.it", "fornitore.example.com"), max_uses=2,
                  instructions="Web search: only on ottica-blu.it and fornitore.example.com.")
GARANZIA = WebPage("https://www.ottica-blu.it/garanzia", "Garanzia | Ottica Blu",
                   "Le montature hanno una garanzia di due anni dalla data di acquisto.")
PROGRESSIVE = WebPage("https://shop.fornitore.example.com/lenti/progressive", "Lenti progressive",
                      "Le lenti progressive arrivano in negozio in cinque giorni lavorativi.")
# shares more words with the queries than the shop's own page, but is not on an allowed site
ELSEWHERE = WebPage("https://concorrente.example.net/garanzia", "Garanzia montature lenti progressive",
                    "garanzia montature due anni, lenti progressive in cinque giorni, garanzia montature")


def searching(text: str = "Quanto dura la garanzia delle montature?", *, search: WebSearch = SITES,
              model: str = "claude-sonnet-4-6") -> ChatRequest:
    return dataclasses.replace(ask(text, system=(SystemBlock("Sei l'assistente.", cache=True),), model=model),
                               web_search=search)


async def events_of(stream: AsyncIterator[ChatEvent]) -> list[ChatEvent]:
    return [event async for event in stream]


async def test_anthropic_sends_the_web_search_tool_only_when_asked(sim: AISimulator, claude: AnthropicChat) -> None:
    assert claude.web_search
    await events_of(claude.stream(ask(system=(SystemBlock("Sei l'assistente.", cache=True),))))
    await events_of(claude.stream(searching()))
    await events_of(claude.stream(searching(search=WebSearch((), instructions="nothing to search"))))

    plain, offered, empty = (r.body for r in sim.requests("anthropic"))
    assert "tools" not in plain and len(plain["system"]) == 1
    assert offered["tools"] == [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2,
                                 "allowed_domains": ["ottica-blu.it", "fornitore.example.com"]}]
    assert offered["system"] == [  # the instructions close the prompt; the cached prefix is untouched
        {"type": "text", "text": "Sei l'assistente.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": SITES.instructions},
    ]
    assert "tools" not in empty and len(empty["system"]) == 1  # no site, no tool, no words about it


async def test_anthropic_web_search_yields_the_search_then_cited_text_and_counts_it(
        sim: AISimulator, claude: AnthropicChat) -> None:
    sim.add_web_pages(GARANZIA, PROGRESSIVE, ELSEWHERE)
    answer = "Le montature sono garantite per due anni."
    sim.script(Reply(answer, thinking="SECRET the documents say nothing", searches=("garanzia montature",)),
               Reply(answer, thinking="SECRET again"))

    events = await events_of(claude.stream(searching()))
    _, [no_search] = await collect(claude.stream(searching()))

    assert [type(e) for e in events[:2]] == [WebSearchStarted, WebCitation]
    assert events[1] == WebCitation(GARANZIA.url, GARANZIA.title, GARANZIA.text[:150])  # never the other site
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == answer
    assert not any("SECRET" in d or "query" in d for d in deltas)  # thinking and the search's input stay hidden
    usage = events[-1]
    assert isinstance(usage, Usage) and usage.web_search_requests == 1 and usage.stop_reason == "end_turn"
    assert usage.input_tokens == no_search.input_tokens + tokens(GARANZIA.title) + tokens(GARANZIA.text)  # results are read
    assert no_search.web_search_requests == 0


async def test_anthropic_counts_only_the_searches_that_ran(sim: AISimulator, claude: AnthropicChat) -> None:
    sim.add_web_pages(GARANZIA, PROGRESSIVE, ELSEWHERE)
    sim.script(Reply("Due anni di garanzia; le progressive in cinque giorni.",
                     searches=("garanzia montature", "lenti progressive consegna", "terza ricerca")))

    events = await events_of(claude.stream(searching()))

    assert sum(isinstance(e, WebSearchStarted) for e in events) == 3  # the third is refused: max_uses_exceeded
    assert [e.url for e in events if isinstance(e, WebCitation)] == [GARANZIA.url, PROGRESSIVE.url]  # a subdomain counts
    usage = events[-1]
    assert isinstance(usage, Usage) and usage.web_search_requests == 2


@pytest.mark.parametrize(("search", "complaint"), [
    (WebSearch(("ottica-blu.it",), max_uses=0), "max_uses: Input should be greater than or equal to 1"),
    (WebSearch(("https://ottica-blu.it",)), "should not include the URL scheme"),
])
async def test_anthropic_a_malformed_web_search_tool_is_a_400_not_worth_retrying(
        sim: AISimulator, claude: AnthropicChat, search: WebSearch, complaint: str) -> None:
    with pytest.raises(ProviderError) as info:
        await events_of(claude.stream(searching(search=search)))
    assert (info.value.status, info.value.retryable) == (400, False)
    assert "invalid_request_error" in str(info.value) and complaint in str(info.value)


async def test_anthropic_aclose_during_a_searched_answer_closes_the_http_stream(
        sim: AISimulator, claude: AnthropicChat) -> None:
    sim.add_web_pages(GARANZIA)
    sim.script(Reply(" ".join(f"parola{i}" for i in range(200)), searches=("garanzia montature",)))
    sim.set_token_delay(0.02)
    stream = claude.stream(searching())
    seen = [await anext(stream) for _ in range(3)]  # type: ignore[call-overload]
    await stream.aclose()  # type: ignore[attr-defined]

    assert [type(e) for e in seen] == [WebSearchStarted, WebCitation, TextDelta]
    assert await sim.until(lambda: sim.closed_early == 1, timeout=10)
    assert not sim.streams[-1].finished


async def test_openai_never_searches_and_never_reads_about_searching(sim: AISimulator, gpt: OpenAIChat) -> None:
    assert not gpt.web_search
    sim.add_web_pages(GARANZIA)
    sim.script(Reply("Non ho questa informazione.", searches=("garanzia montature",)))

    events = await events_of(gpt.stream(searching(model="gpt-5.4-mini")))

    assert not any(isinstance(e, WebSearchStarted | WebCitation) for e in events)
    usage = events[-1]
    assert isinstance(usage, Usage) and usage.web_search_requests == 0
    body = sim.requests("openai")[-1].body
    assert "tools" not in body and "web_search_options" not in body
    assert "Web search" not in body["messages"][0]["content"]


async def test_chain_gives_the_fallback_the_request_without_the_tool(
        sim: AISimulator, claude: AnthropicChat, gpt: OpenAIChat) -> None:
    sim.add_web_pages(GARANZIA)
    sim.fail_next(1, 529, api="anthropic")
    sim.script(Reply("Non ho questa informazione: la metto in contatto con un collega.", searches=("garanzia",)))
    chain = FallbackChain([(claude, "claude-sonnet-4-6"), (gpt, "gpt-5.4-mini")])
    assert chain.web_search and not FallbackChain([(gpt, "gpt-5.4-mini"), (claude, "claude-sonnet-4-6")]).web_search

    events = await events_of(chain.stream(searching()))

    assert not any(isinstance(e, WebSearchStarted | WebCitation) for e in events)
    [refused] = sim.requests("anthropic")
    assert refused.status == 529 and refused.body["tools"][0]["type"] == "web_search_20250305"
    fallback = sim.requests("openai")[-1].body
    assert fallback["model"] == "gpt-5.4-mini" and "tools" not in fallback
    assert SITES.instructions not in fallback["messages"][0]["content"]


# -- the fallback chain over real SDKs -------------------------------------------------------------


async def test_chain_falls_over_to_the_second_provider_on_529_before_the_first_token(
        sim: AISimulator, claude: AnthropicChat, gpt: OpenAIChat) -> None:
    sim.fail_next(1, 529, api="anthropic")
    sim.script("Risposta dal secondo fornitore.")
    chain = FallbackChain([(claude, "claude-sonnet-4-6"), (gpt, "gpt-5.4-mini")])

    deltas, [usage] = await collect(chain.stream(ask()))

    assert "".join(deltas) == "Risposta dal secondo fornitore."
    assert usage.model == "gpt-5.4-mini"
    assert [r.status for r in sim.requests("anthropic")] == [529]
    assert [r.body["model"] for r in sim.requests("openai")] == ["gpt-5.4-mini"]


async def test_chain_raises_after_tokens_were_sent_and_never_splices(
        sim: AISimulator, claude: AnthropicChat, gpt: OpenAIChat) -> None:
    sim.script(Reply("prima parte e poi niente", error_after=2))
    chain = FallbackChain([(claude, "claude-sonnet-4-6"), (gpt, "gpt-5.4-mini")])
    deltas: list[str] = []
    with pytest.raises(ChainError) as info:
        async for event in chain.stream(ask()):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
    assert deltas == ["prima ", "parte "]
    assert info.value.partial
    assert sim.requests("openai") == []
    assert "anthropic (claude-sonnet-4-6)" in str(info.value)


async def test_chain_moves_on_when_the_first_token_does_not_come(sim: AISimulator, claude: AnthropicChat, gpt: OpenAIChat) -> None:
    sim.script(Reply("troppo tardi", stall_s=5.0), "in tempo")
    chain = FallbackChain([(claude, "claude-sonnet-4-6"), (gpt, "gpt-5.4-mini")], first_token_timeout_s=0.5)

    deltas, _ = await collect(chain.stream(ask()))

    assert "".join(deltas) == "in tempo"
    # the silent stream (pings only, so no read timeout fires) was closed, not abandoned
    assert await sim.until(lambda: any(s.api == "anthropic" and s.closed_by_client for s in sim.streams), timeout=10)


async def test_chain_all_failing_names_every_provider_without_keys(sim: AISimulator, claude: AnthropicChat, gpt: OpenAIChat) -> None:
    sim.fail_next(1, 529, api="anthropic")
    sim.fail_next(1, 503, api="openai")
    chain = FallbackChain([(claude, "claude-sonnet-4-6"), (gpt, "gpt-5.4-mini")])
    with pytest.raises(ChainError) as info:
        await collect(chain.stream(ask()))
    message = str(info.value)
    assert "anthropic (claude-sonnet-4-6): anthropic: HTTP 529" in message
    assert "openai (gpt-5.4-mini): openai: HTTP 503" in message
    assert info.value.retryable and not info.value.partial
    assert ANTHROPIC_KEY not in message and OPENAI_KEY not in message


async def test_chain_does_not_fall_over_on_a_bad_request(sim: AISimulator, claude: AnthropicChat, gpt: OpenAIChat) -> None:
    sim.fail_next(1, 400, api="anthropic", message="messages: roles must alternate")
    chain = FallbackChain([(claude, "claude-sonnet-4-6"), (gpt, "gpt-5.4-mini")])
    with pytest.raises(ChainError) as info:
        await collect(chain.stream(ask()))
    assert not info.value.retryable and "roles must alternate" in str(info.value)
    assert sim.requests("openai") == []


# -- OpenAI and OpenAI-compatible -----------------------------------------------------------------


async def test_openai_streams_text_with_usage_and_without_reasoning(sim: AISimulator, gpt: OpenAIChat) -> None:
    sim.script(Reply("Siamo aperti dalle 9 alle 19.", thinking="SECRET step by step"))
    system = (SystemBlock("Sei l'assistente.", cache=True), SystemBlock("Fatti: chiuso la domenica."))

    deltas, [usage] = await collect(gpt.stream(ask("Orari?", system=system, model="gpt-5.4-mini")))

    assert "".join(deltas) == "Siamo aperti dalle 9 alle 19."
    assert not any("SECRET" in d for d in deltas)
    assert usage.stop_reason == "stop" and not usage.estimated
    assert usage.output_tokens == len(deltas) + 4  # the 4 reasoning deltas are billed as output
    body = sim.requests("openai")[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Sei l'assistente.\n\nFatti: chiuso la domenica."}
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 256 and body["temperature"] == 0.2


async def test_openai_compatible_inline_think_block_is_cut(sim: AISimulator) -> None:
    local = OpenAIChat(base_url=sim.openai_base_url, name="local", max_tokens_field="max_tokens")  # no key: llama.cpp, Ollama
    sim.script(Reply("Ciao! Come posso aiutarti?", thinking="SECRET <b>ragionamento</b>", reasoning_style="inline"))
    try:
        deltas, [usage] = await collect(local.stream(ask("ciao", model="qwen3:8b")))
    finally:
        await local.aclose()
    assert "".join(deltas) == "Ciao! Come posso aiutarti?"
    assert usage.model == "qwen3:8b"
    assert sim.requests("openai")[-1].body["max_tokens"] == 256


async def test_openai_cached_prefix_is_billed_as_cache_read(sim: AISimulator, gpt: OpenAIChat) -> None:
    system = (SystemBlock(LONG_FACTS, cache=True),)
    _, [first] = await collect(gpt.stream(ask("Orari?", system=system, model="gpt-5.4-mini")))
    _, [second] = await collect(gpt.stream(ask("Orari?", system=system, model="gpt-5.4-mini")))
    assert first.cache_read_tokens == 0
    assert second.cache_read_tokens == tokens(LONG_FACTS)
    assert second.input_tokens == first.input_tokens - second.cache_read_tokens


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (503, True), (400, False), (404, False)])
async def test_openai_status_decides_retryable(sim: AISimulator, gpt: OpenAIChat, status: int, retryable: bool) -> None:
    sim.fail_next(1, status, api="openai")
    with pytest.raises(ProviderError) as info:
        await collect(gpt.stream(ask(model="gpt-5.4-mini")))
    assert (info.value.status, info.value.retryable) == (status, retryable)


async def test_openai_bad_key_message_has_no_trace_of_the_key(sim: AISimulator, gpt: OpenAIChat) -> None:
    sim.require_key("openai", "sk-the-right-one-00000000")
    with pytest.raises(ProviderError) as info:
        await collect(gpt.stream(ask(model="gpt-5.4-mini")))
    assert (info.value.status, info.value.retryable) == (401, False)
    assert "Incorrect API key" in str(info.value)
    assert "cdef" not in str(info.value) and "sk-" not in str(info.value)  # the server echoed its masked ends


async def test_openai_error_mid_stream_is_retryable(sim: AISimulator, gpt: OpenAIChat) -> None:
    sim.script(Reply("a b c d", error_after=1))
    with pytest.raises(ProviderError) as info:
        await collect(gpt.stream(ask(model="gpt-5.4-mini")))
    assert info.value.retryable and "server_error" in str(info.value)


async def test_openai_aclose_closes_the_http_stream(sim: AISimulator, gpt: OpenAIChat) -> None:
    sim.script(" ".join(f"w{i}" for i in range(200)))
    sim.set_token_delay(0.02)
    stream = gpt.stream(ask(model="gpt-5.4-mini"))
    assert isinstance(await anext(stream), TextDelta)  # type: ignore[call-overload]
    assert isinstance(await anext(stream), TextDelta)  # type: ignore[call-overload]
    await stream.aclose()  # type: ignore[attr-defined]
    assert await sim.until(lambda: sim.closed_early == 1, timeout=10)


# -- embeddings and rerank ------------------------------------------------------------------------


async def test_voyage_embeddings_shape_order_batches_and_input_type(sim: AISimulator) -> None:
    sim.require_key("voyage", VOYAGE_KEY)
    voyage = VoyageEmbeddings(api_key=VOYAGE_KEY, model="voyage-3.5", dim=32, base_url=sim.voyage_base_url, batch_size=2)
    texts = ["occhiali da sole", "lenti progressive", "orari di apertura", "prezzi", "garanzia"]
    try:
        vectors = await voyage.embed(texts, kind="document")
        again = await voyage.embed(["prezzi"], kind="query")
    finally:
        await voyage.aclose()
    assert len(vectors) == 5 and all(len(v) == 32 for v in vectors)
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-5
    assert again[0] == pytest.approx(vectors[3], abs=1e-6)  # order kept across batches
    bodies = [r.body for r in sim.requests("voyage")]
    assert [len(b["input"]) for b in bodies] == [2, 2, 1, 1]
    assert [b["input_type"] for b in bodies] == ["document"] * 3 + ["query"]
    assert all(b["output_dimension"] == 32 for b in bodies)


async def test_voyage_wire_format_matches_the_official_client(sim: AISimulator) -> None:
    """The format our httpx client speaks is the one the official ``voyageai`` client gets answered in."""
    voyageai = pytest.importorskip("voyageai")
    official = voyageai.AsyncClient(api_key=VOYAGE_KEY, base_url=sim.voyage_base_url, max_retries=0)
    ours = VoyageEmbeddings(api_key=VOYAGE_KEY, model="voyage-3.5", dim=64, base_url=sim.voyage_base_url)
    ranker = VoyageReranker(api_key=VOYAGE_KEY, base_url=sim.voyage_base_url)
    docs = ["orari del negozio", "prezzi delle lenti", "garanzia di due anni"]
    try:
        theirs = await official.embed(docs, model="voyage-3.5", input_type="document", output_dimension=64)
        mine = await ours.embed(docs, kind="document")
        their_rank = await official.rerank("quanto costano le lenti", docs, model="rerank-2.5", top_k=2)
        my_rank = await ranker.rerank("quanto costano le lenti", docs, top_k=2)
    finally:
        await ours.aclose()
        await ranker.aclose()
        session = getattr(getattr(voyageai, "aiosession", None), "get", lambda: None)()
        if session is not None:
            await session.close()
    for a, b in zip(theirs.embeddings, mine, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert [(r.index, r.relevance_score) for r in their_rank.results] == my_rank
    assert my_rank[0][0] == 1


async def test_voyage_rerank_best_first_and_errors(sim: AISimulator) -> None:
    ranker = VoyageReranker(api_key=VOYAGE_KEY, base_url=sim.voyage_base_url)
    try:
        ranked = await ranker.rerank("lenti a contatto", ["montature", "lenti a contatto mensili", "lenti"], top_k=2)
        assert [i for i, _ in ranked] == [1, 2] and ranked[0][1] >= ranked[1][1]
        sim.fail_next(1, 429, api="voyage", retry_after=2)
        with pytest.raises(ProviderError) as busy:
            await ranker.rerank("x", ["y"], top_k=1)
        assert busy.value.retryable and busy.value.retry_after_s == 2
        sim.require_key("voyage", "pa-another-key-000000")
        with pytest.raises(ProviderError) as refused:
            await ranker.rerank("x", ["y"], top_k=1)
        assert (refused.value.status, refused.value.retryable) == (401, False)
        assert VOYAGE_KEY not in str(refused.value)
    finally:
        await ranker.aclose()


async def test_openai_embeddings_shape_and_dimensions(sim: AISimulator) -> None:
    embedder = OpenAIEmbeddings(api_key=OPENAI_KEY, model="text-embedding-3-small", dim=48, base_url=sim.openai_base_url)
    try:
        vectors = await embedder.embed(["uno", "due", "tre"], kind="query")
        sim.fail_next(1, 500, api="openai")
        with pytest.raises(ProviderError) as info:
            await embedder.embed(["uno"], kind="document")
    finally:
        await embedder.aclose()
    assert [len(v) for v in vectors] == [48, 48, 48]
    assert vectors[0] != vectors[1]
    assert sim.requests("openai")[0].body["dimensions"] == 48
    assert info.value.retryable


async def test_embedding_dimension_mismatch_is_a_readable_error(sim: AISimulator) -> None:
    embedder = OpenAIEmbeddings(api_key=OPENAI_KEY, model="local-e5", dim=384, base_url=sim.openai_base_url,
                                send_dimensions=False)  # the server answers with its own 64
    try:
        with pytest.raises(ProviderError) as info:
            await embedder.embed(["uno"], kind="query")
    finally:
        await embedder.aclose()
    assert "expected 384-dimensional vectors, got 64" in str(info.value) and not info.value.retryable


# -- the simulator's non-streaming answers, read by the official SDKs --------------------------------


async def test_simulator_json_answers_parse_with_the_official_sdks(sim: AISimulator) -> None:
    import anthropic
    import openai

    sim.script(Reply("Risposta intera.", thinking="SECRET"), Reply("Full answer.", thinking="SECRET"))
    claude_sdk = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url, max_retries=0)
    openai_sdk = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=sim.openai_base_url, max_retries=0)
    try:
        message = await claude_sdk.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                                   system=[{"type": "text", "text": LONG_FACTS, "cache_control": {"type": "ephemeral"}}],
                                                   messages=[{"role": "user", "content": "ciao"}])
        completion = await openai_sdk.chat.completions.create(model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}])
    finally:
        await claude_sdk.close()
        await openai_sdk.close()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "Risposta intera." and message.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert message.usage.cache_creation_input_tokens == tokens(LONG_FACTS)
    assert completion.choices[0].message.content == "Full answer." and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 1


async def test_simulator_json_answer_with_a_web_search_parses_with_the_sdk(sim: AISimulator) -> None:
    import anthropic

    sim.add_web_pages(GARANZIA, ELSEWHERE)
    sim.script(Reply("Due anni.", searches=("garanzia montature",)))
    claude_sdk = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url, max_retries=0)
    try:
        message = await claude_sdk.messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "garanzia?"}],
            tools=[{"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["ottica-blu.it"]}])
    finally:
        await claude_sdk.close()
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    assert message.content[0].input == {"query": "garanzia montature"}  # type: ignore[union-attr]
    assert [r.url for r in message.content[1].content] == [GARANZIA.url]  # type: ignore[union-attr]
    text = message.content[2]
    assert text.type == "text" and text.citations is not None and text.citations[0].url == GARANZIA.url
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 1
