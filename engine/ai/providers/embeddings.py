"""Embeddings and reranking over the network: Voyage AI (embeddings, rerank) and OpenAI (or an
OpenAI-compatible server's ``/v1/embeddings``).

Voyage is spoken over ``httpx`` in Voyage's own wire format rather than through the ``voyageai``
package: that package's async client sends through an aiohttp session of its own, with a tenacity
retry loop of its own, and imports PIL and huggingface_hub on the way in. The tests check the
format against the same local server the official client is pointed at. OpenAI goes through its
official SDK, imported when the provider is built.

Vectors come back in input order, checked against ``dim``; failures are ``ProviderError`` with
the same retry rule as chat (429, 5xx, timeouts retryable).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import httpx
import httpx2

from engine.ai.providers.base import ProviderError
from engine.ai.providers.errors import redact, retry_after, status_error, transport_error

if TYPE_CHECKING:
    import openai

VOYAGE_BASE_URL = "https://api.voyageai.com/v1"
Kind = Literal["query", "document"]


def _decode(value: object, provider: str) -> list[float]:
    if isinstance(value, str):  # encoding_format=base64: little-endian float32
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(value, list):
        return [float(v) for v in value]
    raise ProviderError(f"{provider}: unexpected embedding of type {type(value).__name__}", provider=provider)


class _VoyageHttp:
    """One choke point for Voyage requests: the key in a header only, errors translated."""

    def __init__(self, *, api_key: str, base_url: str | None, timeout_s: float, name: str,
                 client: httpx.AsyncClient | None, transport: httpx.AsyncBaseTransport | None) -> None:
        self.name = name
        self._api_key = api_key
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(base_url=(base_url or VOYAGE_BASE_URL).rstrip("/") + "/",
                                                   timeout=httpx.Timeout(timeout_s, connect=5.0), transport=transport)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(path, json=body, headers={"Authorization": f"Bearer {self._api_key}"})
        except httpx.TimeoutException as exc:
            raise transport_error(self.name, "timed out") from exc
        except httpx.TransportError as exc:
            raise transport_error(self.name, "connection failed") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            detail = data.get("detail") if isinstance(data, dict) else response.text[:300]
            raise status_error(self.name, response.status_code, None, str(detail) if detail else None,
                               secrets=[self._api_key], retry_after_s=retry_after(response.headers))
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise ProviderError(f"{self.name}: unexpected response (HTTP {response.status_code})", provider=self.name,
                                status=response.status_code, retryable=True)
        return data


class VoyageEmbeddings:
    def __init__(self, *, api_key: str, model: str = "voyage-3.5", dim: int = 1024, base_url: str | None = None,
                 timeout_s: float = 30.0, batch_size: int = 128, name: str = "voyage",
                 client: httpx.AsyncClient | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.model = model
        self.dim = dim
        self.batch_size = batch_size
        self._http = _VoyageHttp(api_key=api_key, base_url=base_url, timeout_s=timeout_s, name=name, client=client,
                                 transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def embed(self, texts: Sequence[str], *, kind: Kind) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            data = await self._http.post("embeddings", {
                "input": batch, "model": self.model, "input_type": kind, "truncation": True,
                "output_dimension": self.dim, "encoding_format": "base64",
            })
            out += _in_order(data["data"], len(batch), self.dim, self.name)
        return out


class VoyageReranker:
    def __init__(self, *, api_key: str, model: str = "rerank-2.5", base_url: str | None = None, timeout_s: float = 30.0,
                 name: str = "voyage-rerank", client: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.model = model
        self._http = _VoyageHttp(api_key=api_key, base_url=base_url, timeout_s=timeout_s, name=name, client=client,
                                 transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def rerank(self, query: str, documents: Sequence[str], *, top_k: int) -> list[tuple[int, float]]:
        if not documents or top_k < 1:
            return []
        data = await self._http.post("rerank", {"query": query, "documents": list(documents), "model": self.model,
                                                "top_k": min(top_k, len(documents)), "truncation": True})
        ranked: list[tuple[int, float]] = []
        for item in data["data"]:
            index, score = item.get("index"), item.get("relevance_score")
            if not isinstance(index, int) or not 0 <= index < len(documents) or not isinstance(score, int | float):
                raise ProviderError(f"{self.name}: malformed rerank result", provider=self.name, retryable=True)
            ranked.append((index, float(score)))
        ranked.sort(key=lambda pair: -pair[1])
        return ranked[:top_k]


class OpenAIEmbeddings:
    def __init__(self, *, api_key: str | None = None, model: str = "text-embedding-3-small", dim: int = 1536,
                 base_url: str | None = None, timeout_s: float = 30.0, batch_size: int = 256, send_dimensions: bool = True,
                 query_prefix: str = "", document_prefix: str = "", name: str = "openai-embeddings",
                 client: openai.AsyncOpenAI | None = None) -> None:
        """``send_dimensions``: ask for ``dim`` (text-embedding-3 can shorten vectors); off for servers
        that refuse the field. The prefixes serve models that expect them (e5: "query: ", "passage: ")."""
        import openai

        self._sdk = openai
        self.name = name
        self.model = model
        self.dim = dim
        self.batch_size = batch_size
        self._send_dimensions = send_dimensions
        self._prefix = {"query": query_prefix, "document": document_prefix}
        self._api_key = api_key
        self._client = client or openai.AsyncOpenAI(api_key=api_key or "not-needed", base_url=base_url, max_retries=0,
                                                    timeout=httpx2.Timeout(timeout_s, connect=5.0))

    async def aclose(self) -> None:
        await self._client.close()

    async def embed(self, texts: Sequence[str], *, kind: Kind) -> list[list[float]]:
        sdk = self._sdk
        prefix = self._prefix[kind]
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + t for t in texts[start:start + self.batch_size]]
            extra: dict[str, Any] = {"dimensions": self.dim} if self._send_dimensions else {}
            try:
                response = await self._client.embeddings.create(input=batch, model=self.model, **extra)
            except sdk.APITimeoutError as exc:
                raise transport_error(self.name, "timed out") from exc
            except sdk.APIConnectionError as exc:
                raise transport_error(self.name, "connection failed") from exc
            except sdk.APIStatusError as exc:
                body = exc.body
                detail = body.get("message") if isinstance(body, Mapping) else exc.message
                raise status_error(self.name, exc.status_code, exc.code or exc.type, str(detail), secrets=[self._api_key],
                                   retry_after_s=retry_after(exc.response.headers)) from exc
            except sdk.OpenAIError as exc:
                raise ProviderError(f"{self.name}: {redact(str(exc), [self._api_key])}", provider=self.name) from exc
            items = [{"index": d.index, "embedding": d.embedding} for d in response.data]
            out += _in_order(items, len(batch), self.dim, self.name)
        return out


def _in_order(items: Sequence[Mapping[str, Any]], expected: int, dim: int, provider: str) -> list[list[float]]:
    vectors: list[list[float] | None] = [None] * expected
    for item in items:
        index = item.get("index")
        if not isinstance(index, int) or not 0 <= index < expected:
            raise ProviderError(f"{provider}: embedding index out of range", provider=provider, retryable=True)
        vectors[index] = _decode(item.get("embedding"), provider)
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        raise ProviderError(f"{provider}: {len(missing)} of {expected} embeddings missing", provider=provider, retryable=True)
    done = [v for v in vectors if v is not None]
    wrong = next((len(v) for v in done if len(v) != dim), None)
    if wrong is not None:
        raise ProviderError(f"{provider}: expected {dim}-dimensional vectors, got {wrong} (check the model and dim settings)",
                            provider=provider)
    return done
