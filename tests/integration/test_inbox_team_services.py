"""The team services (users, teams, canned replies, chat, notifications, audit) called directly
inside a tenant transaction, as the REST routes call them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import pytest

from engine import tenants, users
from engine.auth.tokens import TokenKeys, rotate, start_session
from engine.db.pool import connect
from engine.db.tenancy import tenant_transaction
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from engine.inbox import audit_view, canned, chat, notifications, teams, users_admin
from engine.inbox.principal import Changes, Principal

pytestmark = pytest.mark.integration
PASSWORD = "una password lunga e sicura"
T = TypeVar("T")


class Tenant:
    def __init__(self, db: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
        self.db = db
        self.id = tenant_id
        self.people: dict[str, Principal] = {}

    async def add(self, key: str, role: str) -> Principal:
        user = await users.create(self.db, self.id, f"{key}@example.it", key.title(), PASSWORD, role=role)
        self.people[key] = Principal(self.id, user.id, role, key.title())
        return self.people[key]

    async def run(self, key: str, call: Callable[[asyncpg.Connection, Principal, Changes], Awaitable[T]],
                  changes: Changes | None = None) -> T:
        """``call`` as ``key`` in that tenant's transaction (rolled back if it raises)."""
        async with tenant_transaction(self.db, self.id):
            return await call(self.db, self.people[key], changes if changes is not None else Changes())


@pytest.fixture
async def acme(db: asyncpg.Connection) -> Tenant:
    tenant = Tenant(db, (await tenants.create(db, "Acme")).id)
    for key, role in (("olga", "owner"), ("ada", "admin"), ("sam", "supervisor"), ("alan", "agent"),
                      ("bea", "agent")):
        await tenant.add(key, role)
    return tenant


def patch(**fields: Any) -> users_admin.UserPatch:
    return users_admin.UserPatch(**fields)


async def test_admins_may_not_touch_owners_and_the_last_owner_cannot_step_down(acme: Tenant) -> None:
    olga, ada = acme.people["olga"], acme.people["ada"]
    for who, target, change in (("ada", olga.user_id, patch(name="Olga 2")),
                                ("ada", ada.user_id, patch(role="owner")),
                                ("ada", acme.people["alan"].user_id, patch(role="owner")),
                                ("sam", acme.people["alan"].user_id, patch(capacity=3)),
                                ("alan", acme.people["alan"].user_id, patch(capacity=3))):
        with pytest.raises(Forbidden):
            await acme.run(who, lambda c, w, ch: users_admin.update_user(c, w, ch, target, change))
    with pytest.raises(Forbidden):
        await acme.run("ada", lambda c, w, ch: users_admin.create_user(
            c, w, ch, users_admin.NewUser(email="o2@example.it", name="O2", role="owner", password=PASSWORD)))

    # the only owner can neither demote nor deactivate themselves
    for change in (patch(role="admin"), patch(active=False)):
        with pytest.raises(Conflict, match="no active owner"):
            await acme.run("olga", lambda c, w, ch: users_admin.update_user(c, w, ch, olga.user_id, change))
    # with a second owner (only an owner can make one) the first may step down
    await acme.run("olga", lambda c, w, ch: users_admin.update_user(c, w, ch, ada.user_id, patch(role="owner")))
    result = await acme.run("olga", lambda c, w, ch: users_admin.update_user(c, w, ch, olga.user_id,
                                                                             patch(role="admin")))
    assert result["role"] == "admin"
    entry = await acme.db.fetchrow("SELECT actor, details FROM audit_log WHERE action = 'user.update' "
                                   "AND subject = $1", str(olga.user_id))
    assert entry["actor"] == f"user:{olga.user_id}" and entry["details"] == {"changes": {"role": ["owner", "admin"]}}


async def test_a_tenant_without_owner_keeps_its_last_admin(db: asyncpg.Connection) -> None:
    tenant = Tenant(db, (await tenants.create(db, "Legacy")).id)
    admin = await tenant.add("ada", "admin")
    await tenant.add("alan", "agent")
    for change in (patch(role="supervisor"), patch(active=False)):
        with pytest.raises(Conflict, match="no active owner or admin"):
            await tenant.run("ada", lambda c, w, ch: users_admin.update_user(c, w, ch, admin.user_id, change))
    result = await tenant.run("ada", lambda c, w, ch: users_admin.update_user(c, w, ch, admin.user_id,
                                                                              patch(name="Ada L.", capacity=0)))
    assert (result["name"], result["capacity"], result["role"]) == ("Ada L.", 0, "admin")


