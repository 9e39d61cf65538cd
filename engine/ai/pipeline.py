"""The assistant's pipeline: one async generator from a customer's message to a sourced answer.

    context → route (local classifier; a cheap model only when unsure) → handler → retrieval
    → generation (a model, or the offline extractive responder) → ledger

It yields progress events (``classifying``, ``searching``, ``found``, ``generating``, and
``searching_web`` when the model searches the business's sites), text deltas and one final event,
and it is the same generator for an agent's draft (SSE to the inbox), for ``parlo ask`` and for a
ConversationShard's auto-reply. Closing it (``aclose()``: the cancel button, a disconnected
browser, a newer customer message) closes the provider's stream at once; the run is still written
to the ledger as ``cancelled`` with what it had spent.

Web search is off unless the tenant names its sites (``AskRequest.web_search_domains``) and the
answer provider runs searches itself (``web_search``): then a knowledge answer may search those
sites, when the documents do not answer. The pages it cites follow the documents in the final
event's citations (``source: "web"``), and the searches are part of the call's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from engine.ai import responder
from engine.ai.handlers import (BASE_INSTRUCTIONS, LANGUAGE_NAMES, OFFLINE_REPLIES, ROUTER_PROMPT, SPECS,
                                WEB_SEARCH_INSTRUCTIONS, WEB_SEARCH_MAX_USES)
from engine.ai.knowledge.embeddings import Embedder, ProviderEmbedder, in_model_thread
from engine.ai.knowledge.extract import question_text
from engine.ai.knowledge.indexes import Passage
from engine.ai.language import detect, italian_equivalents
from engine.ai.providers.base import (ChatMessage, ChatProvider, ChatRequest, ProviderError, Reranker, SystemBlock,
                                      TextDelta, Usage, WebCitation, WebSearch, WebSearchStarted, offers_web_search)
from engine.ai.routing import Handler, LocalRouter

Event = dict[str, Any]


class Retriever(Protocol):
    async def __call__(self, tenant_id: uuid.UUID, query: str, query_vector: np.ndarray | None,
                       k: int) -> list[Passage]: ...


@dataclass(frozen=True, slots=True)
class AskRequest:
    tenant_id: uuid.UUID
    text: str
    conversation_id: uuid.UUID | None = None
    history: Sequence[ChatMessage] = ()
    business: str = "our business"
    business_facts: str = ""
    purpose: str = "ask"          # auto | draft | ask
    failures: int = 0             # consecutive failed AI answers in this conversation
    language: str | None = None   # None: detected from the text
    web_search_domains: Sequence[str] = ()  # the sites a knowledge answer may search (none: off)


@dataclass(slots=True)
class CallUsage:
    call: str
    provider: str
    usage: Usage
    cost_usd: float

    def as_dict(self) -> dict[str, Any]:
        u = self.usage
        return {"call": self.call, "provider": self.provider, "model": u.model, "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens, "cache_write_tokens": u.cache_write_tokens,
                "cache_read_tokens": u.cache_read_tokens, "web_search_requests": u.web_search_requests,
                "cost_usd": round(self.cost_usd, 6)}


@dataclass(slots=True)
class RunRecord:
    """What the ledger keeps of one run."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    conversation_id: uuid.UUID | None
    purpose: str
    intent: str | None = None
    handler: str | None = None
    route_tier: str | None = None
    status: str = "running"
    error: str | None = None
    language: str | None = None
    first_token_ms: int | None = None
    total_ms: int | None = None
    calls: list[CallUsage] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)

    def usage_summary(self) -> dict[str, Any]:
        total = {k: sum(getattr(c.usage, k) for c in self.calls)
                 for k in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens",
                           "web_search_requests")}
        return {**total, "cost_usd": round(self.cost_usd, 6), "calls": [c.as_dict() for c in self.calls]}


PASSAGES_K = 5  # the most passages a knowledge answer's prompt holds


class _Scored(Protocol):
    @property
    def score(self) -> float: ...


_P = TypeVar("_P", bound=_Scored)


def worth_sending(ranked: Sequence[_P], share: float) -> list[_P]:
    """The best-ranked passages whose fused score is at least ``share`` of the best one's: a
    passage far below the best adds tokens to the model's prompt, seldom the answer."""
    if not ranked:
        return []
    floor = share * ranked[0].score
    return [p for p in ranked if p.score >= floor]


Pricer = Callable[[str, Usage], float]  # (provider name, usage) → USD
Ledger = Callable[[RunRecord], Awaitable[None]]
_MARKER = re.compile(r"\s?\[(\d{1,2})\]")


