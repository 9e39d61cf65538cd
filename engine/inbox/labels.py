"""Labels a tenant puts on conversations: listed by everyone, managed by supervisors and above."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput, NotFound
from engine.inbox.audit import record
from engine.inbox.conversations import updated_event
from engine.inbox.principal import Changes, Principal

COLOR = r"^#[0-9a-fA-F]{6}$"


class LabelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=50)
    color: str = Field(default="#6b7280", pattern=COLOR)


class LabelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=50)
    color: str | None = Field(default=None, pattern=COLOR)


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": str(row["id"]), "name": row["name"], "color": row["color"]}


def _name(value: str) -> str:
    name = " ".join(value.split())
    if not name:
        raise InvalidInput("a label needs a name")
    return name


async def list_labels(conn: asyncpg.Connection, who: Principal) -> dict[str, Any]:
    who.require("conversation.read_own")
    return {"items": [_view(r) for r in await conn.fetch(sql("inbox_labels", "list_labels"), who.tenant_id)]}


async def _touch_conversations(conn: asyncpg.Connection, who: Principal, changes: Changes, label_id: uuid.UUID) -> None:
    for row in await conn.fetch(sql("inbox_labels", "labelled_conversations"), who.tenant_id, label_id):
        updated_event(changes, row, labels=True)


async def create(conn: asyncpg.Connection, who: Principal, changes: Changes, request: LabelCreate) -> dict[str, Any]:
    who.require("canned.manage")
    row = await conn.fetchrow(sql("inbox_labels", "create_label"), who.tenant_id, _name(request.name),
                              request.color.lower())
    if row is None:
        raise Conflict(f"a label named {request.name!r} already exists")
    await record(conn, who, "label.create", str(row["id"]), {"name": row["name"]})
    return _view(row)


async def update(conn: asyncpg.Connection, who: Principal, changes: Changes, label_id: uuid.UUID,
                 request: LabelPatch) -> dict[str, Any]:
    who.require("canned.manage")
    if request.name is None and request.color is None:
        raise InvalidInput("give a name or a color")
    try:
        row = await conn.fetchrow(sql("inbox_labels", "update_label"), who.tenant_id, label_id,
                                  _name(request.name) if request.name is not None else None,
                                  request.color.lower() if request.color else None)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a label named {request.name!r} already exists") from None
    if row is None:
        raise NotFound(f"no label {label_id}")
    await record(conn, who, "label.update", str(label_id), {"name": row["name"], "color": row["color"]})
    await _touch_conversations(conn, who, changes, label_id)
    return _view(row)


async def delete(conn: asyncpg.Connection, who: Principal, changes: Changes, label_id: uuid.UUID) -> None:
    who.require("canned.manage")
    await _touch_conversations(conn, who, changes, label_id)  # before the cascade removes the links
    if await conn.fetchval(sql("inbox_labels", "delete_label"), who.tenant_id, label_id) is None:
        raise NotFound(f"no label {label_id}")
    await record(conn, who, "label.delete", str(label_id))
