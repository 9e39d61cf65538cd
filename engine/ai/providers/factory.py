"""Providers built from settings: the one place that reads the ``ai_*`` keys, URLs and tiers."""

from __future__ import annotations

import logging
from typing import Literal

from engine.ai.knowledge.embeddings import OFFLINE_EMBEDDER, EmbeddingCache, ProviderEmbedder
from engine.ai.providers.anthropic import AnthropicChat
from engine.ai.providers.base import ChatProvider, EmbeddingProvider, Reranker
from engine.ai.providers.chain import FallbackChain
from engine.ai.providers.embeddings import OpenAIEmbeddings, VoyageEmbeddings, VoyageReranker
from engine.ai.providers.openai_chat import OpenAIChat
from engine.config import Settings

Tier = Literal["router", "answer", "escalation"]
log = logging.getLogger("parlo.ai")


def _tier(value: str) -> tuple[str, str]:
    provider, _, model = value.partition(":")
    return provider, model


def chat_provider(settings: Settings, provider: str) -> ChatProvider | None:
    """The named provider, or None when it has no key (OpenAI-compatible servers on a non-OpenAI
    base URL need none)."""
    timeouts = {"timeout_s": settings.ai_request_timeout_s, "connect_timeout_s": settings.ai_connect_timeout_s}
    if provider == "anthropic":
        if settings.ai_anthropic_api_key is None:
            return None
        return AnthropicChat(api_key=settings.ai_anthropic_api_key.get_secret_value(),
                             base_url=settings.ai_anthropic_base_url, **timeouts)
    if provider == "openai":
        key = settings.ai_openai_api_key
        if key is None and settings.ai_openai_base_url.startswith("https://api.openai.com"):
            return None
        return OpenAIChat(api_key=key.get_secret_value() if key else None, base_url=settings.ai_openai_base_url, **timeouts)
    raise ValueError(f"unknown chat provider {provider!r}")


def chat_chain(settings: Settings, tier: Tier = "answer") -> FallbackChain | None:
    """The tier's model, then the fallback model; None when no provider of either is configured
    (or, for the escalation tier, when no escalation model is)."""
    if tier == "escalation" and not settings.ai_escalation_model:
        return None
    first = {"router": settings.ai_router_model, "answer": settings.ai_answer_model,
             "escalation": settings.ai_escalation_model}[tier]
    assert first is not None
    wanted = [first]
    if settings.ai_fallback_model and settings.ai_fallback_model not in wanted:
        wanted.append(settings.ai_fallback_model)
    built: dict[str, ChatProvider | None] = {}
    pairs: list[tuple[ChatProvider, str]] = []
    for entry in wanted:
        name, model = _tier(entry)
        if name not in built:
            built[name] = chat_provider(settings, name)
        provider = built[name]
        if provider is not None:
            pairs.append((provider, model))
    if not pairs:
        return None
    return FallbackChain(pairs, first_token_timeout_s=settings.ai_first_token_timeout_s,
                         idle_timeout_s=settings.ai_idle_timeout_s, backoff_s=settings.ai_fallback_backoff_s)


def embedding_provider(settings: Settings) -> EmbeddingProvider | None:
    """The configured network embedder; None for the offline default (built by the knowledge side)."""
    if settings.ai_embedder == "voyage" and settings.ai_voyage_api_key is not None:
        return VoyageEmbeddings(api_key=settings.ai_voyage_api_key.get_secret_value(), model=settings.ai_voyage_embedding_model,
                                dim=settings.ai_voyage_embedding_dim, base_url=settings.ai_voyage_base_url,
                                timeout_s=settings.ai_embedding_timeout_s)
    if settings.ai_embedder == "openai":
        key = settings.ai_openai_api_key
        if key is None and settings.ai_openai_base_url.startswith("https://api.openai.com"):
            return None
        return OpenAIEmbeddings(api_key=key.get_secret_value() if key else None, model=settings.ai_openai_embedding_model,
                                dim=settings.ai_openai_embedding_dim, base_url=settings.ai_openai_base_url,
                                timeout_s=settings.ai_embedding_timeout_s)
    return None


def embedder_name(settings: Settings) -> str:
    """The name the knowledge base's chunks are stored under with these settings: the network
    embedder's (``voyage:voyage-3.5@1024``) when it is configured, else the offline model's. The
    dimension is part of the name: vectors of one model at two sizes are never compared."""
    if settings.ai_embedder == "voyage" and settings.ai_voyage_api_key is not None:
        return f"voyage:{settings.ai_voyage_embedding_model}@{settings.ai_voyage_embedding_dim}"
    if settings.ai_embedder == "openai" and (settings.ai_openai_api_key is not None
                                             or not settings.ai_openai_base_url.startswith("https://api.openai.com")):
        return f"openai:{settings.ai_openai_embedding_model}@{settings.ai_openai_embedding_dim}"
    return OFFLINE_EMBEDDER


def knowledge_embedder(settings: Settings) -> ProviderEmbedder | None:
    """The network embedder of the knowledge base, behind the content-hash cache under PARLO_HOME;
    None for the offline model (``engine.ai.service.offline_embedder``), also when ``ai_embedder``
    names a provider whose key is missing (logged: the offline model goes on serving)."""
    if settings.ai_embedder == "offline":
        return None
    provider = embedding_provider(settings)
    name = embedder_name(settings)
    if provider is None or name == OFFLINE_EMBEDDER:
        log.warning("the configured embedder has no key: the knowledge base stays with the offline model",
                    extra={"embedder": settings.ai_embedder})
        return None
    return ProviderEmbedder(provider, name, cache=EmbeddingCache(settings.home / "cache" / "embeddings.sqlite"))


def reranker(settings: Settings) -> Reranker | None:
    if settings.ai_reranker == "voyage" and settings.ai_voyage_api_key is not None:
        return VoyageReranker(api_key=settings.ai_voyage_api_key.get_secret_value(), model=settings.ai_voyage_rerank_model,
                              base_url=settings.ai_voyage_base_url, timeout_s=settings.ai_embedding_timeout_s)
    return None
