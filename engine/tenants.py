"""Tenants: the businesses that share one Parlo deployment."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Tenant:
    id: uuid.UUID
    slug: str
    name: str
    status: str
    created_at: datetime


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")[:63].rstrip("-")
    return slug


def validate(name: str, slug: str | None) -> tuple[str, str]:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("a tenant name must be 1 to 200 characters")
    if any(ord(ch) < 32 for ch in name):
        raise InvalidInput("a tenant name must not contain control characters")
    slug = slug if slug is not None else slugify(name)
    if not _SLUG.match(slug):
        raise InvalidInput(f"tenant slug {slug!r} is invalid: use 1-63 lowercase letters, digits and dashes, starting with a letter or digit")
    return name, slug


async def create(conn: asyncpg.Connection, name: str, slug: str | None = None, *, actor: str = "cli") -> Tenant:
    name, slug = validate(name, slug)
    async with conn.transaction():
        row = await conn.fetchrow(sql("tenants", "create_tenant"), slug, name)
        if row is None:
            raise Conflict(f"tenant {slug!r} already exists")
        await conn.execute(sql("tenants", "audit"), row["id"], actor, "tenant.create", slug, {"name": name})
    return Tenant(**dict(row))


async def get_by_slug(conn: asyncpg.Connection, slug: str) -> Tenant | None:
    row = await conn.fetchrow(sql("tenants", "get_tenant_by_slug"), slug)
    return Tenant(**dict(row)) if row else None


async def list_all(conn: asyncpg.Connection) -> list[dict[str, object]]:
    return [dict(r) for r in await conn.fetch(sql("tenants", "list_tenants"))]
