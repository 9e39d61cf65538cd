"""One sync of one knowledge source: claim it → fetch (WordPress) or take the upload → extract →
embed and store incrementally (store.sync_documents) → ``ok`` with its stats, or ``failed`` with a
readable reason while the last good content stays searchable.

The same function serves the Assistant deployment (uploads and re-syncs from the inbox, the
WordPress schedule) and ``parlo kb``. A source is synced by one process at a time: a session
advisory lock in PostgreSQL, so a crashed sync never leaves the source locked.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import asyncpg
import httpx
import numpy as np

from engine.ai.knowledge import store, wordpress
from engine.ai.knowledge.chunking import chunk_document
from engine.ai.knowledge.embeddings import CachedEmbedder, Embedder, ProviderEmbedder
from engine.ai.knowledge.extract import SUFFIXES, Extracted, extract
from engine.db.queries import sql
from engine.ai.providers.base import ProviderError
from engine.errors import Conflict, InvalidInput, ParloError

log = logging.getLogger("parlo.knowledge")

Progress = Callable[[str, int, int], None]  # (stage, done, total); stages in STAGES order
STAGES = ("fetching", "extracting", "embedding", "indexing")
FILE_SUFFIXES = tuple(s for s in SUFFIXES if s != ".csv")
CHUNK_BUDGET = 320  # tokens per chunk, as store.sync_documents cuts them
LOCK_WAIT_S = 600.0


@dataclass(slots=True)
class SyncResult:
    source_id: uuid.UUID
    name: str
    kind: str
    state: str                      # ok | failed
    stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source_id": str(self.source_id), "name": self.name, "kind": self.kind,
                               "state": self.state, "stats": self.stats}
        if self.error is not None:
            out["error"] = self.error
        return out


def check_upload(kind: str, filename: str) -> None:
    """Refuse a file that the source's kind cannot take (a FAQ source takes CSV, a file source
    the document types), naming what is accepted."""
    suffix = PurePath(filename).suffix.lower()
    if kind == "faq":
        if suffix != ".csv":
            raise InvalidInput(f"a FAQ source takes a .csv file with question and answer columns, not {suffix or filename!r}")
    elif kind == "file":
        if suffix == ".csv":
            raise InvalidInput(f"a .csv file is a FAQ: add it as a source of its own; this source takes "
                               f"{', '.join(FILE_SUFFIXES)}")
        if suffix not in FILE_SUFFIXES:
            accepted = ", ".join(FILE_SUFFIXES + (".csv (FAQ)",))
            raise InvalidInput(f"{suffix or 'a file without an extension'} cannot be added; accepted: {accepted}")
    else:
        raise Conflict(f"a {kind} source is not synced from a file")


def kind_of(filename: str) -> str:
    """The source kind an uploaded file makes (CSV files are FAQs); InvalidInput for the rest."""
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".csv":
        return "faq"
    check_upload("file", filename)
    return "file"


class ProgressThrottle:
    """Passes on at most one event per ``interval_s``, but always the first event of a stage and
    its end (done == total), so that a listener sees every stage begin and finish."""

    def __init__(self, emit: Progress, interval_s: float = 0.2) -> None:
        self.emit = emit
        self.interval_s = interval_s
        self._last_at = 0.0
        self._last: dict[str, tuple[int, int]] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        previous = self._last.get(stage)
        if previous == (done, total):
            return
        if previous is None or done >= total or now - self._last_at >= self.interval_s:
            self._last_at = now
            self._last[stage] = (done, total)
            self.emit(stage, done, total)


class _ReportingEmbedder:
    """The embedder as store.sync_documents sees it, reporting chunks embedded: ``report(done, of)``
    per call (the offline model runs in a worker thread: its reports go back to the loop's thread;
    a network embedder reports on the loop)."""

    def __init__(self, inner: Embedder | ProviderEmbedder, report: Callable[[int, int], None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.remote = isinstance(inner, ProviderEmbedder)
        self._report = report
        self._loop = loop

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        def step(done: int, total: int) -> None:
            self._loop.call_soon_threadsafe(self._report, done, total)

        if isinstance(self.inner, CachedEmbedder):
            return self.inner.passages(texts, progress=step)
        assert not isinstance(self.inner, ProviderEmbedder)
        return self.inner.passages(texts)

    async def apassages(self, texts: Sequence[str]) -> np.ndarray:
        assert isinstance(self.inner, ProviderEmbedder)
        return await self.inner.apassages(texts, progress=self._report)


async def _lock(conn: asyncpg.Connection, source: store.Source, wait: bool) -> None:
    deadline = time.monotonic() + LOCK_WAIT_S
    while not await conn.fetchval(sql("knowledge_sync", "try_lock_source"), source.id):
        if not wait or time.monotonic() > deadline:
            raise Conflict(f"{source.name} is being synced already; try again when it is done")
        await asyncio.sleep(0.5)


async def sync_source(pool: asyncpg.Pool, embedder: Embedder | ProviderEmbedder, tenant_id: uuid.UUID, source_id: uuid.UUID | str, *,
                      upload: tuple[str, bytes] | None = None, progress: Progress | None = None, wait: bool = True,
                      http: httpx.AsyncClient | None = None, wordpress_timeout_s: float = 20.0) -> SyncResult:
    """Sync one source of ``tenant_id``: a WordPress source from its site, a file or FAQ source
    from ``upload`` (name, bytes). Documents stored by another embedder than ``embedder`` are
    embedded again from their stored text (a file source needs no upload for that). Returns the
    outcome; a failure is recorded on the source and returned, not raised. Raises NotFound (no
    such source of this tenant) and Conflict (another sync holds the source and ``wait`` is
    False, or a file source without an upload and with nothing to re-embed)."""
    emit: Progress = progress or (lambda stage, done, total: None)
    async with pool.acquire() as conn:
        source = await store.get_source(conn, tenant_id, str(source_id))
        if source.kind != "wordpress" and upload is None and not await conn.fetchval(
                sql("knowledge_sync", "has_stale_documents"), source.id, embedder.name):
            raise Conflict(f"{source.name} is a {source.kind} source: upload the file again to sync it")
        await _lock(conn, source, wait)
        try:
            await store.set_state(conn, source.id, "syncing")
            try:
                stats = await _sync(conn, source, embedder, upload, emit, http, wordpress_timeout_s)
            except ProviderError as exc:
                reason = f"{exc.message}; the last good content is kept"
                await store.set_state(conn, source.id, "failed", error=reason[:1000])
                log.warning("knowledge source sync failed: the embedder failed",
                            extra={"tenant": str(tenant_id), "source": str(source.id), "embedder": embedder.name,
                                   "error": exc.message[:300]})
                return SyncResult(source.id, source.name, source.kind, "failed", source.stats, reason)
            except ParloError as exc:
                await store.set_state(conn, source.id, "failed", error=exc.message[:1000])
                log.info("knowledge source sync failed", extra={"tenant": str(tenant_id), "source": str(source.id),
                                                                "error": exc.message[:300]})
                return SyncResult(source.id, source.name, source.kind, "failed", source.stats, exc.message)
            except asyncio.CancelledError:
                await asyncio.shield(store.set_state(conn, source.id, "failed", error="the sync was interrupted"))
                raise
            except Exception as exc:
                log.exception("knowledge source sync crashed", extra={"tenant": str(tenant_id), "source": str(source.id)})
                reason = f"the sync stopped on an internal error ({type(exc).__name__}); the last good content is kept"
                await store.set_state(conn, source.id, "failed", error=reason)
                return SyncResult(source.id, source.name, source.kind, "failed", source.stats, reason)
            await store.set_state(conn, source.id, "ok", stats=stats)
            log.info("knowledge source synced", extra={"tenant": str(tenant_id), "source": str(source.id),
                                                       "added": stats["added"], "updated": stats["updated"],
                                                       "removed": stats["removed"]})
            return SyncResult(source.id, source.name, source.kind, "ok", stats)
        finally:
            await conn.fetchval(sql("knowledge_sync", "unlock_source"), source.id)


async def _sync(conn: asyncpg.Connection, source: store.Source, embedder: Embedder | ProviderEmbedder,
                upload: tuple[str, bytes] | None, emit: Progress, http: httpx.AsyncClient | None,
                timeout_s: float) -> dict[str, Any]:
    existing = {r["external_id"]: r for r in await conn.fetch(sql("knowledge", "source_documents"), source.id,
                                                              embedder.name)}
    extra: dict[str, Any] = {}
    if source.kind == "wordpress":
        emit("fetching", 0, 1)
        snapshot = await wordpress.fetch_site(source.url or "", cursor=source.stats.get("wordpress_cursor"),
                                              known=set(existing), client=http, progress=emit, timeout_s=timeout_s)
        documents: list[Extracted] = snapshot.documents
        gone = [r["id"] for key, r in existing.items() if key not in snapshot.present or key in snapshot.empty]
        complete = False
        extra = {"wordpress_cursor": snapshot.cursor, "fetched": snapshot.fetched}
        # pages that did not change since the last sync but were embedded by another embedder:
        # embedded again from their stored text (the site is not asked for them again)
        fetched = {d.external_id for d in documents}
        documents += await _stored(conn, [r["id"] for key, r in existing.items() if not r["current"]
                                          and key not in fetched and key in snapshot.present
                                          and key not in snapshot.empty])
    elif upload is None:  # nothing new: the stored documents of another embedder, embedded again
        emit("fetching", 1, 1)
        documents = await _stored(conn, [r["id"] for r in existing.values() if not r["current"]])
        gone, complete = [], False
    else:
        assert upload is not None
        name, data = upload
        check_upload(source.kind, name)
        emit("fetching", 1, 1)
        emit("extracting", 0, 1)
        documents = await asyncio.to_thread(extract, name, data)
        emit("extracting", 1, 1)
        gone, complete = [], True
    stats = await _store(conn, source, documents, embedder, existing, complete, emit)
    if gone:
        # only after every changed document was stored: a failure above keeps the old content
        await conn.execute(sql("knowledge", "delete_documents"), gone)
        stats.removed += len(gone)
    if source.kind == "wordpress":
        stats.unchanged += len(snapshot.present) - len(snapshot.empty) - len(documents)
    return stats.as_dict() | extra | {"embedder": embedder.name}


async def _stored(conn: asyncpg.Connection, ids: list[Any]) -> list[Extracted]:
    if not ids:
        return []
    return [Extracted(r["external_id"], r["title"], r["text"], r["url"])
            for r in await conn.fetch(sql("knowledge", "stored_documents"), ids)]


async def _store(conn: asyncpg.Connection, source: store.Source, documents: list[Extracted],
                 embedder: Embedder | ProviderEmbedder, existing: dict[str, asyncpg.Record], complete: bool,
                 emit: Progress) -> store.SyncStats:
    count = getattr(embedder, "token_count", None)
    remote = isinstance(embedder, ProviderEmbedder)
    # chunks per changed document, to draw one embedding bar over the whole sync
    changed = [d for d in documents if (old := existing.get(d.external_id)) is None
               or old["content_hash"] != d.content_hash or not old["current"]]
    sizes = {d.external_id: len(chunk_document(d.text, budget=CHUNK_BUDGET, **({"count": count} if count else {})))
             for d in changed}
    total = sum(sizes.values())
    base = 0

    def embedded(done: int, of: int) -> None:
        if remote:  # one call for the whole sync: what it need not ask for (stored already) is done
            emit("embedding", max(0, min(total - of + done, total)), total)
        else:  # one call per document
            emit("embedding", min(base + done, total), total)

    def indexed(_: str, n: int, of: int) -> None:
        nonlocal base
        document = documents[n - 1]
        if document.external_id in sizes and not remote:
            base += sizes[document.external_id]
            emit("embedding", base, total)
        emit("indexing", n, of)

    emit("embedding", 0, total)
    reporting = _ReportingEmbedder(embedder, embedded, asyncio.get_running_loop())
    stats = await store.sync_documents(conn, source, documents, reporting, complete=complete, progress=indexed,
                                       budget=CHUNK_BUDGET, count=count)
    emit("embedding", total, total)
    emit("indexing", len(documents), len(documents))
    return stats
