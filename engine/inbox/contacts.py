"""Contacts: the customers a tenant talks to. Agents read them; supervisors and above edit the
fields the business keeps (display name, email, notes, attributes); WhatsApp's own fields (number,
business-scoped user id, username, profile name) come from Meta only. A customer who adopted a
WhatsApp username may have no number: the inbox then shows the username, else the BSUID."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.db.queries import sql
from engine.errors import InvalidInput, NotFound
from engine.inbox.audit import record
from engine.inbox.conversations import handle_like, updated_event
from engine.inbox.inputs import decode_cursor, encode_cursor
from engine.inbox.principal import Changes, Principal

MAX_ATTRIBUTES_BYTES = 16 * 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[^@\s]{2,}$")


class ContactQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: str | None = Field(default=None, max_length=200)
    cursor: str | None = Field(default=None, max_length=600)
    limit: int = Field(default=50, ge=1, le=100)


class ContactPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    notes: str | None = Field(default=None, max_length=10000)
    attributes: dict[str, Any] | None = Field(default=None, max_length=100)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not _EMAIL.match(value.strip()):
            raise ValueError("not an email address")
        return value.strip()

    @field_validator("attributes")
    @classmethod
    def _small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(orjson.dumps(value)) > MAX_ATTRIBUTES_BYTES:
            raise ValueError(f"attributes may take at most {MAX_ATTRIBUTES_BYTES // 1024} KiB as JSON")
        return value


def _like(text: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


async def list_contacts(conn: asyncpg.Connection, who: Principal, query: ContactQuery) -> dict[str, Any]:
    who.require("contact.read")
    after_name: str | None = None
    after_id: uuid.UUID | None = None
    if query.cursor:
        _, key = decode_cursor(query.cursor)
        name, _, ident = key.rpartition("\x1f")
        try:
            after_name, after_id = name, uuid.UUID(ident)
        except ValueError:
            raise InvalidInput("the cursor is not one this API gave out") from None
    q = (query.q or "").strip() or None
    digits = re.sub(r"[\s+()-]", "", q) if q else None
    if digits is not None and (not digits.isdigit() or len(digits) < 3):
        digits = None
    rows = await conn.fetch(sql("inbox_contacts", "list_contacts"), who.tenant_id, _like(q) if q else None, digits,
                            after_name, after_id, query.limit + 1, handle_like(q))
    page = rows[:query.limit]
    next_cursor = None
    if len(rows) > query.limit and page:
        last = page[-1]
        next_cursor = encode_cursor(datetime.now(timezone.utc), f"{last['sort_name']}\x1f{last['id']}")
    return {"items": [{"id": str(r["id"]), "wa_id": r["wa_id"], "username": r["username"], "bsuid": r["bsuid"],
                       "name": r["display_name"] or r["profile_name"], "profile_name": r["profile_name"],
                       "email": r["email"]} for r in page],
            "next_cursor": next_cursor}


async def get(conn: asyncpg.Connection, who: Principal, contact_id: uuid.UUID) -> dict[str, Any]:
    """The contact, with the conversations ``who`` may see."""
    who.require("contact.read")
    row = await conn.fetchrow(sql("inbox_contacts", "get_contact"), who.tenant_id, contact_id)
    if row is None:
        raise NotFound(f"no contact {contact_id}")
    conversations = await conn.fetch(sql("inbox_contacts", "contact_conversations"), who.tenant_id, contact_id)
    return {"id": str(row["id"]), "wa_id": row["wa_id"], "username": row["username"], "bsuid": row["bsuid"],
            "profile_name": row["profile_name"],
            "display_name": row["display_name"], "email": row["email"], "notes": row["notes"],
            "attributes": row["attributes"],
            "conversations": [{"id": str(c["id"]), "status": c["status"], "last_message_at": _iso(c["last_message_at"])}
                              for c in conversations if who.may_see(c["team_id"], c["assignee_id"])]}


async def update(conn: asyncpg.Connection, who: Principal, changes: Changes, contact_id: uuid.UUID,
                 patch: ContactPatch) -> dict[str, Any]:
    who.require("contact.edit")
    given = patch.model_fields_set
    if not given:
        raise InvalidInput("give at least one of display_name, email, notes, attributes")
    display_name = " ".join(patch.display_name.split()) or None if patch.display_name is not None else None
    row = await conn.fetchval(sql("inbox_contacts", "update_contact"), who.tenant_id, contact_id,
                              "display_name" in given, display_name, "email" in given, patch.email,
                              "notes" in given, patch.notes, "attributes" in given, patch.attributes or {})
    if row is None:
        raise NotFound(f"no contact {contact_id}")
    await record(conn, who, "contact.edit", str(contact_id), {"fields": sorted(given)})
    for c in await conn.fetch(sql("inbox_contacts", "contact_conversations"), who.tenant_id, contact_id):
        if c["status"] != "resolved":
            updated_event(changes, c, contact=True)
    return await get(conn, who, contact_id)
