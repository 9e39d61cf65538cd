"""Voyage AI's ``POST /v1/embeddings`` and ``POST /v1/rerank``, errors as ``{"detail": …}``.

Vectors are deterministic (hashed words, normalised) with the simulator's ``embedding_dim`` or the
request's ``output_dimension``; ``encoding_format: base64`` is little-endian float32, as the
official client asks for by default. Rerank scores are the share of the query's words a document
contains, best first, cut at ``top_k``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bench.ai_simulator.state import AIState
from bench.ai_simulator.text import float32_base64, relevance, tokens, vector
from bench.ai_simulator.wire import Rejected, bearer, check_key, handler

INPUT_TYPES = (None, "query", "document")
MAX_INPUTS = 1000
MAX_DOCUMENTS = 1000


def render_error(exc: Rejected) -> web.Response:
    headers = {"retry-after": f"{exc.retry_after:g}"} if exc.retry_after is not None else {}
    return web.json_response({"detail": exc.message}, status=exc.status, headers=headers)


def _texts(value: Any, name: str, limit: int) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise Rejected(400, f"{name} must be a string or a non-empty list of strings")
    if len(value) > limit:
        raise Rejected(400, f"{name} can have at most {limit} items")
    return value


def routes(state: AIState) -> list[web.RouteDef]:
    def authorize(request: web.Request) -> None:
        try:
            check_key(state, "voyage", bearer(request))
        except Rejected:
            raise Rejected(401, "Provided API key is invalid.") from None

    async def embeddings(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        authorize(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise Rejected(400, "model is required")
        texts = _texts(body.get("input"), "input", MAX_INPUTS)
        if body.get("input_type") not in INPUT_TYPES:
            raise Rejected(400, "input_type must be None, 'query' or 'document'")
        with state.lock:
            dim = state.embedding_dim
        dimension = body.get("output_dimension") or dim
        if not isinstance(dimension, int) or dimension < 1:
            raise Rejected(400, "output_dimension must be a positive integer")
        if body.get("output_dtype") not in (None, "float"):
            raise Rejected(400, "only output_dtype 'float' is simulated")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vec = vector(text, dimension)
            data.append({"object": "embedding", "embedding": float32_base64(vec) if as_base64 else vec, "index": i})
        return web.json_response({"object": "list", "data": data, "model": model,
                                  "usage": {"total_tokens": sum(tokens(t) for t in texts)}})

    async def rerank(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        authorize(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise Rejected(400, "model is required")
        query = body.get("query")
        if not isinstance(query, str) or not query:
            raise Rejected(400, "query must be a non-empty string")
        documents = _texts(body.get("documents"), "documents", MAX_DOCUMENTS)
        top_k = body.get("top_k")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise Rejected(400, "top_k must be a positive integer")
        scored = sorted(((relevance(query, d), i) for i, d in enumerate(documents)), key=lambda s: (-s[0], s[1]))
        if top_k is not None:
            scored = scored[:top_k]
        data = []
        for score, i in scored:
            item: dict[str, Any] = {"relevance_score": score, "index": i}
            if body.get("return_documents"):
                item["document"] = documents[i]
            data.append(item)
        used = tokens(query) * len(documents) + sum(tokens(d) for d in documents)
        return web.json_response({"object": "list", "data": data, "model": model, "usage": {"total_tokens": used}})

    return [
        web.post("/voyage/v1/embeddings", handler(state, "voyage", render_error, embeddings)),
        web.post("/voyage/v1/rerank", handler(state, "voyage", render_error, rerank)),
        web.post("/v1/rerank", handler(state, "voyage", render_error, rerank)),
    ]
