"""Users of a tenant: the list every member sees (for mentions and assignment), and what admins
do with them (invite, rename, change role or capacity, deactivate); each user's presence.

Privilege rules, checked here and nowhere else:

- only an owner may create an owner, promote to owner, or change an owner in any way;
- no change may leave the tenant without an active owner (when it has one) or without any
  active owner or admin: the last one cannot demote or deactivate themselves;
- deactivating a user revokes every refresh token they hold; their access tokens stop working at
  once because :func:`~engine.inbox.principal.load_principal` reads the user again.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictInt

from engine import users
from engine.db.queries import sql
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.inbox import assignment, audit
from engine.inbox.principal import Changes, Principal

Role = Literal["owner", "admin", "supervisor", "agent"]
Presence = Literal["online", "away", "offline"]
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
MANAGERS = ("owner", "admin")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    role: Role = "agent"
    password: SecretStr = Field(min_length=12, max_length=1024)


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: Role | None = None
    active: StrictBool | None = None
    capacity: StrictInt | None = Field(default=None, ge=0, le=1000)


class PresenceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    presence: Presence


def _user(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "name": row["display_name"], "email": row["email"], "role": row["role"],
            "presence": row["presence"], "capacity": row["capacity"], "active": row["active"],
            "team_ids": list(row["team_ids"])}


async def list_users(conn: asyncpg.Connection, who: Principal) -> list[dict[str, Any]]:
    """Every user of the tenant, deactivated ones last: any member may see who is on the team."""
    return [_user(r) for r in await conn.fetch(sql("inbox_team_users", "list_users"), who.tenant_id)]


async def get_user(conn: asyncpg.Connection, who: Principal, user_id: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow(sql("inbox_team_users", "get_user"), who.tenant_id, user_id)
    if row is None:
        raise NotFound("no such user")
    return _user(row)


async def create_user(conn: asyncpg.Connection, who: Principal, changes: Changes, new: NewUser) -> dict[str, Any]:
    who.require("users.manage")
    if new.role == "owner" and who.role != "owner":
        raise Forbidden("only an owner may create another owner")
    created = await users.create(conn, who.tenant_id, new.email, new.name, new.password.get_secret_value(), role=new.role)
    await audit.record(conn, who, "user.create", str(created.id), {"email": created.email, "role": created.role})
    changes.add("user.updated", {"user_id": created.id})
    return await get_user(conn, who, created.id)


async def update_user(conn: asyncpg.Connection, who: Principal, changes: Changes, user_id: uuid.UUID,
                      patch: UserPatch) -> dict[str, Any]:
    who.require("users.manage")
    managers = await conn.fetch(sql("inbox_team_users", "lock_managers"), who.tenant_id)
    target = await conn.fetchrow(sql("inbox_team_users", "lock_user"), who.tenant_id, user_id)
    if target is None:
        raise NotFound("no such user")
    if who.role != "owner" and (target["role"] == "owner" or patch.role == "owner"):
        raise Forbidden("only an owner may change an owner or make someone an owner")

    name = patch.name if patch.name is not None else target["display_name"]
    role = patch.role if patch.role is not None else target["role"]
    active = patch.active if patch.active is not None else target["active"]
    capacity = patch.capacity if patch.capacity is not None else target["capacity"]

    def remaining(roles: tuple[str, ...]) -> int:
        others = sum(1 for m in managers if m["id"] != user_id and m["role"] in roles)
        return others + (1 if active and role in roles else 0)

    owners_before = sum(1 for m in managers if m["role"] == "owner")
    if owners_before and not remaining(("owner",)):
        raise Conflict("the tenant would have no active owner left: make someone else an owner first")
    if managers and not remaining(MANAGERS):
        raise Conflict("the tenant would have no active owner or admin left")

    before = {"name": target["display_name"], "role": target["role"], "active": target["active"],
              "capacity": target["capacity"]}
    after = {"name": name, "role": role, "active": active, "capacity": capacity}
    diff = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    if diff:
        await conn.execute(sql("inbox_team_users", "update_user"), who.tenant_id, user_id, name, role, active, capacity)
        if target["active"] and not active:
            await conn.execute(sql("inbox_team_users", "revoke_refresh_tokens"), who.tenant_id, user_id, "deactivated")
            if target["presence"] != "offline":
                changes.add("presence", {"user_id": user_id, "presence": "offline"})
        await audit.record(conn, who, "user.update", str(user_id), {"changes": diff})
        changes.add("user.updated", {"user_id": user_id, "fields": sorted(diff)})
        if active and (capacity > before["capacity"] or not before["active"]):
            await assignment.drain_for_user(conn, who.tenant_id, user_id, changes)  # they may have room now
    return await get_user(conn, who, user_id)


async def set_presence(conn: asyncpg.Connection, who: Principal, changes: Changes, presence: Presence) -> bool:
    """Set the caller's own presence; True if it changed (only a change is audited and published)."""
    if presence not in ("online", "away", "offline"):
        raise InvalidInput("presence must be online, away or offline")
    current = await conn.fetchval(sql("inbox_team_users", "lock_presence"), who.tenant_id, who.user_id)
    if current == presence:
        return False
    await conn.execute(sql("inbox_team_users", "set_presence"), who.tenant_id, who.user_id, presence)
    await audit.record(conn, who, "user.presence", str(who.user_id), {"presence": presence})
    changes.add("presence", {"user_id": who.user_id, "presence": presence})
    if presence == "online":
        await assignment.drain_for_user(conn, who.tenant_id, who.user_id, changes)
    return True
