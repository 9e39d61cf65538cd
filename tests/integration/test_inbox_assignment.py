"""Automatic assignment against PostgreSQL: per-team FIFO, online members with free capacity, and
no capacity overrun when drains race each other."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from engine import tenants, users
from engine.db.pool import connect
from engine.db.tenancy import tenant_transaction
from engine.inbox import assignment, conversations
from engine.inbox.principal import Changes, Principal
from engine.whatsapp import outbound

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Shop:
    """A tenant with one number, one team, and helpers to add agents and queued conversations."""

    def __init__(self, db: asyncpg.Connection, tenant_id: uuid.UUID, team_id: uuid.UUID) -> None:
        self.db, self.tenant_id, self.team_id = db, tenant_id, team_id
        self._n = 0

    @classmethod
    async def open(cls, db: asyncpg.Connection) -> Shop:
        tenant = await tenants.create(db, f"Negozio {uuid.uuid4().hex[:6]}")
        await db.execute("INSERT INTO channels (tenant_id, phone_number_id, waba_id) VALUES ($1, $2, '1')",
                         tenant.id, str(uuid.uuid4().int)[:15])
        team = await db.fetchval("INSERT INTO teams (tenant_id, name) VALUES ($1, 'Vendite') RETURNING id", tenant.id)
        return cls(db, tenant.id, team)

    async def agent(self, *, capacity: int = 10, presence: str = "online", team: bool = True,
                    role: str = "agent") -> uuid.UUID:
        self._n += 1
        user = await users.create(self.db, self.tenant_id, f"a{self._n}@x.test", f"Agente {self._n}", "password lunga", role)
        await self.db.execute("UPDATE users SET capacity = $2, presence = $3 WHERE id = $1", user.id, capacity, presence)
        if team:
            await self.db.execute("INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)",
                                  self.tenant_id, self.team_id, user.id)
        return user.id

    async def queued(self, minutes: int) -> uuid.UUID:
        self._n += 1
        conversation = await outbound.conversation_with(self.db, self.tenant_id, f"39333{self._n:07d}")
        await self.db.execute("UPDATE conversations SET team_id = $2, queued_at = $3, last_inbound_at = now() "
                              "WHERE id = $1", conversation, self.team_id, T0 + timedelta(minutes=minutes))
        return conversation

    async def assignee(self, conversation_id: uuid.UUID) -> uuid.UUID | None:
        return await self.db.fetchval("SELECT assignee_id FROM conversations WHERE id = $1", conversation_id)

    async def load(self, user_id: uuid.UUID) -> int:
        return await self.db.fetchval("SELECT count(*) FROM conversations WHERE assignee_id = $1 AND status = 'open'",
                                      user_id)

    async def principal(self, user_id: uuid.UUID) -> Principal:
        row = await self.db.fetchrow("SELECT role, display_name FROM users WHERE id = $1", user_id)
        teams = await self.db.fetch("SELECT team_id FROM team_members WHERE user_id = $1", user_id)
        return Principal(self.tenant_id, user_id, row["role"], row["display_name"], frozenset(r["team_id"] for r in teams))


async def test_the_oldest_waiting_conversations_go_to_online_members_with_room(db: asyncpg.Connection) -> None:
    shop = await Shop.open(db)
    roomy = await shop.agent(capacity=2)
    small = await shop.agent(capacity=1)
    away = await shop.agent(capacity=5, presence="away")
    outsider = await shop.agent(capacity=5, team=False)
    # created out of order: the queue follows queued_at, not creation
    third, first, fourth, second = [await shop.queued(m) for m in (30, 10, 40, 20)]
    changes = Changes()
    async with tenant_transaction(db, shop.tenant_id):
        done = await assignment.drain(db, shop.tenant_id, shop.team_id, changes)
    assert [d.conversation_id for d in done] == [first, second, third]
    assert await shop.assignee(fourth) is None  # nobody has room left: it keeps waiting, first in line
    assert (await shop.load(roomy), await shop.load(small), await shop.load(away), await shop.load(outsider)) == (2, 1, 0, 0)
    assert await db.fetchval("SELECT queued_at FROM conversations WHERE id = $1", fourth) == T0 + timedelta(minutes=40)
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE queued_at IS NOT NULL") == 1
    # each assignment: audited, a notification for the agent, live events
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'conversation.auto_assign'") == 3
    assert await db.fetchval("SELECT count(*) FROM notifications WHERE kind = 'assignment'") == 3
    kinds = [k for k, _ in changes.events]
    assert kinds.count("conversation.updated") == 3 and kinds.count("notification.created") == 3
    updated = next(d for k, d in changes.events if k == "conversation.updated")
    assert updated["conversation_id"] == first and updated["team_id"] == shop.team_id


async def test_two_drains_at_once_never_exceed_an_agents_capacity(db: asyncpg.Connection, database_url: str) -> None:
    shop = await Shop.open(db)
    agent = await shop.agent(capacity=1)
    first = await shop.queued(1)
    second = await shop.queued(2)
    other = await connect(database_url)
    try:
        async with tenant_transaction(db, shop.tenant_id):
            mine = await assignment.drain(db, shop.tenant_id, shop.team_id, Changes())
            assert [d.conversation_id for d in mine] == [first]
            # a second drain while the first is uncommitted: the first conversation is skipped (locked),
            # and the agent, being given one right now, is skipped too; nothing is assigned
            async with tenant_transaction(other, shop.tenant_id):
                assert await assignment.drain(other, shop.tenant_id, shop.team_id, Changes()) == []
        # after the commit the agent is full: still nothing
        async with tenant_transaction(other, shop.tenant_id):
            assert await assignment.drain(other, shop.tenant_id, shop.team_id, Changes()) == []
    finally:
        await other.close()
    assert await shop.load(agent) == 1
    assert await shop.assignee(second) is None


async def test_resolving_frees_room_and_the_next_in_line_is_assigned(db: asyncpg.Connection) -> None:
    shop = await Shop.open(db)
    agent = await shop.agent(capacity=1)
    first, second = await shop.queued(1), await shop.queued(2)
    async with tenant_transaction(db, shop.tenant_id):
        await assignment.drain(db, shop.tenant_id, shop.team_id, Changes())
    assert (await shop.assignee(first), await shop.assignee(second)) == (agent, None)
    who = await shop.principal(agent)
    changes = Changes()
    async with tenant_transaction(db, shop.tenant_id):
        view = await conversations.update(db, who, changes, first, conversations.ConversationPatch(status="resolved"))
    assert view["status"] == "resolved"
    assert await shop.assignee(second) == agent
    assert {d["conversation_id"] for k, d in changes.events if k == "conversation.updated"} == {first, second}


async def test_an_agent_coming_online_drains_their_teams(db: asyncpg.Connection) -> None:
    shop = await Shop.open(db)
    agent = await shop.agent(capacity=3, presence="offline")
    waiting = [await shop.queued(m) for m in (1, 2)]
    async with tenant_transaction(db, shop.tenant_id):
        assert await assignment.drain_tenant(db, shop.tenant_id, Changes()) == []
    await db.execute("UPDATE users SET presence = 'online' WHERE id = $1", agent)
    async with tenant_transaction(db, shop.tenant_id):
        done = await assignment.drain_for_user(db, shop.tenant_id, agent, Changes())
    assert [d.conversation_id for d in done] == waiting


async def test_unassigning_puts_a_team_conversation_back_in_the_queue(db: asyncpg.Connection) -> None:
    shop = await Shop.open(db)
    supervisor = await shop.agent(role="supervisor", team=False)
    conversation = await shop.queued(1)
    await db.execute("UPDATE conversations SET queued_at = NULL, assignee_id = $2 WHERE id = $1", conversation, supervisor)
    who = await shop.principal(supervisor)
    async with tenant_transaction(db, shop.tenant_id):
        await conversations.assign(db, who, Changes(), conversation, conversations.AssignRequest(assignee_id=None))
    assert await db.fetchval("SELECT queued_at IS NOT NULL FROM conversations WHERE id = $1", conversation)
    # an agent with room comes online later and gets it
    agent = await shop.agent(capacity=1)
    async with tenant_transaction(db, shop.tenant_id):
        await assignment.drain_for_user(db, shop.tenant_id, agent, Changes())
    assert await shop.assignee(conversation) == agent
