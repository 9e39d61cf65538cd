"""``parlo``: run and operate the engine from a terminal.

Errors are one readable line on stderr and a non-zero exit; tracebacks go to the log file only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine import tenants
from engine.ai import web_search
from engine.config import Settings, load_settings
from engine.db import migrations
from engine.db.pool import connect
from engine.errors import NotFound, ParloError
from engine.logging import configure_logging, log_context
from engine.secrets import mask_text
from engine.services import database_url

console = Console(stderr=True)
out = Console()
log = logging.getLogger("parlo.cli")


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


class ParloGroup(click.Group):
    """Turns every error into one line and an exit code; a traceback is only written to the log."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ParloError as exc:
            click.echo(f"parlo: error: {mask_text(str(exc))}", err=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("parlo: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            log.exception("unexpected error")
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(f"parlo: unexpected error: {type(exc).__name__}: {mask_text(first_line)} "
                       "(details in the log: parlo logs engine)", err=True)
            sys.exit(2)


@click.group(cls=ParloGroup)
@click.version_option(package_name="parlo")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Parlo: WhatsApp conversations for human agents and an AI assistant."""
    try:
        settings = load_settings()
    except ParloError as exc:
        click.echo(f"parlo: error: {exc}", err=True)
        sys.exit(1)
    configure_logging(settings.log_level, json=True, file=settings.home / "logs" / "parlo.jsonl",
                      stream=_NullStream())
    ctx.obj = settings


class _NullStream:
    """The CLI talks to people on stderr; its JSON log lines go only to the log file."""

    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        return None


# --- up / down / status ------------------------------------------------------------------------

@main.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """Start everything (embedded PostgreSQL, Redis, Ray, the Serve app); reuse what already runs."""
    from cli import runtime

    settings = _settings(ctx)
    with console.status("starting…") as status:
        report = runtime.up(settings, step=lambda name: status.update(f"starting {name}…"),
                            on_migration=lambda m, i, n: console.print(f"  applied {m.filename} ({i}/{n})"))
    if report.noop:
        console.print(f"[green]Parlo is already running[/] (nothing to start, {report.seconds:.1f} s)")
    else:
        started = ", ".join(report.started) or "nothing new"
        console.print(f"[green]Parlo is up[/] in {report.seconds:.1f} s (started: {started})")
    click.echo(f"Inbox: {settings.public_url}")
    login = report.demo_login
    if report.demo_created:
        click.echo(f"Login: {login['email']}  password: {login['password']}  (tenant {login['tenant']})")
        click.echo(f"       (printed once; also kept in {settings.home / 'demo-login.json'})")
    else:
        click.echo(f"Login: {login['email']}  (tenant {login['tenant']}; password in {settings.home / 'demo-login.json'})")


@main.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop everything `parlo up` started; data stays under PARLO_HOME."""
    from cli import runtime

    settings = _settings(ctx)
    with console.status("stopping…") as status:
        stopped = runtime.down(settings, step=lambda name: status.update(f"stopping {name}…"))
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--show-secrets", is_flag=True, help="Show passwords inside service URLs.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, show_secrets: bool) -> None:
    """Report every component; exit 1 if any is down."""
    from cli import runtime

    report = runtime.status(_settings(ctx), show_secrets=show_secrets)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        table = Table("component", "status", "detail")
        for name, comp in report["components"].items():
            detail = comp.get("error") or comp.get("url") or comp.get("address") or ""
            if "latency_ms" in comp:
                detail = f"{detail} ({comp['latency_ms']} ms)"
            colour = "green" if comp.get("status") == "ok" else "red"
            table.add_row(name, f"[{colour}]{comp.get('status')}[/]", str(detail))
        out.print(table)
    if report["status"] != "ok":
        sys.exit(1)


# --- tenants -------------------------------------------------------------------------------------

@main.group()
def tenant() -> None:
    """Manage tenants (the businesses on this deployment)."""


@tenant.command("create")
@click.argument("name")
@click.option("--slug", help="URL-safe id (default: derived from NAME).")
@click.pass_context
def tenant_create(ctx: click.Context, name: str, slug: str | None) -> None:
    """Create a tenant called NAME."""

    async def run() -> tenants.Tenant:
        conn = await connect(database_url(_settings(ctx)))
        try:
            return await tenants.create(conn, name, slug)
        finally:
            await conn.close()

    created = asyncio.run(run())
    with log_context(tenant=created.slug):
        log.info("tenant created", extra={"tenant_id": str(created.id)})
    out.print(f"created tenant {created.slug} ({created.id})")


@tenant.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tenant_list(ctx: click.Context, as_json: bool) -> None:
    """List tenants."""

    async def run() -> list[dict[str, Any]]:
        conn = await connect(database_url(_settings(ctx)))
        try:
            return await tenants.list_all(conn)
        finally:
            await conn.close()

    rows = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("slug", "name", "status", "users", "channels", "open conversations", "created")
    for r in rows:
        table.add_row(r["slug"], r["name"], r["status"], str(r["users"]), str(r["channels"]),
                      str(r["open_conversations"]), r["created_at"].strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@tenant.command("ai")
@click.argument("slug")
@click.option("--auto-reply/--no-auto-reply", default=None, help="Let the assistant answer customers by itself.")
@click.option("--budget", type=click.FloatRange(min=0), help="Monthly AI budget in USD (auto-replies stop when spent).")
@click.option("--no-budget", is_flag=True, help="Remove the monthly budget.")
@click.option("--business-facts", help="A few lines about the business the assistant always knows.")
@click.option("--web-search-domain", "web_search_domains", multiple=True, metavar="HOSTNAME",
              help="A site the assistant may search when the knowledge base has no answer (a hostname such as "
                   "ottica.it, subdomains included; repeat for more; replaces the list). Needs a provider that "
                   "searches (Anthropic).")
@click.option("--no-web-search", is_flag=True, help="Turn web search off (forget the sites).")
@click.pass_context
def tenant_ai(ctx: click.Context, slug: str, auto_reply: bool | None, budget: float | None, no_budget: bool,
              business_facts: str | None, web_search_domains: tuple[str, ...], no_web_search: bool) -> None:
    """Show or change a tenant's assistant settings."""
    if budget is not None and no_budget:
        raise click.UsageError("--budget and --no-budget contradict each other")
    if web_search_domains and no_web_search:
        raise click.UsageError("--web-search-domain and --no-web-search contradict each other")
    changes: dict[str, Any] = {}
    removed: list[str] = []
    if auto_reply is not None:
        changes["ai_auto_reply"] = auto_reply
    if budget is not None:
        changes["ai_monthly_budget_usd"] = budget
    if no_budget:
        removed.append("ai_monthly_budget_usd")
    if business_facts is not None:
        if len(business_facts) > 4000:
            raise click.UsageError("--business-facts holds at most 4000 characters")
        changes["business_facts"] = business_facts
    if web_search_domains:
        try:
            changes[web_search.SETTING] = list(web_search.check_domains(list(web_search_domains)))
        except ParloError as exc:
            raise click.UsageError(f"--web-search-domain: {exc}") from None
    if no_web_search:
        removed.append(web_search.SETTING)

    async def run() -> dict[str, Any]:
        conn = await connect(database_url(_settings(ctx)))
        try:
            found = await tenants.get_by_slug(conn, slug)
            if found is None:
                raise NotFound(f"no tenant {slug!r} (see `parlo tenant list`)")
            async with conn.transaction():
                if changes or removed:
                    await conn.execute("UPDATE tenants SET settings = (settings || $2::jsonb) - $3::text[] WHERE id = $1",
                                       found.id, changes, removed)
                    await conn.execute("INSERT INTO audit_log (tenant_id, actor, action, subject, details) "
                                       "VALUES ($1, 'cli', 'tenant.ai', $2, $3)", found.id, slug,
                                       {**changes, **({"budget": None} if no_budget else {}),
                                        **({web_search.SETTING: None} if no_web_search else {})})
                settings = await conn.fetchval("SELECT settings FROM tenants WHERE id = $1", found.id)
            shown = {k: settings.get(k) for k in ("ai_auto_reply", "ai_monthly_budget_usd", "business_facts")}
            return {**shown, "web": web_search.tenant_domains(settings, found.id)}
        finally:
            await conn.close()

    shown = asyncio.run(run())
    budget_shown = shown["ai_monthly_budget_usd"]
    sites = ", ".join(shown["web"])
    click.echo(f"{slug}: auto-replies {'on' if shown['ai_auto_reply'] else 'off'}, monthly budget "
               f"{'none' if budget_shown is None else f'{budget_shown} USD'}, "
               f"web search {f'on ({sites})' if sites else 'off'}")


# --- database ------------------------------------------------------------------------------------

@main.group()
def db() -> None:
    """Database schema."""


@db.command("migrate")
@click.option("--schema-dir", type=click.Path(path_type=Path), default=None, hidden=True)
@click.pass_context
def db_migrate(ctx: click.Context, schema_dir: Path | None) -> None:
    """Apply pending migrations from schema/ in order."""
    from cli import runtime

    directory = schema_dir or migrations.SCHEMA_DIR
    pending_total = len(migrations.discover(directory))
    if not console.is_terminal:
        applied = asyncio.run(runtime.migrate(
            _settings(ctx), lambda m, i, n: console.print(f"applied {m.filename} ({i}/{n})"), directory))
    else:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("migrating", total=None)

            def on_progress(m: migrations.Migration, index: int, total: int) -> None:
                progress.update(task, total=total, completed=index, description=f"applied {m.filename}")

            applied = asyncio.run(runtime.migrate(_settings(ctx), on_progress, directory))
    if applied:
        console.print(f"applied {len(applied)} migration(s): {', '.join(m.filename for m in applied)}")
    else:
        console.print(f"schema is up to date ({pending_total} migration(s) applied)")


@db.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.option("--schema-dir", type=click.Path(path_type=Path), default=None, hidden=True)
@click.pass_context
def db_status(ctx: click.Context, as_json: bool, schema_dir: Path | None) -> None:
    """Show which migrations are applied."""

    async def run() -> list[migrations.MigrationState]:
        conn = await connect(database_url(_settings(ctx)))
        try:
            return await migrations.status(conn, schema_dir or migrations.SCHEMA_DIR)
        finally:
            await conn.close()

    states = asyncio.run(run())
    if as_json:
        click.echo(json.dumps([{"version": s.version, "name": s.name, "applied": s.applied,
                                "applied_at": s.applied_at, "checksum": s.checksum} for s in states], default=str, indent=2))
        return
    table = Table("version", "name", "applied at")
    for s in states:
        table.add_row(f"{s.version:04d}", s.name, s.applied_at.strftime("%Y-%m-%d %H:%M:%S") if s.applied_at else "[yellow]pending[/]")
    out.print(table)


# --- logs ----------------------------------------------------------------------------------------

LOG_SOURCES = ("engine", "postgres", "redis", "ray")


@main.command()
@click.argument("source", type=click.Choice(LOG_SOURCES), default="engine")
@click.option("-n", "--lines", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.pass_context
def logs(ctx: click.Context, source: str, lines: int, follow: bool) -> None:
    """Print the last lines of a component's log."""
    from cli import runtime

    settings = _settings(ctx)
    files = {
        "engine": settings.home / "logs" / "parlo.jsonl",
        "postgres": settings.home / "logs" / "postgres.log",
        "redis": settings.home / "logs" / "redis.log",
        "ray": settings.home / "logs" / "ray-start.log",
    }
    path = files[source]
    if source == "ray":
        serve_logs = sorted((runtime.ray_temp_dir(settings) / "session_latest" / "logs" / "serve").glob("*.log"),
                            key=lambda p: p.stat().st_mtime)
        if serve_logs:
            path = serve_logs[-1]
    if not path.exists():
        raise click.ClickException(f"no {source} log yet at {path}")
    with path.open(errors="replace") as fh:
        tail = fh.readlines()[-lines:]
        for line in tail:
            click.echo(line.rstrip("\n"))
        while follow:
            line = fh.readline()
            if line:
                click.echo(line.rstrip("\n"))
            else:
                time.sleep(0.3)


from cli import whatsapp  # noqa: E402  (registers its commands on `main`)

whatsapp.register(main)

from cli import kb  # noqa: E402  (registers `kb`, `ask` and `bench` on `main`)

kb.register(main)

if __name__ == "__main__":
    main()
