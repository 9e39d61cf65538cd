"""The provider interfaces the AI pipeline talks to, and the events a chat stream yields.

A chat provider turns a system prompt (a list of blocks, the stable ones first so they can be
cached) and a conversation into a stream of :class:`TextDelta` and, at the end, one
:class:`Usage`. Provider failures are raised as :class:`ProviderError` with ``retryable`` set, so
the fallback chain (``engine.ai.providers.chain``) decides once whether the next provider is tried.
Closing the async iterator (``aclose()``) must close the underlying HTTP stream at once: that is
how a cancelled answer stops costing tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from engine.errors import ParloError


class ProviderError(ParloError):
    """A provider failed. ``retryable``: another attempt or the next provider may succeed
    (429, 529 overloaded, 5xx, timeouts, connection errors); otherwise the request itself is bad
    (400, 401, 403, 404) and trying elsewhere would fail the same way for the same reason."""

    def __init__(self, message: str, *, provider: str, status: int | None = None, retryable: bool = False,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s  # the provider's Retry-After, when it sent one


@dataclass(frozen=True, slots=True)
class SystemBlock:
    text: str
    cache: bool = False  # mark the end of a stable prefix (Anthropic cache_control: ephemeral)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, split the way they are billed: ``input_tokens`` excludes the
    cached prefix (``cache_read_tokens``) and the prefix written to the cache
    (``cache_write_tokens``), as Anthropic reports them; providers that count differently convert.
    ``estimated``: the provider reported no usage and the counts are guesses (~4 characters a token)."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    stop_reason: str | None = None
    estimated: bool = False


ChatEvent = TextDelta | Usage


@dataclass(frozen=True, slots=True)
class ChatRequest:
    system: Sequence[SystemBlock]
    messages: Sequence[ChatMessage]
    max_tokens: int
    model: str
    temperature: float = 0.2
    metadata: dict[str, str] = field(default_factory=dict)


class ChatProvider(Protocol):
    name: str  # "anthropic", "openai", "offline", …

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """Text deltas as they arrive, then exactly one Usage. Thinking/reasoning content is never
        yielded. Raises ProviderError (possibly after some deltas)."""
        ...


class EmbeddingProvider(Protocol):
    name: str
    dim: int

    async def embed(self, texts: Sequence[str], *, kind: Literal["query", "document"]) -> list[list[float]]: ...


class Reranker(Protocol):
    name: str

    async def rerank(self, query: str, documents: Sequence[str], *, top_k: int) -> list[tuple[int, float]]:
        """(index into documents, relevance) best first."""
        ...