async def test_two_admins_demoting_each_other_at_once_leave_one(database_url: str) -> None:
    setup = await connect(database_url)
    try:
        tenant = Tenant(setup, (await tenants.create(setup, "Duo")).id)
        a, b = await tenant.add("ada", "admin"), await tenant.add("bob", "admin")
    finally:
        await setup.close()
    first, second = await connect(database_url), await connect(database_url)
    started = asyncio.Event()

    async def demote(conn: asyncpg.Connection, who: Principal, target: Principal, hold: bool) -> str:
        try:
            async with tenant_transaction(conn, who.tenant_id):
                await users_admin.update_user(conn, who, Changes(), target.user_id, patch(role="agent"))
                if hold:  # keep the locks until the other one is waiting on them
                    started.set()
                    await asyncio.sleep(0.3)
            return "done"
        except Conflict:
            return "refused"

    try:
        one = asyncio.create_task(demote(first, a, b, True))
        await started.wait()
        outcomes = sorted([await demote(second, b, a, False), await one])
    finally:
        await first.close()
        await second.close()
    assert outcomes == ["done", "refused"]


async def test_deactivating_revokes_refresh_tokens_and_capacity_is_bounded(acme: Tenant) -> None:
    keys = TokenKeys("k" * 48, timedelta(minutes=15), timedelta(days=30))
    alan = acme.people["alan"]
    user = users.User(alan.user_id, acme.id, "alan@example.it", "Alan", "agent")
    pair = await start_session(acme.db, keys, user)
    await acme.db.execute("UPDATE users SET presence = 'online' WHERE id = $1", alan.user_id)
    changes = Changes()
    await acme.run("ada", lambda c, w, ch: users_admin.update_user(c, w, ch, alan.user_id, patch(active=False)),
                   changes)
    assert await acme.db.fetchval("SELECT revoked_reason FROM refresh_tokens WHERE user_id = $1",
                                  alan.user_id) == "deactivated"
    with pytest.raises(Unauthenticated):
        await rotate(acme.db, keys, pair.refresh_token)
    assert ("presence", {"user_id": alan.user_id, "presence": "offline"}) in changes.events
    with pytest.raises(ValueError):
        patch(capacity=1001)
    with pytest.raises(ValueError):
        patch(capacity="5")  # no coercion of strings


async def test_teams_members_and_names(acme: Tenant) -> None:
    team = await acme.run("ada", lambda c, w, ch: teams.create_team(c, w, ch, teams.TeamBody(name=" Vendite ")))
    assert team["name"] == "Vendite" and team["member_ids"] == []
    with pytest.raises(Conflict):
        await acme.run("ada", lambda c, w, ch: teams.create_team(c, w, ch, teams.TeamBody(name="Vendite")))
    with pytest.raises(Forbidden):
        await acme.run("sam", lambda c, w, ch: teams.create_team(c, w, ch, teams.TeamBody(name="Altro")))
    alan = acme.people["alan"].user_id
    assert await acme.run("ada", lambda c, w, ch: teams.add_member(c, w, ch, team["id"], alan)) is True
    assert await acme.run("ada", lambda c, w, ch: teams.add_member(c, w, ch, team["id"], alan)) is False
    with pytest.raises(NotFound):
        await acme.run("ada", lambda c, w, ch: teams.add_member(c, w, ch, team["id"], uuid.uuid4()))
    listed = await acme.run("alan", lambda c, w, ch: teams.list_teams(c, w))
    assert listed == [{"id": team["id"], "name": "Vendite", "member_ids": [alan]}]
    users_listed = await acme.run("alan", lambda c, w, ch: users_admin.list_users(c, w))
    assert next(u for u in users_listed if u["id"] == alan)["team_ids"] == [team["id"]]
    assert await acme.run("ada", lambda c, w, ch: teams.remove_member(c, w, ch, team["id"], alan)) is True
    await acme.run("ada", lambda c, w, ch: teams.delete_team(c, w, ch, team["id"]))
    with pytest.raises(NotFound):
        await acme.run("ada", lambda c, w, ch: teams.rename_team(c, w, ch, team["id"], teams.TeamBody(name="X")))


