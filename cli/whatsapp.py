"""`parlo channel|send|outbox|templates`: WhatsApp numbers, sends and the outbox, from a terminal."""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from rich.console import Console
from rich.table import Table

from engine import tenants
from engine.config import Settings
from engine.crypto import secret_box
from engine.db.pool import connect
from engine.errors import InvalidInput, NotFound, ServiceUnavailable
from engine.logging import log_context
from engine.services import database_url
from engine.whatsapp import channels, outbound, templates
from engine.whatsapp.graph import GraphClient

out = Console()
err = Console(stderr=True)
log = logging.getLogger("parlo.cli")
T = TypeVar("T")


def _with_db(ctx: click.Context, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    settings: Settings = ctx.obj

    async def run() -> T:
        conn = await connect(database_url(settings))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


async def _tenant_id(conn: asyncpg.Connection, slug: str) -> uuid.UUID:
    found = await tenants.get_by_slug(conn, slug)
    if found is None:
        raise NotFound(f"no tenant {slug!r} (see `parlo tenant list`)")
    return found.id


# --- channels ------------------------------------------------------------------------------------

@click.group()
def channel() -> None:
    """WhatsApp numbers of a tenant."""


@channel.command("add")
@click.option("--tenant", required=True, help="Tenant slug.")
@click.option("--phone-number-id", required=True, help="Meta's phone number id (digits).")
@click.option("--waba-id", required=True, help="WhatsApp Business Account id (digits).")
@click.option("--app-secret", required=True, help="The Meta app's secret (signs webhooks).")
@click.option("--verify-token", required=True, help="The token Meta sends in the webhook handshake.")
@click.option("--access-token", required=True, help="System-user access token for the Graph API.")
@click.option("--display-phone", help="The number as people see it, e.g. +39 02 1234 5678.")
@click.pass_context
def channel_add(ctx: click.Context, tenant: str, phone_number_id: str, waba_id: str, app_secret: str,
                verify_token: str, access_token: str, display_phone: str | None) -> None:
    """Register a WhatsApp number for a tenant (its secrets are stored encrypted)."""
    box = secret_box(ctx.obj)

    async def work(conn: asyncpg.Connection) -> channels.Channel:
        return await channels.add(conn, box, await _tenant_id(conn, tenant), phone_number_id=phone_number_id,
                                  waba_id=waba_id, app_secret=app_secret, verify_token=verify_token,
                                  access_token=access_token, display_phone=display_phone)

    added = _with_db(ctx, work)
    with log_context(tenant=tenant):
        log.info("channel added", extra={"phone_number_id": added.phone_number_id})
    out.print(f"added channel {added.phone_number_id} to tenant {tenant}")


@channel.command("list")
@click.option("--tenant", help="Only this tenant's channels.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def channel_list(ctx: click.Context, tenant: str | None, as_json: bool) -> None:
    """List channels (secrets are never shown)."""

    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return await channels.list_all(conn, await _tenant_id(conn, tenant) if tenant else None)

    rows = _with_db(ctx, work)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("tenant", "phone number id", "display phone", "WABA id", "active", "conversations")
    for r in rows:
        table.add_row(r["tenant"], r["phone_number_id"], r["display_phone"] or "", r["waba_id"],
                      "yes" if r["active"] else "no", str(r["conversations"]))
    out.print(table)


@channel.command("remove")
@click.argument("phone_number_id")
@click.option("--tenant", help="Refuse unless the channel belongs to this tenant.")
@click.pass_context
def channel_remove(ctx: click.Context, phone_number_id: str, tenant: str | None) -> None:
    """Deactivate a channel; its conversations stay."""

    async def work(conn: asyncpg.Connection) -> None:
        await channels.remove(conn, phone_number_id, await _tenant_id(conn, tenant) if tenant else None)

    _with_db(ctx, work)
    out.print(f"removed channel {phone_number_id}")


# --- send ------------------------------------------------------------------------------------------

@click.command()
@click.option("--tenant", required=True, help="Tenant slug.")
@click.option("--to", "to", required=True, help="The customer's number, international format (e.g. 393331234567).")
@click.option("--text", help="A free-form text (only inside the 24-hour window).")
@click.option("--media", "media_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file to upload and send (image, video, audio or document; inside the window).")
@click.option("--caption", help="Caption of an image, video or document.")
@click.option("--template", help="A template name (allowed at any time).")
@click.option("--language", default="it", show_default=True, help="The template's language code.")
@click.option("--phone-number-id", help="Send from this number (default: the tenant's first).")
@click.option("--wait/--no-wait", default=False, help="Wait until Meta accepted or refused it.")
@click.option("--timeout", type=click.FloatRange(1, 600), default=30, show_default=True)
@click.pass_context
def send(ctx: click.Context, tenant: str, to: str, text: str | None, media_path: Path | None, caption: str | None,
         template: str | None, language: str, phone_number_id: str | None, wait: bool, timeout: float) -> None:
    """Queue a message to a customer (the outbox sends it)."""
    if sum(x is not None for x in (text, template, media_path)) != 1:
        raise click.UsageError("give exactly one of --text, --media or --template")
    settings: Settings = ctx.obj

    async def work(conn: asyncpg.Connection) -> outbound.Queued:
        tenant_id = await _tenant_id(conn, tenant)
        conversation_id = await outbound.conversation_with(conn, tenant_id, to, phone_number_id)
        if text is not None:
            return await outbound.queue_text(conn, tenant_id, conversation_id, text)
        if media_path is not None:
            return await _upload_and_queue(conn, settings, tenant_id, conversation_id, media_path, caption)
        assert template is not None
        return await outbound.queue_template(conn, tenant_id, conversation_id, template, language)

    queued = _with_db(ctx, work)
    out.print(f"queued message {queued.message_id} (outbox {queued.outbox_id})")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    status = "queued"
    while time.monotonic() < deadline:
        row = _with_db(ctx, lambda conn: conn.fetchrow("SELECT status, error, wamid FROM messages WHERE id = $1",
                                                      queued.message_id))
        status = row["status"]
        if status == "failed":
            reason = (row["error"] or [{}])[0].get("reason_en", "unknown reason")
            raise ServiceUnavailable(f"message {queued.message_id} failed: {reason}")
        if status in ("sent", "delivered", "read"):
            out.print(f"message {queued.message_id} {status} (wamid {row['wamid']})")
            return
        time.sleep(0.3)
    raise ServiceUnavailable(f"message {queued.message_id} is still {status} after {timeout:g} s "
                             "(is the engine up? `parlo status`)")


async def _upload_and_queue(conn: asyncpg.Connection, settings: Settings, tenant_id: uuid.UUID,
                            conversation_id: uuid.UUID, path: Path, caption: str | None) -> outbound.Queued:
    await outbound.require_open_window(conn, tenant_id, conversation_id)  # before spending an upload
    mime_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    size = path.stat().st_size
    if size > 100 * 1024 * 1024:
        raise InvalidInput(f"{path.name} is {size} bytes; WhatsApp media must be at most 100 MB")
    kind = outbound.media_kind(mime_type)
    phone_number_id = await conn.fetchval(
        "SELECT ch.phone_number_id FROM conversations c JOIN channels ch ON ch.id = c.channel_id WHERE c.id = $1",
        conversation_id)
    route = (await channels.routes(conn, secret_box(settings)))[phone_number_id]
    async with GraphClient(route.access_token, base_url=settings.graph_base_url, api_version=settings.graph_api_version,
                           timeout=settings.graph_timeout_s) as graph:
        with err.status(f"uploading {path.name}…"):
            media_id = await graph.upload_media(phone_number_id, path.read_bytes(), mime_type, path.name)
    return await outbound.queue_media(conn, tenant_id, conversation_id, kind, media_id=media_id,
                                      caption=caption if kind in ("image", "video", "document") else None,
                                      filename=path.name if kind == "document" else None)


# --- outbox ----------------------------------------------------------------------------------------

@click.group()
def outbox() -> None:
    """Outbound messages waiting, sent or failed."""


@outbox.command("list")
@click.option("--failed", is_flag=True, help="Only rows that gave up (dead).")
@click.option("--state", type=click.Choice(["pending", "in_flight", "done", "dead"]))
@click.option("--tenant", help="Only this tenant.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def outbox_list(ctx: click.Context, failed: bool, state: str | None, tenant: str | None, limit: int,
                as_json: bool) -> None:
    """List outbox rows, newest first."""
    wanted = "dead" if failed else state

    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        tenant_id = await _tenant_id(conn, tenant) if tenant else None
        return await outbound.list_outbox(conn, state=wanted, tenant_id=tenant_id, limit=limit)

    rows = _with_db(ctx, work)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("id", "tenant", "kind", "to", "state", "attempts", "message", "last error")
    for r in rows:
        table.add_row(str(r["id"]), r["tenant"], r["kind"], r["recipient"] or "", r["state"], str(r["attempts"]),
                      r["message_status"] or "", r["last_error"] or "")
    out.print(table)


@outbox.command("retry")
@click.argument("outbox_id", type=click.IntRange(1))
@click.pass_context
def outbox_retry(ctx: click.Context, outbox_id: int) -> None:
    """Queue a failed row again (after fixing its cause)."""
    _with_db(ctx, lambda conn: outbound.retry(conn, outbox_id))
    out.print(f"outbox {outbox_id} queued again")


# --- templates -------------------------------------------------------------------------------------

@click.group(name="templates")
def templates_group() -> None:
    """Message templates of a tenant's WhatsApp Business Accounts."""


@templates_group.command("sync")
@click.option("--tenant", required=True)
@click.pass_context
def templates_sync(ctx: click.Context, tenant: str) -> None:
    """Pull every template from the Graph API (all pages) and store it."""
    settings: Settings = ctx.obj
    box = secret_box(settings)

    async def work(conn: asyncpg.Connection) -> dict[str, int]:
        tenant_id = await _tenant_id(conn, tenant)
        routes = [r for r in (await channels.routes(conn, box)).values() if r.tenant_id == tenant_id]
        if not routes:
            raise NotFound(f"tenant {tenant!r} has no active WhatsApp number (see `parlo channel add`)")
        counts: dict[str, int] = {}
        for route in {r.waba_id: r for r in routes}.values():
            async with GraphClient(route.access_token, base_url=settings.graph_base_url,
                                   api_version=settings.graph_api_version, timeout=settings.graph_timeout_s) as graph:
                with err.status(f"syncing templates of WABA {route.waba_id}…"):
                    counts[route.waba_id] = await templates.sync(conn, graph, tenant_id, route.waba_id)
        return counts

    for waba_id, count in _with_db(ctx, work).items():
        out.print(f"WABA {waba_id}: {count} template(s) stored")


@templates_group.command("list")
@click.option("--tenant", required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def templates_list(ctx: click.Context, tenant: str, as_json: bool) -> None:
    """List the stored templates."""

    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return await templates.list_all(conn, await _tenant_id(conn, tenant))

    rows = _with_db(ctx, work)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("WABA", "name", "language", "category", "status")
    for r in rows:
        table.add_row(r["waba_id"], r["name"], r["language"], r["category"] or "", r["status"])
    out.print(table)


def register(group: click.Group) -> None:
    for command in (channel, send, outbox, templates_group):
        group.add_command(command)
