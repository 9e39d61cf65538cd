"""Automatic assignment: a FIFO queue per team, drained to the team's online members who have room.

A conversation waits in its team's queue while it is open, unassigned and has a team
(``conversations.queued_at`` keeps its place). :func:`drain` gives the oldest waiting conversation
to the online member with the most free capacity (open conversations assigned to them below
``users.capacity``), and repeats until the queue or the free capacity runs out.

Safe under concurrency: the queue is read with ``FOR UPDATE SKIP LOCKED`` (two drains never take
the same conversation) and an agent's row is locked while a conversation is given to them, their
load counted again after the lock, so their capacity is never exceeded by drains racing each other.
Call it after whatever may add to a queue or free capacity: a team set on an unassigned
conversation, an assignee removed, a conversation resolved, an agent coming online.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from engine.db.queries import sql
from engine.inbox.notify import notify
from engine.inbox.principal import Changes

ACTOR = "system:auto-assign"
MAX_PER_CALL = 200


@dataclass(frozen=True, slots=True)
class Assigned:
    conversation_id: uuid.UUID
    team_id: uuid.UUID
    assignee_id: uuid.UUID


async def _pick_agent(conn: asyncpg.Connection, tenant_id: uuid.UUID, team_id: uuid.UUID) -> uuid.UUID | None:
    for candidate in await conn.fetch(sql("inbox_assignment", "candidates"), tenant_id, team_id):
        if candidate["load"] >= candidate["capacity"]:
            continue
        locked = await conn.fetchrow(sql("inbox_assignment", "lock_agent"), tenant_id, candidate["id"])
        if locked is None:
            continue  # another drain is giving them a conversation right now, or they just went away
        # counted again under the lock: this statement sees what other drains committed meanwhile
        if await conn.fetchval(sql("inbox_assignment", "open_load"), tenant_id, candidate["id"]) < locked["capacity"]:
            return candidate["id"]  # type: ignore[no-any-return]
    return None


async def drain(conn: asyncpg.Connection, tenant_id: uuid.UUID, team_id: uuid.UUID, changes: Changes, *,
                limit: int = MAX_PER_CALL) -> list[Assigned]:
    """Assign the team's waiting conversations, oldest first, while someone has room. Runs inside
    the caller's transaction; the events go to ``changes``."""
    done: list[Assigned] = []
    async with conn.transaction():  # a savepoint when called inside a request's transaction
        while len(done) < limit:
            conversation_id = await conn.fetchval(sql("inbox_assignment", "next_queued"), tenant_id, team_id)
            if conversation_id is None:
                break
            agent = await _pick_agent(conn, tenant_id, team_id)
            if agent is None:
                break
            row = await conn.fetchrow(sql("inbox_assignment", "assign_queued"), tenant_id, conversation_id, agent)
            if row is None:
                break
            done.append(Assigned(conversation_id, team_id, agent))
            await conn.execute(sql("inbox_assignment", "audit_system"), tenant_id, ACTOR, "conversation.auto_assign",
                               str(conversation_id), {"assignee_id": str(agent), "team_id": str(team_id)})
            changes.add("conversation.updated", {"conversation_id": conversation_id, "team_id": team_id,
                                                 "assignee_id": agent, "assignee": True})
            await notify(conn, tenant_id, changes, agent, "assignment", conversation_id,
                         {"by": None, "automatic": True})
    return done


async def drain_teams(conn: asyncpg.Connection, tenant_id: uuid.UUID, team_ids: set[uuid.UUID] | list[uuid.UUID],
                      changes: Changes) -> list[Assigned]:
    done: list[Assigned] = []
    for team_id in sorted(set(team_ids), key=str):  # one order everywhere: fewer lock waits between drains
        done += await drain(conn, tenant_id, team_id, changes)
    return done


async def drain_for_user(conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID,
                         changes: Changes) -> list[Assigned]:
    """After an agent came online or got room: drain the queues of their teams."""
    teams = [r["team_id"] for r in await conn.fetch(sql("inbox_assignment", "teams_of_user"), tenant_id, user_id)]
    return await drain_teams(conn, tenant_id, teams, changes)


async def drain_tenant(conn: asyncpg.Connection, tenant_id: uuid.UUID, changes: Changes) -> list[Assigned]:
    """Every team of the tenant that has conversations waiting (e.g. from a periodic sweep)."""
    teams = [r["team_id"] for r in await conn.fetch(sql("inbox_assignment", "queued_teams"), tenant_id)]
    return await drain_teams(conn, tenant_id, teams, changes)