async def test_canned_search_takes_wildcards_literally(acme: Tenant) -> None:
    for shortcut, title in (("ciao", "Saluto"), ("sconto_10", "Sconto 10%"), ("orari", "Orari di apertura")):
        await acme.run("sam", lambda c, w, ch: canned.create_canned(
            c, w, ch, canned.NewCanned(shortcut=shortcut, title=title, body=f"Testo di {title}")))

    async def search(q: str | None) -> list[str]:
        return [r["shortcut"] for r in await acme.run("alan", lambda c, w, ch: canned.list_canned(c, w, q))]

    assert await search(None) == ["ciao", "orari", "sconto_10"]
    assert await search("%") == ["sconto_10"]
    assert await search("_") == ["sconto_10"]
    assert await search("APERTURA") == ["orari"]
    with pytest.raises(Forbidden):
        await acme.run("alan", lambda c, w, ch: canned.create_canned(
            c, w, ch, canned.NewCanned(shortcut="x", title="x", body="x")))
    for bad in ({"shortcut": "Ciao"}, {"shortcut": "/ciao"}, {"title": " "}, {"body": "x" * 4097}):
        with pytest.raises(ValueError):
            canned.NewCanned(**{"shortcut": "ok", "title": "t", "body": "b", **bad})


async def test_chat_unread_counts_read_markers_and_privacy(acme: Tenant) -> None:
    general = await acme.run("alan", lambda c, w, ch: chat.create_channel(c, w, ch, chat.NewChannel(name="generale")))
    assert general["members"] == [{"id": acme.people["alan"].user_id, "name": "Alan"}] and general["unread"] == 0

    async def say(key: str, channel: uuid.UUID, text: str) -> dict[str, Any]:
        return await acme.run(key, lambda c, w, ch: chat.post(c, w, ch, channel, chat.NewChatMessage(text=text)))

    async def channels(key: str) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in await acme.run(key, lambda c, w, ch: chat.list_channels(c, w))}

    await say("alan", general["id"], "primo")
    # bea sees the channel but is not a member: she can't read it until she joins (history arrives read)
    seen = (await channels("bea"))["generale"]
    assert (seen["joined"], seen["unread"], seen["last_message"]) == (False, 0, None)
    with pytest.raises(NotFound):
        await acme.run("bea", lambda c, w, ch: chat.messages(c, w, general["id"]))
    with pytest.raises(NotFound):
        await say("bea", general["id"], "ciao")
    changes = Changes()
    await acme.run("bea", lambda c, w, ch: chat.join(c, w, ch, general["id"]), changes)
    assert (await channels("bea"))["generale"]["unread"] == 0

    changes = Changes()
    sent = await acme.run("alan", lambda c, w, ch: chat.post(c, w, ch, general["id"], chat.NewChatMessage(text="x")),
                          changes)
    kind, data = changes.events[0]
    assert kind == "chat.message" and sorted(data["user_ids"]) == sorted([acme.people["alan"].user_id,
                                                                          acme.people["bea"].user_id])
    assert data["message_id"] == sent["id"]
    await say("alan", general["id"], "terzo")
    assert (await channels("bea"))["generale"]["unread"] == 2
    assert (await channels("alan"))["generale"]["unread"] == 0  # one's own messages are read
    await acme.run("bea", lambda c, w, ch: chat.mark_read(c, w, ch, general["id"]))
    assert (await channels("bea"))["generale"]["unread"] == 0

    items, has_more = await acme.run("bea", lambda c, w, ch: chat.messages(c, w, general["id"], limit=2))
    assert [m["text"] for m in items] == ["x", "terzo"] and has_more
    items, has_more = await acme.run("bea", lambda c, w, ch: chat.messages(c, w, general["id"], before=items[0]["id"]))
    assert [m["text"] for m in items] == ["primo"] and not has_more

    # a direct channel: created once, seen by its two members only, named after the other one
    bea = acme.people["bea"].user_id
    dm, created = await acme.run("alan", lambda c, w, ch: chat.direct(c, w, ch, bea))
    again, created_again = await acme.run("bea", lambda c, w, ch: chat.direct(c, w, ch, acme.people["alan"].user_id))
    assert created and not created_again and again["id"] == dm["id"]
    assert dm["name"] == "Bea" and again["name"] == "Alan" and dm["kind"] == "direct"
    await say("bea", dm["id"], "solo per te")
    assert (await channels("alan"))["Bea"]["unread"] == 1
    assert "Bea" not in await channels("sam") and "Alan" not in await channels("sam")
    for call in (lambda c, w, ch: chat.messages(c, w, dm["id"]), lambda c, w, ch: chat.join(c, w, ch, dm["id"]),
                 lambda c, w, ch: chat.mark_read(c, w, ch, dm["id"])):
        with pytest.raises(NotFound):
            await acme.run("sam", call)
    with pytest.raises(InvalidInput):
        await acme.run("alan", lambda c, w, ch: chat.direct(c, w, ch, acme.people["alan"].user_id))
    with pytest.raises(NotFound):
        await acme.run("alan", lambda c, w, ch: chat.direct(c, w, ch, uuid.uuid4()))
    for bad in ("", "   ", "x" * 4097):
        with pytest.raises(ValueError):
            chat.NewChatMessage(text=bad)
    assert len(chat.NewChatMessage(text="é" * 4096).text) == 4096
    assert await acme.db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'chat.message'") == 4
    assert await acme.db.fetchval("SELECT count(*) FROM audit_log WHERE details::text LIKE '%solo per te%'") == 0