@dataclass
class Assistant:
    embedder: Embedder
    retrieve: Retriever
    router: LocalRouter | None = None
    answer_provider: ChatProvider | None = None
    answer_model: str = ""
    # a larger model for a conversation whose last AI answer failed: small model, larger model,
    # then a person (two failures hand off)
    escalation_provider: ChatProvider | None = None
    escalation_model: str = ""
    route_provider: ChatProvider | None = None
    route_model: str = ""
    price: Pricer = lambda provider, usage: 0.0
    ledger: Ledger | None = None
    # the tenant's own router (shipped examples plus its own), when it has one; else ``router``
    routers: Callable[[uuid.UUID], Awaitable[LocalRouter | None]] | None = None
    passages_k: int = PASSAGES_K
    offline_policy: responder.OfflinePolicy = field(default_factory=responder.OfflinePolicy)
    # a cross-encoder (Voyage rerank) reorders the hybrid index's best ``rerank_depth`` passages
    reranker: Reranker | None = None
    rerank_depth: int = 20
    # (tenant, words) → the words its knowledge base never uses; lets the offline responder decline
    # a question about something the business does not mention (a city, a brand)
    unknown_words: Callable[[uuid.UUID, list[str]], Awaitable[set[str]]] | None = None
    # the knowledge base's network embedder (Voyage, OpenAI), when it is not the offline model:
    # retrieval then needs the question embedded by it; ``embedder`` still routes
    query_embedder: ProviderEmbedder | None = None
    query_embed_timeout_s: float = 5.0
    # a model's answer gets only the passages worth sending (``worth_sending``); 0: all of them
    context_share: float = 0.0

    async def run(self, request: AskRequest) -> AsyncIterator[Event]:
        started = time.perf_counter()
        record = RunRecord(uuid.uuid4(), request.tenant_id, request.conversation_id, request.purpose)
        try:
            # aclosing: when the consumer closes this generator, the inner ones (and the provider's
            # HTTP stream under them) are closed now, not whenever they are garbage-collected
            async with contextlib.aclosing(self._run(request, record, started)) as events:
                async for event in events:
                    if event["type"] == "delta" and record.first_token_ms is None:
                        record.first_token_ms = int((time.perf_counter() - started) * 1000)
                    yield event
        except (GeneratorExit, asyncio.CancelledError):
            record.status = "cancelled"
            raise
        except ProviderError as exc:
            record.status, record.error = "error", str(exc)
            yield {"type": "error", "message": str(exc), "retryable": exc.retryable, "run_id": str(record.id)}
        finally:
            record.total_ms = int((time.perf_counter() - started) * 1000)
            if self.ledger is not None:
                # shielded: a cancelled run is still written with what it spent
                await asyncio.shield(self._write(record))

    async def _write(self, record: RunRecord) -> None:
        assert self.ledger is not None
        try:
            await self.ledger(record)
        except Exception:  # the ledger must never break an answer; it logs its own failure
            logging.getLogger("parlo.ai").exception("ai run not recorded", extra={"run_id": str(record.id)})

    async def _run(self, request: AskRequest, record: RunRecord, started: float) -> AsyncIterator[Event]:
        text = question_text(request.text)  # a planted "ignore your instructions" is not a question
        language = request.language or detect(text)
        record.language = language
        yield {"type": "progress", "stage": "classifying", "run_id": str(record.id)}
        vector = await in_model_thread(self.embedder.query, text)
        handler, intent, tier = await self._route(text, vector, request, record)
        record.handler, record.intent, record.route_tier = handler.value, intent, tier
        spec = SPECS[handler]
        passages: list[Passage] = []
        if spec.retrieval:
            yield {"type": "progress", "stage": "searching"}
            search_vector = vector if self.query_embedder is None else await self._query_vector(text, record)
            passages = await self._retrieve(request.tenant_id, lexical_query(text, language), search_vector, record)
            if self.answer_provider is not None and self.reranker is None and self.context_share > 0:
                passages = worth_sending(passages, self.context_share)  # the offline responder picks its own
            yield {"type": "progress", "stage": "found", "count": len(passages),
                   "sources": sorted({p.source for p in passages})}
        yield {"type": "progress", "stage": "generating"}
        if handler is Handler.KNOWLEDGE and self.answer_provider is None:
            final_text, citations = await self._offline_answer(request, text, vector, passages, language, record)
            async for event in self._stream_fixed(final_text):
                yield event
        elif handler is Handler.KNOWLEDGE or (self.answer_provider is not None and spec.max_tokens > 0):
            final_text, citations, web = "", [], []
            async with contextlib.aclosing(self._generate(request, text, language, handler, passages, record, web)) as gen:
                async for event in gen:
                    if event["type"] == "delta":
                        final_text += event["text"]
                    yield event
            final_text, citations = _cite(final_text, passages)
            citations += _web_citations(web)
        else:
            final_text, citations = OFFLINE_REPLIES[handler][language], []
            async for event in self._stream_fixed(final_text):
                yield event
        record.citations = citations
        if record.status == "running":
            record.status = "ok"
        yield {"type": "final", "text": final_text, "citations": citations, "intent": intent,
               "handler": handler.value, "language": language, "route": tier, "run_id": str(record.id),
               "handoff": handler is Handler.HANDOFF, "declined": record.status == "declined",
               "escalated": self.answer_provider is not None and self._escalates(request, handler),
               "translated": self.answer_provider is not None or language == "it",
               "usage": record.usage_summary()}

    async def _query_vector(self, text: str, record: RunRecord) -> np.ndarray | None:
        """The question embedded by the knowledge base's network embedder; None (keywords only for
        this question) when it fails or is slow: an answer never waits on it or fails for it."""
        assert self.query_embedder is not None
        try:
            return await asyncio.wait_for(self.query_embedder.aquery(text), self.query_embed_timeout_s)
        except (ProviderError, TimeoutError) as exc:
            logging.getLogger("parlo.ai").warning(
                "question not embedded: keyword search only", extra={
                    "run_id": str(record.id), "embedder": self.query_embedder.name,
                    "error": str(exc) or f"no answer within {self.query_embed_timeout_s:g}s"})
            return None

    async def _retrieve(self, tenant_id: uuid.UUID, text: str, vector: np.ndarray | None,
                        record: RunRecord) -> list[Passage]:
        """The best passages: the hybrid index's, reordered by the reranker when one is configured.
        A reranker that fails costs nothing but its order: the hybrid one is kept."""
        if self.reranker is None:
            return await self.retrieve(tenant_id, text, vector, self.passages_k)
        found = await self.retrieve(tenant_id, text, vector, max(self.rerank_depth, self.passages_k))
        if len(found) <= 1:
            return found
        try:
            ranked = await self.reranker.rerank(text, [f"{p.title}\n{p.text}" for p in found], top_k=self.passages_k)
        except ProviderError as exc:
            logging.getLogger("parlo.ai").warning("rerank failed, hybrid order kept",
                                                  extra={"run_id": str(record.id), "error": str(exc)})
            return found[:self.passages_k]
        return [found[i] for i, _ in ranked]

    async def _route(self, text: str, vector: np.ndarray, request: AskRequest,
                     record: RunRecord) -> tuple[Handler, str, str]:
        if request.failures >= 2:
            return Handler.HANDOFF, "repeated_failure", "rule"
        router = (await self.routers(request.tenant_id) if self.routers is not None else None) or self.router
        local = router.decide(vector) if router is not None else None
        if local is not None and local.confident:
            return local.handler, local.label, "local"
        if self.route_provider is not None:
            try:
                label = await self._ask_router_model(text, record)
                return Handler(label), label, "model"
            except (ProviderError, ValueError):
                pass  # the local guess (or knowledge) is a safe fallback
        if local is not None:
            return local.handler, local.label, "fallback"
        return Handler.KNOWLEDGE, "knowledge", "fallback"

    async def _ask_router_model(self, text: str, record: RunRecord) -> str:
        assert self.route_provider is not None
        request = ChatRequest([SystemBlock(ROUTER_PROMPT, cache=True)], [ChatMessage("user", text[:2000])],
                              max_tokens=5, model=self.route_model, temperature=0.0)
        answer = ""
        async with contextlib.aclosing(self.route_provider.stream(request)) as stream:  # type: ignore[type-var]
            async for event in stream:
                if isinstance(event, TextDelta):
                    answer += event.text
                elif isinstance(event, Usage):
                    record.calls.append(CallUsage("route", self.route_provider.name, event,
                                                  self.price(self.route_provider.name, event)))
        label = answer.strip().lower().split()[0].strip(".,:;\"'") if answer.strip() else ""
        return Handler(label).value

    async def _generate(self, request: AskRequest, text: str, language: str, handler: Handler,
                        passages: Sequence[Passage], record: RunRecord, web: list[WebCitation]) -> AsyncIterator[Event]:
        """The model's answer as events; the web pages it cites are appended to ``web``."""
        assert self.answer_provider is not None
        provider, model = self.answer_provider, self.answer_model
        if self._escalates(request, handler):
            # the ledger's call stays "answer": its model says which tier wrote it
            assert self.escalation_provider is not None
            provider, model = self.escalation_provider, self.escalation_model
        spec = SPECS[handler]
        stable = BASE_INSTRUCTIONS.format(business=request.business, language_name=LANGUAGE_NAMES[language])
        if request.business_facts:
            stable += f"\n\nAbout {request.business}:\n{request.business_facts}"
        system = [SystemBlock(stable + "\n\n" + spec.instructions, cache=True)]
        if spec.retrieval:
            documents = "\n\n".join(f"[{i}] {p.title} ({p.source})\n{p.text}" for i, p in enumerate(passages, 1))
            system.append(SystemBlock(f"<documents>\n{documents or '(none found)'}\n</documents>"))
        messages = [*request.history[-10:], ChatMessage("user", text)]
        search = None
        if handler is Handler.KNOWLEDGE and request.web_search_domains and offers_web_search(provider):
            domains = tuple(request.web_search_domains)
            search = WebSearch(domains, max_uses=WEB_SEARCH_MAX_USES,
                               instructions=WEB_SEARCH_INSTRUCTIONS.format(domains=", ".join(domains)))
        chat = ChatRequest(system, messages, max_tokens=spec.max_tokens, model=model, web_search=search)
        async with contextlib.aclosing(provider.stream(chat)) as stream:  # type: ignore[type-var]
            async for event in stream:
                if isinstance(event, TextDelta):
                    yield {"type": "delta", "text": event.text}
                elif isinstance(event, WebSearchStarted):
                    yield {"type": "progress", "stage": "searching_web"}
                elif isinstance(event, WebCitation):
                    web.append(event)
                elif isinstance(event, Usage):
                    record.calls.append(CallUsage("answer", provider.name, event, self.price(provider.name, event)))

    def _escalates(self, request: AskRequest, handler: Handler) -> bool:
        return handler is Handler.KNOWLEDGE and request.failures >= 1 and self.escalation_provider is not None

    async def _offline_answer(self, request: AskRequest, text: str, vector: np.ndarray, passages: Sequence[Passage],
                              language: str, record: RunRecord) -> tuple[str, list[dict[str, Any]]]:
        if self.query_embedder is not None and passages:
            # the responder's thresholds are the offline model's cosines: judge the passages with it
            passages = await in_model_thread(_offline_cosines, passages, vector, self.embedder)
        selection = await in_model_thread(responder.select, text, vector, passages, self.embedder,
                                            self.offline_policy)
        missing: list[str] = []
        if language == "it" and self.unknown_words is not None and passages:
            # the index is Italian: an Italian word it has never seen names something it cannot answer
            topics = responder.topic_words(text)
            unknown = await self.unknown_words(request.tenant_id, [f for forms in topics.values() for f in forms])
            missing = responder.missing_topics(topics, unknown)
        elif language == "en" and self.unknown_words is not None and passages \
                and (names := responder.proper_names(text)):
            # an English question naming a place or a brand: the name, or a translation of it in
            # the passages ("Italy": "Italia"), must be there; "Milan" for a shop in Bologna is not
            unknown = await self.unknown_words(request.tenant_id, names)
            missing = await in_model_thread(responder.untranslated, [n for n in names if n in unknown], passages,
                                            self.embedder)
        reason = responder.should_decline(text, selection, passages, missing, language, self.offline_policy)
        if reason is not None:
            record.status = "declined"
            record.error = reason
            return responder.DECLINE[language], []
        return responder.compose(selection, language), [_citation(p) for p in selection.passages]

    async def _stream_fixed(self, text: str) -> AsyncIterator[Event]:
        async for event in responder.stream_text(text):
            if isinstance(event, TextDelta):
                yield {"type": "delta", "text": event.text}


