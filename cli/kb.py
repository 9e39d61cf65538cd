"""`parlo kb add|list|sync|remove`, `parlo ask` and `parlo bench retrieval|routing`: a tenant's
knowledge base and its assistant from a terminal.

They run in this process against the database, with the offline embedder (the model loads once,
embeddings are cached by content under PARLO_HOME), and draw a progress bar while embedding. A
running engine is told to rebuild the tenant's index afterwards (best effort, said when it fails).
Every file is read and extracted before anything is written: a bad file changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine import tenants
from engine.config import Settings
from engine.db.pool import create_pool
from engine.errors import InvalidInput, NotFound, ParloError, ServiceUnavailable
from engine.logging import log_context
from engine.services import database_url

out = Console()
err = Console(stderr=True)
log = logging.getLogger("parlo.cli")
T = TypeVar("T")
RELOAD_TIMEOUT_S = 20.0


def _run(ctx: click.Context, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    settings: Settings = ctx.obj

    async def run() -> T:
        pool = await create_pool(database_url(settings), min_size=1, max_size=2)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


async def _tenant_id(conn: asyncpg.Pool | asyncpg.Connection, slug: str) -> uuid.UUID:
    found = await tenants.get_by_slug(conn, slug)  # type: ignore[arg-type]
    if found is None:
        raise NotFound(f"no tenant {slug!r} (see `parlo tenant list`)")
    return found.id


def _read(path_text: str, *, faq: bool = False) -> tuple[str, bytes]:
    """(file name, bytes) of a file that extracts cleanly, or one readable refusal."""
    from engine.ai.knowledge.extract import MAX_FILE_BYTES, extract
    from engine.ai.knowledge.sync import check_upload

    path = Path(path_text).expanduser()
    if not path.exists():
        raise InvalidInput(f"{path_text}: no such file")
    if path.is_dir():
        raise InvalidInput(f"{path_text} is a folder; name the files in it")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInput(f"{path_text} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path_text}: {exc.strerror or type(exc).__name__}") from None
    check_upload("faq" if faq or path.suffix.lower() == ".csv" else "file", path.name)
    try:
        extract(path.name, data)
    except InvalidInput as exc:
        raise InvalidInput(f"{path_text}: {exc.message}") from None
    return path.name, data


class _Bar:
    """One rich progress bar per source, on a terminal; silent otherwise (logs and pipes)."""

    LABELS = {"fetching": "fetching", "extracting": "reading", "embedding": "embedding", "indexing": "storing"}

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def for_source(self, name: str) -> Callable[[str, int, int], None]:
        task = self.progress.add_task(name, total=None)

        def update(stage: str, done: int, total: int) -> None:
            self.progress.update(task, description=f"{name}: {self.LABELS.get(stage, stage)}", completed=done,
                                 total=max(total, 1))

        return update


def _summary(result: Any) -> str:
    s = result.stats
    parts = [f"{s.get('added', 0)} added", f"{s.get('updated', 0)} updated", f"{s.get('unchanged', 0)} unchanged",
             f"{s.get('removed', 0)} removed"]
    chunks = f"{s.get('chunks_embedded', 0)} chunk(s) embedded, {s.get('chunks_reused', 0)} reused"
    dropped = s.get("dropped_instruction_lines", 0)
    note = f"; {dropped} line(s) addressed to the assistant dropped" if dropped else ""
    return f"{result.name} ({result.kind}): {', '.join(parts)}; {chunks}{note}"


def _reload_engine(settings: Settings, tenant_id: uuid.UUID) -> None:
    """Ask the running engine's KnowledgeShard to rebuild the tenant's index (best effort)."""
    from cli import runtime

    if not runtime.ray_running(settings):
        return
    try:
        import ray

        from actors import NAMESPACE
        from actors.knowledge_shard import knowledge_shard_name
        from engine.sharding import shard_of

        runtime.connect_ray(settings)
        shard = ray.get_actor(knowledge_shard_name(shard_of(tenant_id, settings.knowledge_shards)), namespace=NAMESPACE)
        ray.get(shard.reload.remote(str(tenant_id)), timeout=RELOAD_TIMEOUT_S)
    except Exception as exc:  # the engine rebuilds from PostgreSQL on its next sync or restart
        log.warning("knowledge index not refreshed", extra={"tenant": str(tenant_id), "error": type(exc).__name__})
        err.print(f"note: the running engine did not refresh its index ({type(exc).__name__}); "
                  "it will after its next sync or restart")


async def _sync_all(settings: Settings, pool: asyncpg.Pool, tenant_id: uuid.UUID,
                    jobs: list[tuple[Any, tuple[str, bytes] | None]], *, created: bool) -> list[Any]:
    """Sync each (source, upload); on a failure remove the sources this command created (nothing
    half-written) and raise the failure's reason."""
    from engine.ai.knowledge import store
    from engine.ai.knowledge.sync import sync_source
    from engine.ai.providers.factory import knowledge_embedder
    from engine.ai.service import offline_embedder

    embedder: Any = knowledge_embedder(settings)  # Voyage or OpenAI when configured: no model to load
    if embedder is None:
        with err.status("loading the embedding model…") if err.is_terminal else _nothing():
            embedder = await asyncio.to_thread(offline_embedder, settings)
    results = []
    try:
        with _Bar() as bar:
            for source, upload in jobs:
                result = await sync_source(pool, embedder, tenant_id, source.id, upload=upload,
                                           progress=bar.for_source(source.name))
                if result.state != "ok":
                    raise InvalidInput(f"{source.name}: {result.error or 'the sync failed'}")
                results.append(result)
    except BaseException:
        if created:
            async with pool.acquire() as conn:
                for source, _ in jobs:
                    await store.remove_source(conn, tenant_id, source.id)
        raise
    finally:
        if hasattr(embedder, "aclose"):
            await embedder.aclose()
        else:
            embedder.cache.close()
    return results


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- kb ------------------------------------------------------------------------------------------

