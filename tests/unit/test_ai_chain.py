"""The fallback chain's rules, with scripted in-memory providers (the wire is tested in
tests/integration/test_ai_providers.py): when it moves on, when it raises, that it never hangs,
and that closing it closes the provider's stream."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence

import pytest

from engine.ai.providers.base import (ChatEvent, ChatMessage, ChatRequest, ProviderError, TextDelta, Usage, WebCitation,
                                      WebSearch, WebSearchStarted)
from engine.ai.providers.chain import ChainError, FallbackChain

pytestmark = pytest.mark.unit

REQUEST = ChatRequest(system=(), messages=[ChatMessage("user", "ciao")], max_tokens=64, model="unused")


class Scripted:
    """Yields ``deltas`` (a float is a pause, another event is yielded as it is), then raises
    ``error`` or ends with a Usage."""

    def __init__(self, name: str, deltas: Sequence[str | float | ChatEvent] = ("ok",), error: ProviderError | None = None,
                 usage: bool = True, web_search: bool = False) -> None:
        self.name = name
        self.deltas = deltas
        self.error = error
        self.usage = usage
        self.web_search = web_search
        self.models: list[str] = []
        self.requests: list[ChatRequest] = []
        self.closed = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        self.models.append(request.model)
        self.requests.append(request)
        try:
            for item in self.deltas:
                if isinstance(item, float):
                    await asyncio.sleep(item)
                elif isinstance(item, str):
                    yield TextDelta(item)
                else:
                    yield item
            if self.error is not None:
                raise self.error
            if self.usage:
                yield Usage(model=request.model, input_tokens=3, output_tokens=len(self.deltas))
        finally:
            self.closed += 1


def failure(name: str, status: int | None, retryable: bool, message: str = "boom", retry_after_s: float | None = None) -> ProviderError:
    return ProviderError(f"{name}: {message}", provider=name, status=status, retryable=retryable, retry_after_s=retry_after_s)


async def run(chain: FallbackChain) -> tuple[str, list[Usage]]:
    text, usages = [], []
    async for event in chain.stream(REQUEST):
        if isinstance(event, TextDelta):
            text.append(event.text)
        else:
            usages.append(event)
    return "".join(text), usages


async def test_first_provider_answers_alone() -> None:
    first, second = Scripted("a", ["uno ", "due"]), Scripted("b")
    text, usages = await run(FallbackChain([(first, "m1"), (second, "m2")]))
    assert text == "uno due" and len(usages) == 1 and usages[0].model == "m1"
    assert second.models == []


@pytest.mark.parametrize("status", [429, 529, 500, 503, None])
async def test_retryable_failure_before_any_delta_moves_to_the_next(status: int | None) -> None:
    first = Scripted("a", [], error=failure("a", status, True))
    second = Scripted("b", ["dal secondo"])
    text, [usage] = await run(FallbackChain([(first, "m1"), (second, "m2")]))
    assert text == "dal secondo" and usage.model == "m2"
    assert first.models == ["m1"] and second.models == ["m2"]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_non_retryable_failure_raises_at_once(status: int) -> None:
    first = Scripted("a", [], error=failure("a", status, False, "invalid x-api-key"))
    second = Scripted("b")
    with pytest.raises(ChainError) as info:
        await run(FallbackChain([(first, "m1"), (second, "m2")]))
    assert second.models == []
    assert info.value.status == status and not info.value.retryable and not info.value.partial
    assert "a (m1): a: invalid x-api-key" in str(info.value)


async def test_failure_after_deltas_raises_and_never_splices() -> None:
    first = Scripted("a", ["mezza ", "risposta"], error=failure("a", None, True, "stream error: overloaded_error"))
    second = Scripted("b", ["altra risposta"])
    seen: list[str] = []
    with pytest.raises(ChainError) as info:
        async for event in FallbackChain([(first, "m1"), (second, "m2")]).stream(REQUEST):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    assert seen == ["mezza ", "risposta"]
    assert info.value.partial and second.models == []
    assert "not switching providers mid-answer" in str(info.value)


async def test_all_failing_lists_every_attempt_in_order() -> None:
    chain = FallbackChain([(Scripted("a", [], error=failure("a", 529, True, "HTTP 529 overloaded_error")), "m1"),
                           (Scripted("b", [], error=failure("b", 429, True, "HTTP 429")), "m2"),
                           (Scripted("c", [], error=failure("c", None, True, "timed out")), "m3")])
    with pytest.raises(ChainError) as info:
        await run(chain)
    message = str(info.value)
    assert message.startswith("all 3 providers failed: 1. a (m1)")
    assert message.index("a (m1)") < message.index("b (m2)") < message.index("c (m3)")
    assert [a.provider for a in info.value.attempts] == ["a", "b", "c"]
    assert info.value.retryable and "\n" not in message


async def test_silence_before_the_first_token_counts_as_retryable() -> None:
    slow = Scripted("slow", [30.0, "troppo tardi"])
    fast = Scripted("fast", ["subito"])
    text, _ = await run(FallbackChain([(slow, "m1"), (fast, "m2")], first_token_timeout_s=0.05))
    assert text == "subito"
    assert slow.closed == 1  # the silent stream was closed, not left behind


async def test_a_stream_that_stalls_after_text_ends_with_an_error_not_a_hang() -> None:
    stalling = Scripted("a", ["inizio ", 30.0, "fine"])
    with pytest.raises(ChainError) as info:
        await asyncio.wait_for(run(FallbackChain([(stalling, "m1"), (Scripted("b"), "m2")], idle_timeout_s=0.05)), 10)
    assert info.value.partial and "stalled" in str(info.value)
    assert stalling.closed == 1


async def test_a_stream_without_usage_is_a_provider_failure() -> None:
    text, [usage] = await run(FallbackChain([(Scripted("a", [], usage=False), "m1"), (Scripted("b", ["ok"]), "m2")]))
    assert text == "ok" and usage.model == "m2"


async def test_closing_the_chain_closes_the_provider_stream() -> None:
    provider = Scripted("a", ["uno ", "due ", 30.0, "tre"])
    stream = FallbackChain([(provider, "m1")]).stream(REQUEST)
    assert await anext(stream) == TextDelta("uno ")  # type: ignore[call-overload]
    assert await anext(stream) == TextDelta("due ")  # type: ignore[call-overload]
    await stream.aclose()  # type: ignore[attr-defined]
    assert provider.closed == 1


async def test_cancelling_the_consumer_closes_the_provider_stream() -> None:
    provider = Scripted("a", ["uno ", 30.0, "due"])
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in FallbackChain([(provider, "m1")]).stream(REQUEST):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.closed == 1


async def test_retry_after_is_honoured_only_for_the_same_provider_and_capped() -> None:
    same = Scripted("a", [], error=failure("a", 429, True, retry_after_s=60))
    chain = FallbackChain([(same, "m1"), (same, "m2")], max_backoff_s=0.01)
    with pytest.raises(ChainError):
        await asyncio.wait_for(run(chain), 5)
    assert same.models == ["m1", "m2"]
    assert chain._pause(failure("a", 429, True, retry_after_s=60), same, same) == 0.01
    assert chain._pause(failure("a", 429, True, retry_after_s=60), same, Scripted("b")) == 0.0


def test_an_empty_chain_is_refused() -> None:
    with pytest.raises(ValueError):
        FallbackChain([])


# -- web search -----------------------------------------------------------------------------------

SEARCHING = dataclasses.replace(REQUEST, web_search=WebSearch(("ottica.it",), instructions="cerca su ottica.it"))
PAGE = WebCitation("https://ottica.it/orari", "Orari", "aperto il sabato")


def test_the_chain_offers_web_search_only_when_its_first_provider_runs_it() -> None:
    searcher, plain = Scripted("a", web_search=True), Scripted("b")
    assert FallbackChain([(searcher, "m1"), (plain, "m2")]).web_search
    assert not FallbackChain([(plain, "m2"), (searcher, "m1")]).web_search
    assert not FallbackChain([(plain, "m2")]).web_search


async def test_a_fallback_without_web_search_gets_the_request_without_the_tool() -> None:
    searcher = Scripted("a", [], error=failure("a", 529, True), web_search=True)
    plain = Scripted("b", ["dai documenti"])
    events = [e async for e in FallbackChain([(searcher, "m1"), (plain, "m2")]).stream(SEARCHING)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "dai documenti"
    assert searcher.requests[0].web_search == SEARCHING.web_search
    assert plain.requests[0].web_search is None  # neither the tool nor its instructions


async def test_a_web_citation_is_part_of_the_answer_so_there_is_no_switching_after_it() -> None:
    searcher = Scripted("a", [WebSearchStarted(), PAGE], error=failure("a", None, True, "stream error"), web_search=True)
    plain = Scripted("b", ["altra risposta"])
    seen: list[ChatEvent] = []
    with pytest.raises(ChainError) as info:
        async for event in FallbackChain([(searcher, "m1"), (plain, "m2")]).stream(SEARCHING):
            seen.append(event)
    assert seen == [WebSearchStarted(), PAGE]
    assert info.value.partial and plain.models == []


async def test_a_search_before_the_first_token_moves_on_when_only_the_search_was_seen() -> None:
    searcher = Scripted("a", [WebSearchStarted()], error=failure("a", 529, True), web_search=True)
    plain = Scripted("b", ["dai documenti"])
    events = [e async for e in FallbackChain([(searcher, "m1"), (plain, "m2")]).stream(SEARCHING)]
    assert events[0] == WebSearchStarted() and isinstance(events[-1], Usage) and events[-1].model == "m2"


async def test_a_web_search_gives_the_provider_a_fresh_first_token_clock() -> None:
    searcher = Scripted("a", [0.3, WebSearchStarted(), 0.3, PAGE, "aperto"], web_search=True)
    plain = Scripted("b", ["troppo presto"])
    events = [e async for e in FallbackChain([(searcher, "m1"), (plain, "m2")], first_token_timeout_s=0.5)
              .stream(SEARCHING)]
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("aperto")]
    assert plain.models == []
