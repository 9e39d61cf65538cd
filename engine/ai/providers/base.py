"""The provider interfaces the AI pipeline talks to, and the events a chat stream yields.

A chat provider turns a system prompt (a list of blocks, the stable ones first so they can be
cached) and a conversation into a stream of :class:`TextDelta` and, at the end, one
:class:`Usage`. A provider whose API searches the web itself (``web_search = True``: Anthropic's
server tool) also yields :class:`WebSearchStarted` when the model starts a search and
:class:`WebCitation` for each web page the answer cites, when the request carries a
:class:`WebSearch`; the others never search and ignore it. Provider failures are raised as :class:`ProviderError` with ``retryable`` set, so
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
class WebSearchStarted:
    """The model began a web search (the provider runs it; the answer continues afterwards)."""


@dataclass(frozen=True, slots=True)
class WebCitation:
    """A web page the answer's text cites, as the provider reports it."""

    url: str
    title: str
    cited_text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, split the way they are billed: ``input_tokens`` excludes the
    cached prefix (``cache_read_tokens``) and the prefix written to the cache
    (``cache_write_tokens``), as Anthropic reports them; providers that count differently convert.
    ``estimated``: the provider reported no usage and the counts are guesses (~4 characters a token).
    ``web_search_requests``: searches the provider ran (and bills apart from tokens)."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    stop_reason: str | None = None
    estimated: bool = False
    web_search_requests: int = 0


ChatEvent = TextDelta | WebSearchStarted | WebCitation | Usage


@dataclass(frozen=True, slots=True)
class WebSearch:
    """Let the model search the web, on these sites only (a site includes its subdomains), at most
    ``max_uses`` times. ``instructions`` say when it may: a provider that sends the tool adds them
    to the system prompt, so a provider without the tool (a fallback) never reads about it."""

    allowed_domains: tuple[str, ...]
    max_uses: int = 2
    instructions: str = ""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    system: Sequence[SystemBlock]
    messages: Sequence[ChatMessage]
    max_tokens: int
    model: str
    temperature: float = 0.2
    metadata: dict[str, str] = field(default_factory=dict)
    web_search: WebSearch | None = None  # honoured only by providers with ``web_search = True``


class ChatProvider(Protocol):
    name: str  # "anthropic", "openai", "offline", …
    web_search: bool  # runs a web search itself when a request carries a WebSearch

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """Text deltas as they arrive (with web-search events, see above), then exactly one Usage.
        Thinking/reasoning content and tool input are never yielded. Raises ProviderError (possibly
        after some deltas)."""
        ...


def offers_web_search(provider: object) -> bool:
    """A provider's ``web_search`` flag; a provider that does not say has none."""
    return getattr(provider, "web_search", False) is True


class EmbeddingProvider(Protocol):
    name: str
    dim: int

    async def embed(self, texts: Sequence[str], *, kind: Literal["query", "document"]) -> list[list[float]]: ...


class Reranker(Protocol):
    name: str

    async def rerank(self, query: str, documents: Sequence[str], *, top_k: int) -> list[tuple[int, float]]:
        """(index into documents, relevance) best first."""
        ...