@click.group()
def kb() -> None:
    """A tenant's knowledge base: documents, FAQs and WordPress sites the assistant answers from."""


@kb.command("add")
@click.option("--tenant", required=True, help="Tenant slug.")
@click.argument("paths", nargs=-1)
@click.option("--wordpress", "site", metavar="URL", help="A WordPress site (its pages and posts).")
@click.option("--faq", "faqs", multiple=True, metavar="CSV", help="A FAQ file with question and answer columns.")
@click.option("--name", help="The source's name (one source only; default: the file's name or the site's address).")
@click.pass_context
def kb_add(ctx: click.Context, tenant: str, paths: tuple[str, ...], site: str | None, faqs: tuple[str, ...],
           name: str | None) -> None:
    """Add files (PDF, DOCX, Markdown, HTML, text; CSV as FAQ), FAQ files or a WordPress site."""
    from engine.ai.knowledge import store, wordpress

    settings: Settings = ctx.obj
    count = len(paths) + len(faqs) + (1 if site else 0)
    if count == 0:
        raise InvalidInput("name at least one file, --faq CSV or --wordpress URL")
    if name is not None and count > 1:
        raise InvalidInput("--name names one source; add the others one by one or without --name")
    files = [_read(p) for p in paths] + [_read(p, faq=True) for p in faqs]
    url = wordpress.site_root(site) if site else None

    async def work(pool: asyncpg.Pool) -> list[Any]:
        async with pool.acquire() as conn:
            tenant_id = await _tenant_id(conn, tenant)
            jobs: list[tuple[Any, tuple[str, bytes] | None]] = []
            async with conn.transaction():  # every source or none
                for filename, data in files:
                    kind = "faq" if filename.lower().endswith(".csv") else "file"
                    source = await store.add_source(conn, tenant_id, kind, name or Path(filename).stem)
                    jobs.append((source, (filename, data)))
                if url is not None:
                    source = await store.add_source(conn, tenant_id, "wordpress", name or url.split("://", 1)[1], url)
                    jobs.append((source, None))
        results = await _sync_all(settings, pool, tenant_id, jobs, created=True)
        _reload_engine(settings, tenant_id)
        return results

    for result in _run(ctx, work):
        with log_context(tenant=tenant):
            log.info("knowledge source added", extra={"source": str(result.source_id), "kind": result.kind})
        out.print(f"added {_summary(result)}", highlight=False)


