"""Teams and their members. Agents see their teams' conversations, and automatic assignment
hands a team's queue to its online members."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from engine.db.queries import sql
from engine.errors import Conflict, NotFound
from engine.inbox import assignment, audit
from engine.inbox.principal import Changes, Principal


class TeamBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)


def _team(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "member_ids": list(row["member_ids"])}


async def list_teams(conn: asyncpg.Connection, who: Principal) -> list[dict[str, Any]]:
    return [_team(r) for r in await conn.fetch(sql("inbox_team_teams", "list_teams"), who.tenant_id)]


async def get_team(conn: asyncpg.Connection, who: Principal, team_id: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow(sql("inbox_team_teams", "get_team"), who.tenant_id, team_id)
    if row is None:
        raise NotFound("no such team")
    return _team(row)


async def create_team(conn: asyncpg.Connection, who: Principal, changes: Changes, body: TeamBody) -> dict[str, Any]:
    who.require("teams.manage")
    team_id = await conn.fetchval(sql("inbox_team_teams", "create_team"), who.tenant_id, body.name)
    if team_id is None:
        raise Conflict(f"a team named {body.name!r} already exists")
    await audit.record(conn, who, "team.create", str(team_id), {"name": body.name})
    changes.add("team.updated", {"team_id": team_id})
    return await get_team(conn, who, team_id)


async def rename_team(conn: asyncpg.Connection, who: Principal, changes: Changes, team_id: uuid.UUID,
                      body: TeamBody) -> dict[str, Any]:
    who.require("teams.manage")
    row = await conn.fetchrow(sql("inbox_team_teams", "lock_team"), who.tenant_id, team_id)
    if row is None:
        raise NotFound("no such team")
    if row["name"] != body.name:
        if await conn.fetchval(sql("inbox_team_teams", "name_taken"), who.tenant_id, body.name, team_id):
            raise Conflict(f"a team named {body.name!r} already exists")
        await conn.execute(sql("inbox_team_teams", "rename_team"), who.tenant_id, team_id, body.name)
        await audit.record(conn, who, "team.update", str(team_id), {"name": [row["name"], body.name]})
        changes.add("team.updated", {"team_id": team_id})
    return await get_team(conn, who, team_id)


async def delete_team(conn: asyncpg.Connection, who: Principal, changes: Changes, team_id: uuid.UUID) -> None:
    """Delete a team; its conversations stay, without a team (visible to supervisors and their assignee)."""
    who.require("teams.manage")
    name = await conn.fetchval(sql("inbox_team_teams", "delete_team"), who.tenant_id, team_id)
    if name is None:
        raise NotFound("no such team")
    await audit.record(conn, who, "team.delete", str(team_id), {"name": name})
    changes.add("team.updated", {"team_id": team_id, "deleted": True})


async def _team_and_user(conn: asyncpg.Connection, who: Principal, team_id: uuid.UUID, user_id: uuid.UUID) -> None:
    if await conn.fetchrow(sql("inbox_team_teams", "lock_team"), who.tenant_id, team_id) is None:
        raise NotFound("no such team")
    if not await conn.fetchval(sql("inbox_team_teams", "user_exists"), who.tenant_id, user_id):
        raise NotFound("no such user")


async def add_member(conn: asyncpg.Connection, who: Principal, changes: Changes, team_id: uuid.UUID,
                     user_id: uuid.UUID) -> bool:
    """Put ``user_id`` in the team (idempotent); True if they were not a member before."""
    who.require("teams.manage")
    await _team_and_user(conn, who, team_id, user_id)
    added = await conn.fetchval(sql("inbox_team_teams", "add_member"), who.tenant_id, team_id, user_id)
    if added is None:
        return False
    await audit.record(conn, who, "team.member_add", str(team_id), {"user_id": str(user_id)})
    changes.add("team.updated", {"team_id": team_id, "user_id": user_id})
    await assignment.drain(conn, who.tenant_id, team_id, changes)  # a new member may take waiting conversations
    return True


async def remove_member(conn: asyncpg.Connection, who: Principal, changes: Changes, team_id: uuid.UUID,
                        user_id: uuid.UUID) -> bool:
    """Take ``user_id`` out of the team (idempotent); True if they were a member."""
    who.require("teams.manage")
    await _team_and_user(conn, who, team_id, user_id)
    removed = await conn.fetchval(sql("inbox_team_teams", "remove_member"), who.tenant_id, team_id, user_id)
    if removed is None:
        return False
    await audit.record(conn, who, "team.member_remove", str(team_id), {"user_id": str(user_id)})
    changes.add("team.updated", {"team_id": team_id, "user_id": user_id})
    return True
