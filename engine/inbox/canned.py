"""Canned replies: texts an agent inserts by typing ``/shortcut`` in the composer."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from engine.db.queries import sql
from engine.errors import Conflict, NotFound
from engine.inbox import audit
from engine.inbox.principal import Changes, Principal

SHORTCUT = r"^[a-z0-9][a-z0-9_-]{0,39}$"
LIST_LIMIT = 500


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Body = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_not_blank)]
Shortcut = Annotated[str, Field(min_length=1, max_length=40, pattern=SHORTCUT)]
Title = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_not_blank)]


class NewCanned(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shortcut: Shortcut
    title: Title
    body: Body


class CannedPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shortcut: Shortcut | None = None
    title: Title | None = None
    body: Body | None = None


def like_pattern(q: str) -> str:
    """``q`` as an ILIKE substring pattern, its wildcards taken literally."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def list_canned(conn: asyncpg.Connection, who: Principal, q: str | None = None) -> list[dict[str, Any]]:
    pattern = like_pattern(q.strip()) if q and q.strip() else None
    rows = await conn.fetch(sql("inbox_team_canned", "list_canned"), who.tenant_id, pattern, LIST_LIMIT)
    return [dict(r) for r in rows]


async def create_canned(conn: asyncpg.Connection, who: Principal, changes: Changes, new: NewCanned) -> dict[str, Any]:
    who.require("canned.manage")
    row = await conn.fetchrow(sql("inbox_team_canned", "create_canned"), who.tenant_id, new.shortcut, new.title,
                              new.body, who.user_id)
    if row is None:
        raise Conflict(f"the shortcut /{new.shortcut} is taken")
    await audit.record(conn, who, "canned.create", str(row["id"]), {"shortcut": new.shortcut})
    changes.add("canned.updated", {"canned_id": row["id"]})
    return dict(row)


async def update_canned(conn: asyncpg.Connection, who: Principal, changes: Changes, canned_id: uuid.UUID,
                        patch: CannedPatch) -> dict[str, Any]:
    who.require("canned.manage")
    row = await conn.fetchrow(sql("inbox_team_canned", "lock_canned"), who.tenant_id, canned_id)
    if row is None:
        raise NotFound("no such canned reply")
    after = {k: getattr(patch, k) if getattr(patch, k) is not None else row[k] for k in ("shortcut", "title", "body")}
    changed = sorted(k for k in after if after[k] != row[k])
    if not changed:
        return dict(row)
    if "shortcut" in changed and await conn.fetchval(sql("inbox_team_canned", "shortcut_taken"), who.tenant_id,
                                                     after["shortcut"], canned_id):
        raise Conflict(f"the shortcut /{after['shortcut']} is taken")
    updated = await conn.fetchrow(sql("inbox_team_canned", "update_canned"), who.tenant_id, canned_id,
                                  after["shortcut"], after["title"], after["body"])
    await audit.record(conn, who, "canned.update", str(canned_id), {"shortcut": after["shortcut"], "fields": changed})
    changes.add("canned.updated", {"canned_id": canned_id})
    return dict(updated)


async def delete_canned(conn: asyncpg.Connection, who: Principal, changes: Changes, canned_id: uuid.UUID) -> None:
    who.require("canned.manage")
    shortcut = await conn.fetchval(sql("inbox_team_canned", "delete_canned"), who.tenant_id, canned_id)
    if shortcut is None:
        raise NotFound("no such canned reply")
    await audit.record(conn, who, "canned.delete", str(canned_id), {"shortcut": shortcut})
    changes.add("canned.updated", {"canned_id": canned_id, "deleted": True})


class CannedQuery(BaseModel):
    q: str | None = Field(default=None, max_length=200)