def _offline_cosines(passages: Sequence[Passage], vector: np.ndarray, embedder: Embedder) -> list[Passage]:
    """The passages with their ``dense`` score from ``embedder`` (cached by content hash)."""
    cosines = embedder.passages([p.text for p in passages]) @ np.asarray(vector, dtype=np.float32)
    return [dataclasses.replace(p, dense=float(c)) for p, c in zip(passages, cosines)]


def lexical_query(text: str, language: str) -> str:
    """The words the keyword index is searched with: an English question also brings the Italian
    words the glossary has for it (the vector already crosses languages, keywords do not)."""
    return f"{text} {' '.join(italian_equivalents(text))}" if language == "en" else text


def _citation(p: Passage) -> dict[str, Any]:
    return {"source": p.source, "title": p.title, "url": p.url, "chunk_id": p.chunk_id}


def _web_citations(cited: Sequence[WebCitation]) -> list[dict[str, Any]]:
    """The web pages an answer cites, each once, in the order first cited."""
    out: dict[str, dict[str, Any]] = {}
    for c in cited:
        out.setdefault(c.url, {"source": "web", "title": c.title or c.url, "url": c.url, "chunk_id": None})
    return list(out.values())


def _cite(text: str, passages: Sequence[Passage]) -> tuple[str, list[dict[str, Any]]]:
    """The answer without its [n] markers, and the passages those markers named (in order)."""
    cited: list[dict[str, Any]] = []
    for match in _MARKER.finditer(text):
        n = int(match.group(1))
        if 1 <= n <= len(passages) and all(c["chunk_id"] != passages[n - 1].chunk_id for c in cited):
            cited.append(_citation(passages[n - 1]))
    return _MARKER.sub("", text).strip(), cited