async def test_notifications_are_one_users_own(acme: Tenant) -> None:
    alan, bea = acme.people["alan"].user_id, acme.people["bea"].user_id
    ids = [await acme.db.fetchval("INSERT INTO notifications (tenant_id, user_id, kind, data) "
                                  "VALUES ($1, $2, 'mention', $3) RETURNING id", acme.id, alan, {"n": n})
           for n in range(3)]
    theirs = await acme.db.fetchval("INSERT INTO notifications (tenant_id, user_id, kind) VALUES ($1, $2, 'mention') "
                                    "RETURNING id", acme.id, bea)
    items, unread = await acme.run("alan", lambda c, w, ch: notifications.list_notifications(c, w))
    assert [i["id"] for i in items] == ids[::-1] and unread == 3 and items[0]["data"] == {"n": 2}
    items, _ = await acme.run("alan", lambda c, w, ch: notifications.list_notifications(c, w, before=ids[2], limit=1))
    assert [i["id"] for i in items] == [ids[1]]
    with pytest.raises(NotFound):
        await acme.run("alan", lambda c, w, ch: notifications.mark_read(c, w, theirs))
    await acme.run("alan", lambda c, w, ch: notifications.mark_read(c, w, ids[0]))
    await acme.run("alan", lambda c, w, ch: notifications.mark_read(c, w, ids[0]))  # idempotent
    items, unread = await acme.run("alan", lambda c, w, ch: notifications.list_notifications(c, w, unread=True))
    assert [i["id"] for i in items] == [ids[2], ids[1]] and unread == 2
    assert await acme.run("alan", lambda c, w, ch: notifications.mark_all_read(c, w)) == 2
    assert (await acme.run("alan", lambda c, w, ch: notifications.list_notifications(c, w)))[1] == 0
    assert await acme.db.fetchval("SELECT read_at FROM notifications WHERE id = $1", theirs) is None


async def test_audit_view_names_actors_and_filters_by_action_prefix(acme: Tenant) -> None:
    await acme.run("ada", lambda c, w, ch: teams.create_team(c, w, ch, teams.TeamBody(name="Vendite")))
    await acme.run("ada", lambda c, w, ch: users_admin.create_user(
        c, w, ch, users_admin.NewUser(email="nuovo@example.it", name="Nuovo", password=PASSWORD)))
    await acme.db.execute("INSERT INTO audit_log (tenant_id, actor, action) VALUES ($1, 'cli', 'userx.odd')", acme.id)
    entries = await acme.run("ada", lambda c, w, ch: audit_view.list_audit(c, w, action="user"))
    assert [e["action"] for e in entries] == ["user.create"]
    assert entries[0]["actor"] == {"id": acme.people["ada"].user_id, "name": "Ada",
                                   "raw": f"user:{acme.people['ada'].user_id}"}
    assert PASSWORD not in str(entries)
    everything = await acme.run("ada", lambda c, w, ch: audit_view.list_audit(c, w))
    assert everything[0]["actor"] == {"id": None, "name": "cli", "raw": "cli"}
    older = await acme.run("ada", lambda c, w, ch: audit_view.list_audit(c, w, before=everything[0]["id"], limit=1))
    assert older[0]["id"] == everything[1]["id"]
    with pytest.raises(Forbidden):
        await acme.run("sam", lambda c, w, ch: audit_view.list_audit(c, w))