@kb.command("list")
@click.option("--tenant", required=True, help="Tenant slug.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def kb_list(ctx: click.Context, tenant: str, as_json: bool) -> None:
    """List a tenant's knowledge sources with their sync state."""
    from engine.ai.knowledge import sources, store

    async def work(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return [sources.view(row) for row in await store.list_sources(pool, await _tenant_id(pool, tenant))]  # type: ignore[arg-type]

    rows = _run(ctx, work)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("name", "kind", "state", "documents", "chunks", "embedder", "last sync", "detail")
    for r in rows:
        colour = {"ok": "green", "failed": "red", "syncing": "yellow"}.get(r["state"], "white")
        table.add_row(r["name"], r["kind"], f"[{colour}]{r['state']}[/]", str(r["documents"]), str(r["chunks"]),
                      ", ".join(r["embedders"]) or "-",
                      (r["last_sync_at"] or "never")[:19].replace("T", " "), r["last_error"] or r["url"] or "")
    out.print(table)


@kb.command("sync")
@click.option("--tenant", required=True, help="Tenant slug.")
@click.argument("source")
@click.argument("path", required=False)
@click.pass_context
def kb_sync(ctx: click.Context, tenant: str, source: str, path: str | None) -> None:
    """Sync SOURCE (a name or id) again: a WordPress site is fetched; a file or FAQ source takes
    its new file as PATH, or none to be embedded again after PARLO_AI_EMBEDDER changed. A failure
    keeps the last good content."""
    from engine.ai.knowledge import store
    from engine.ai.providers.factory import embedder_name
    from engine.db.queries import sql

    settings: Settings = ctx.obj

    async def work(pool: asyncpg.Pool) -> Any:
        tenant_id = await _tenant_id(pool, tenant)
        async with pool.acquire() as conn:
            found = await store.get_source(conn, tenant_id, source)
        upload = None
        if found.kind != "wordpress":
            if path is None:
                # without its file, a file source can only be embedded again (after the embedder changed)
                async with pool.acquire() as conn:
                    stale = await conn.fetchval(sql("knowledge_sync", "has_stale_documents"), found.id,
                                                embedder_name(settings))
                if not stale:
                    raise InvalidInput(f"{found.name} is a {found.kind} source: give its file again "
                                       f"(parlo kb sync --tenant {tenant} {found.name} PATH)")
            else:
                upload = _read(path, faq=found.kind == "faq")
        elif path is not None:
            raise InvalidInput(f"{found.name} is a WordPress site: it is fetched, not given a file")
        result = (await _sync_all(settings, pool, tenant_id, [(found, upload)], created=False))[0]
        _reload_engine(settings, tenant_id)
        return result

    out.print(f"synced {_summary(_run(ctx, work))}", highlight=False)


@kb.command("remove")
@click.option("--tenant", required=True, help="Tenant slug.")
@click.argument("source")
@click.pass_context
def kb_remove(ctx: click.Context, tenant: str, source: str) -> None:
    """Remove SOURCE (a name or id) and everything extracted from it."""
    from engine.ai.knowledge import store

    settings: Settings = ctx.obj

    async def work(pool: asyncpg.Pool) -> str:
        tenant_id = await _tenant_id(pool, tenant)
        async with pool.acquire() as conn:
            found = await store.get_source(conn, tenant_id, source)
            await store.remove_source(conn, tenant_id, found.id)
        _reload_engine(settings, tenant_id)
        return found.name

    out.print(f"removed {_run(ctx, work)}", highlight=False)


# --- ask -----------------------------------------------------------------------------------------

@click.command("ask")
@click.option("--tenant", required=True, help="Tenant slug.")
@click.option("--json", "as_json", is_flag=True, help="One event per line, ending with the final event.")
@click.option("--language", type=click.Choice(["it", "en"]), help="Answer language (default: the question's).")
@click.argument("question")
@click.pass_context
def ask(ctx: click.Context, tenant: str, as_json: bool, language: str | None, question: str) -> None:
    """Ask the assistant QUESTION over the tenant's knowledge base (the pipeline runs here)."""
    from engine.ai.knowledge.indexes import TenantIndexes
    from engine.ai.pipeline import AskRequest
    from engine.ai.providers.factory import embedder_name
    from engine.ai.service import RouterBook, build_assistant, offline_embedder

    try:
        from engine.ai.drafts import tenant_context
    except ImportError:  # where it lived before engine/ai/drafts.py took it
        from engine.ai.service import tenant_context  # type: ignore[attr-defined, no-redef]

    settings: Settings = ctx.obj
    if not question.strip():
        raise InvalidInput("the question is empty")

    async def work(pool: asyncpg.Pool) -> dict[str, Any]:
        tenant_id = await _tenant_id(pool, tenant)
        with err.status("loading the assistant…") if err.is_terminal and not as_json else _nothing():
            embedder = await asyncio.to_thread(offline_embedder, settings)
            indexes = TenantIndexes(embedder, embedder_name=embedder_name(settings))

            async def retrieve(tid: uuid.UUID, query: str, vector: Any, k: int) -> list[Any]:
                return await indexes.search(pool, tid, query, k=k, query_vector=vector)

            book = await RouterBook.build(embedder)
            assistant = await build_assistant(settings, pool, retrieve, embedder=embedder, router=book.shared)
            assistant.routers = lambda tid: book.for_tenant(pool, tid)
            context = await tenant_context(pool, tenant_id)
        request = AskRequest(tenant_id, question.strip(), purpose="ask", language=language, **context)
        last: dict[str, Any] = {}
        async for event in assistant.run(request):
            last = event
            if as_json:
                click.echo(json.dumps(event, ensure_ascii=False, default=str))
            elif event["type"] == "delta":
                click.echo(event["text"], nl=False)
            elif event["type"] == "progress" and err.is_terminal:
                err.print(f"[dim]{event['stage']}…[/]")
        embedder.cache.close()
        if assistant.query_embedder is not None:
            await assistant.query_embedder.aclose()
        return last

    final = _run(ctx, work)
    if final.get("type") == "error":
        if not as_json:
            click.echo()
        raise ServiceUnavailable(f"the assistant failed: {final.get('message', 'unknown error')}")
    if as_json:
        return
    click.echo()
    if final.get("citations"):
        out.print("Sources:", highlight=False)
        for n, c in enumerate(final["citations"], 1):
            where = f" — {c['url']}" if c.get("url") else ""
            out.print(f"  [{n}] {c['source']}: {c['title']}{where}", highlight=False, markup=False)
    elif final.get("declined"):
        err.print("(no answer in the knowledge base)")


# --- bench ---------------------------------------------------------------------------------------

def _bench_main(module: str) -> Callable[[list[str]], int]:
    repo = Path(__file__).resolve().parents[1]
    if str(repo) not in sys.path:  # bench/ is not an installed package
        sys.path.insert(0, str(repo))
    try:
        return __import__(f"bench.{module}", fromlist=["main"]).main  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ParloError(f"bench/{module}.py cannot be loaded ({exc}); run from a checkout of Parlo") from None


@click.group()
def bench() -> None:
    """Benchmarks of the assistant (their reports go to bench/results/)."""


@bench.command("retrieval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                  "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_retrieval(args: tuple[str, ...]) -> None:
    """nDCG@10, recall@10 and query latency of BM25, dense and hybrid retrieval (bench/retrieval.py)."""
    sys.exit(_bench_main("retrieval")(list(args)))


@bench.command("routing", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                  "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_routing(args: tuple[str, ...]) -> None:
    """How much the local router answers alone, its precision, and the modelled cost (bench/routing.py)."""
    sys.exit(_bench_main("routing")(list(args)))


def register(group: click.Group) -> None:
    for command in (kb, ask, bench):
        group.add_command(command)
