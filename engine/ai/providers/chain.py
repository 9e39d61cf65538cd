"""``FallbackChain``: several (provider, model) pairs behind one ChatProvider, tried in order.

The rules, decided here once:

* a retryable failure (429, 529, 5xx, timeouts, a silent stream) *before the first delta* moves
  on to the next pair, after an optional short pause;
* once a delta has been yielded, any failure is raised: two providers' answers are never spliced;
* a non-retryable failure (400, 401, 403, 404) is raised at once: elsewhere it would fail alike;
* nothing waits forever: no delta within ``first_token_timeout_s`` of the start counts as a
  retryable failure, and no event within ``idle_timeout_s`` afterwards ends the stream; a web
  search the model starts gets a fresh ``first_token_timeout_s`` (the provider is running it);
* a web citation is part of the answer: after one, as after a delta, there is no switching;
* web search is offered only as far as it goes: the chain has it when its first provider has it,
  and a provider without it is handed the request without the tool (and without the instructions
  that come with it), so a fallback answers from the documents alone, as it always did.

The error raised at the end lists every attempt, readably and without secrets.
Closing the chain's iterator closes the provider's stream it is reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from engine.ai.providers.base import (ChatEvent, ChatProvider, ChatRequest, ProviderError, TextDelta, Usage,
                                      WebCitation, WebSearchStarted, offers_web_search)


@dataclass(frozen=True, slots=True)
class Attempt:
    provider: str
    model: str
    error: str
    retryable: bool
    status: int | None = None

    def __str__(self) -> str:
        return f"{self.provider} ({self.model}): {self.error}"


class ChainError(ProviderError):
    """Every attempt of a chain, in order. ``partial``: text had already been streamed."""

    def __init__(self, message: str, *, attempts: Sequence[Attempt], partial: bool, retryable: bool,
                 status: int | None, retry_after_s: float | None = None) -> None:
        super().__init__(message, provider="chain", status=status, retryable=retryable, retry_after_s=retry_after_s)
        self.attempts = tuple(attempts)
        self.partial = partial


class FallbackChain:
    name = "chain"

    def __init__(self, providers: Sequence[tuple[ChatProvider, str]], *, first_token_timeout_s: float = 20.0,
                 idle_timeout_s: float = 30.0, backoff_s: float = 0.0, max_backoff_s: float = 2.0) -> None:
        """``backoff_s``: the pause before the next attempt; when the next pair is the same
        provider, its Retry-After (capped at ``max_backoff_s``) is honoured."""
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        self.providers = list(providers)
        self.first_token_timeout_s = first_token_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    @property
    def web_search(self) -> bool:
        """True when the provider that answers (unless it fails) runs web searches."""
        return offers_web_search(self.providers[0][0])

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        attempts: list[Attempt] = []
        for position, (provider, model) in enumerate(self.providers):
            started = False
            attempt = dataclasses.replace(request, model=model,
                                          web_search=request.web_search if offers_web_search(provider) else None)
            try:
                # aclosing: when our consumer closes us, the provider's stream is closed now, not at GC
                async with contextlib.aclosing(self._attempt(provider, attempt)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta | WebCitation):
                            started = True
                        yield event
                return
            except ProviderError as exc:
                attempts.append(Attempt(provider.name, model, str(exc), exc.retryable, exc.status))
                last = position == len(self.providers) - 1
                if started or not exc.retryable or last:
                    raise _final(attempts, exc, partial=started) from exc
                await asyncio.sleep(self._pause(exc, provider, self.providers[position + 1][0]))

    def _pause(self, exc: ProviderError, current: ChatProvider, following: ChatProvider) -> float:
        pause = self.backoff_s
        if following is current and exc.retry_after_s is not None:
            pause = max(pause, exc.retry_after_s)
        return min(pause, self.max_backoff_s)

    async def _attempt(self, provider: ChatProvider, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """One provider's stream under the chain's clocks; it ends with exactly one Usage."""
        loop = asyncio.get_running_loop()
        events = aiter(provider.stream(request))
        deadline = loop.time() + self.first_token_timeout_s
        seen_text = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events)
                except StopAsyncIteration:
                    raise ProviderError(f"{provider.name}: the stream ended without usage", provider=provider.name,
                                        retryable=True) from None
                except TimeoutError:
                    what = f"no reply within {self.first_token_timeout_s:g} s" if not seen_text else \
                        f"the stream stalled for {self.idle_timeout_s:g} s"
                    raise ProviderError(f"{provider.name}: {what}", provider=provider.name, retryable=True) from None
                seen_text = seen_text or isinstance(event, TextDelta | WebCitation)
                yield event
                if isinstance(event, Usage):
                    return
                if seen_text:  # restarted after the yield: our consumer's pace is not the provider's
                    deadline = loop.time() + self.idle_timeout_s
                elif isinstance(event, WebSearchStarted):  # the provider searches before it writes
                    deadline = loop.time() + self.first_token_timeout_s
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


def _final(attempts: Sequence[Attempt], last: ProviderError, *, partial: bool) -> ChainError:
    if partial:
        head = f"{last.provider} failed after the answer had started; not switching providers mid-answer"
    elif len(attempts) == 1:
        head = "the provider failed"
    elif not last.retryable:
        head = f"gave up after {len(attempts)} attempts (the last error would repeat anywhere)"
    else:
        head = f"all {len(attempts)} providers failed"
    tried = "; ".join(f"{i}. {a}" for i, a in enumerate(attempts, 1))
    return ChainError(f"{head}: {tried}", attempts=attempts, partial=partial, retryable=last.retryable,
                      status=last.status, retry_after_s=last.retry_after_s)
