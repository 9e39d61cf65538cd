"""The team routes through the real Serve app: users and presence, teams, canned replies, team
chat, notifications and the audit log; with bad input, other tenants' ids and role limits."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from engine.events import stream_key
from tests.api_harness import PASSWORD, Gateway, TenantKit

pytestmark = pytest.mark.integration
# Logins are limited to 50 per address in 15 minutes and every user of a kit logs in from 127.0.0.1:
# each test makes only the roles it needs.


async def _events(gateway: Gateway, kit: TenantKit) -> list[tuple[str, dict[str, Any]]]:
    assert gateway.settings.redis_url is not None
    client = aioredis.from_url(gateway.settings.redis_url.get_secret_value())
    try:
        entries = await client.xrange(stream_key(kit.id))
    finally:
        await client.aclose()
    return [(fields[b"type"].decode(), orjson.loads(fields[b"data"])) for _, fields in entries]


async def _wait_for_event(gateway: Gateway, kit: TenantKit, kind: str, timeout_s: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [data for k, data in await _events(gateway, kit) if k == kind]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no {kind} event"
        await asyncio.sleep(0.05)


async def test_users_list_create_and_the_password_never_comes_back(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    async with kit.http("agent") as http:
        listed = (await http.get("/api/users")).json()["items"]
        assert {u["role"] for u in listed} == {"owner", "admin", "supervisor", "agent"}
        assert set(listed[0]) == {"id", "name", "email", "role", "presence", "capacity", "active", "team_ids"}
        refused = await http.post("/api/users", json={"email": "x@y.it", "name": "X", "role": "agent",
                                                      "password": PASSWORD})
        assert refused.status_code == 403 and refused.json()["code"] == "Forbidden"

    secret = "a-very-secret-password-123"
    async with kit.http("admin") as http:
        created = await http.post("/api/users", json={"email": "Nuova@Example.it", "name": "Nuova", "role": "agent",
                                                      "password": secret})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["email"] == "nuova@example.it" and body["active"] and body["presence"] == "offline"
        assert secret not in created.text
        assert (await http.post("/api/users", json={"email": "nuova@example.it", "name": "Again", "role": "agent",
                                                    "password": secret})).status_code == 409
        owner = await http.post("/api/users", json={"email": "boss@example.it", "name": "Boss", "role": "owner",
                                                    "password": secret})
        assert owner.status_code == 403
        for bad in ({"email": "not-an-email", "name": "X", "password": secret},
                    {"email": "x@example.it", "name": "X", "password": "short"},
                    {"email": "x@example.it", "password": secret},  # no name: the body must not be echoed
                    {"email": "x@example.it", "name": "", "password": secret},
                    {"email": "x@example.it", "name": "X" * 201, "password": secret},
                    {"email": "x@example.it", "name": "X", "role": "god", "password": secret},
                    {"email": "x@example.it", "name": "X", "password": secret, "is_superuser": True},
                    {"email": 5, "name": "X", "password": secret}):
            answer = await http.post("/api/users", json=bad)
            assert answer.status_code == 422, (bad, answer.text)
            assert secret not in answer.text and "short" not in answer.text and answer.json()["code"] == "InvalidInput"
        assert (await http.post("/api/users", content=b'{"email": ', headers={"content-type": "application/json"})
                ).status_code == 422
        assert (await http.post("/api/users", content=b"[1, 2]", headers={"content-type": "application/json"})
                ).status_code == 422
    # the new user can log in with the password they were given
    async with gateway.client() as http:
        login = await http.post("/api/auth/login", json={"tenant": kit.slug, "email": "nuova@example.it",
                                                         "password": secret})
        assert login.status_code == 200
    async with gateway.connect() as conn:
        audit = await conn.fetch("SELECT details::text AS d FROM audit_log WHERE tenant_id = $1", kit.id)
    assert all(secret not in r["d"] for r in audit)
    assert any("nuova@example.it" in r["d"] for r in audit)


async def test_patch_users_role_rules_and_deactivation_cuts_access_at_once(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    other = await gateway.tenant(roles=("agent",))
    agent, admin, owner = kit.members["agent"], kit.members["admin"], kit.members["owner"]
    async with kit.http("admin") as http:
        changed = await http.patch(f"/api/users/{agent.id}", json={"name": "Agente Uno", "capacity": 3})
        assert changed.status_code == 200 and (changed.json()["name"], changed.json()["capacity"]) == ("Agente Uno", 3)
        assert (await http.patch(f"/api/users/{owner.id}", json={"name": "Ex boss"})).status_code == 403
        assert (await http.patch(f"/api/users/{agent.id}", json={"role": "owner"})).status_code == 403
        assert (await http.patch(f"/api/users/{admin.id}", json={"role": "owner"})).status_code == 403
        assert (await http.patch(f"/api/users/{other.members['agent'].id}", json={"name": "x"})).status_code == 404
        assert (await http.patch(f"/api/users/{uuid.uuid4()}", json={"name": "x"})).status_code == 404
        assert (await http.patch("/api/users/not-a-uuid", json={"name": "x"})).status_code == 404
        for bad in ({"capacity": "5"}, {"capacity": 1001}, {"capacity": -1}, {"active": "no"}, {"role": "root"},
                    {"name": "x" * 201}, {"password": "new one please"}):
            assert (await http.patch(f"/api/users/{agent.id}", json=bad)).status_code == 422, bad
        assert (await http.patch(f"/api/users/{agent.id}", content=b"{nope",
                                 headers={"content-type": "application/json"})).status_code == 422
    async with kit.http("supervisor") as http:
        assert (await http.patch(f"/api/users/{agent.id}", json={"capacity": 5})).status_code == 403
    async with kit.http("owner") as http:
        # the only owner cannot step down; promoting someone else first makes it possible
        last = await http.patch(f"/api/users/{owner.id}", json={"role": "admin"})
        assert last.status_code == 409 and last.json()["code"] == "Conflict"
        assert (await http.patch(f"/api/users/{owner.id}", json={"active": False})).status_code == 409

    async with kit.http("agent") as http:
        assert (await http.get("/api/users")).status_code == 200
        async with kit.http("admin") as admin_http:
            off = await admin_http.patch(f"/api/users/{agent.id}", json={"active": False})
            assert off.status_code == 200 and off.json()["active"] is False
        assert (await http.get("/api/users")).status_code == 401  # the same access token, refused at once
    async with gateway.client() as http:
        refreshed = await http.post("/api/auth/refresh", json={"refresh_token": agent.refresh_token})
        assert refreshed.status_code == 401
        login = await http.post("/api/auth/login", json={"tenant": kit.slug, "email": agent.email,
                                                         "password": PASSWORD})
        assert login.status_code == 401

    # demotion also takes effect at once: the supervisor made agent loses canned.manage
    async with kit.http("admin") as http:
        assert (await http.patch(f"/api/users/{kit.members['supervisor'].id}", json={"role": "agent"})).status_code == 200
    async with kit.http("supervisor") as http:
        answer = await http.post("/api/canned", json={"shortcut": "ciao", "title": "Ciao", "body": "Ciao!"})
        assert answer.status_code == 403
    event = await _wait_for_event(gateway, kit, "user.updated")
    assert event["user_id"] == str(kit.members["supervisor"].id)


async def test_presence_is_published_and_validated(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("agent",))
    async with kit.http("agent") as http:
        assert (await http.put("/api/me/presence", json={"presence": "online"})).status_code == 204
        me = next(u for u in (await http.get("/api/users")).json()["items"] if u["id"] == str(kit.members["agent"].id))
        assert me["presence"] == "online"
        for bad in ({"presence": "busy"}, {"presence": None}, {}, {"presence": "online", "x": 1}):
            assert (await http.put("/api/me/presence", json=bad)).status_code == 422
    event = await _wait_for_event(gateway, kit, "presence")
    assert event == {"user_id": str(kit.members["agent"].id), "presence": "online"}


async def test_coming_online_takes_a_waiting_conversation(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("admin", "agent"))
    agent = kit.members["agent"]
    async with kit.http("admin") as http:
        team = (await http.post("/api/teams", json={"name": "Supporto"})).json()
        assert (await http.put(f"/api/teams/{team['id']}/members/{agent.id}")).status_code == 204
    assert kit.inbound("393331112233", "Aiuto!").status_code == 200
    conversation = await kit.conversation_of("393331112233")
    async with gateway.connect() as conn:
        await conn.execute("UPDATE conversations SET team_id = $2, queued_at = now(), assignee_id = NULL WHERE id = $1",
                           conversation, uuid.UUID(team["id"]))
    async with kit.http("agent") as http:
        assert (await http.put("/api/me/presence", json={"presence": "online"})).status_code == 204
    async with gateway.connect() as conn:
        assert await conn.fetchval("SELECT assignee_id FROM conversations WHERE id = $1", conversation) == agent.id


async def test_teams_and_members(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("admin", "supervisor", "agent"))
    other = await gateway.tenant(roles=("owner", "agent"))
    agent = kit.members["agent"]
    async with kit.http("admin") as http:
        created = await http.post("/api/teams", json={"name": "Vendite"})
        assert created.status_code == 201 and created.json()["member_ids"] == []
        team_id = created.json()["id"]
        assert (await http.post("/api/teams", json={"name": "Vendite"})).status_code == 409
        for bad in ({"name": ""}, {"name": "x" * 101}, {"name": 3}, {}):
            assert (await http.post("/api/teams", json=bad)).status_code == 422
        assert (await http.put(f"/api/teams/{team_id}/members/{agent.id}")).status_code == 204
        assert (await http.put(f"/api/teams/{team_id}/members/{agent.id}")).status_code == 204  # idempotent
        assert (await http.put(f"/api/teams/{team_id}/members/{other.members['agent'].id}")).status_code == 404
        renamed = await http.patch(f"/api/teams/{team_id}", json={"name": "Vendite Italia"})
        assert renamed.json() == {"id": team_id, "name": "Vendite Italia", "member_ids": [str(agent.id)]}
    async with other.http("owner") as http:
        assert (await http.patch(f"/api/teams/{team_id}", json={"name": "Mia"})).status_code == 404
        assert (await http.delete(f"/api/teams/{team_id}")).status_code == 404
        assert (await http.put(f"/api/teams/{team_id}/members/{other.members['agent'].id}")).status_code == 404
        assert (await http.get("/api/teams")).json()["items"] == []
    async with kit.http("agent") as http:
        assert (await http.get("/api/teams")).json()["items"][0]["member_ids"] == [str(agent.id)]
        me = next(u for u in (await http.get("/api/users")).json()["items"] if u["id"] == str(agent.id))
        assert me["team_ids"] == [team_id]
        assert (await http.post("/api/teams", json={"name": "Mia"})).status_code == 403
        assert (await http.delete(f"/api/teams/{team_id}/members/{agent.id}")).status_code == 403
    async with kit.http("supervisor") as http:
        assert (await http.delete(f"/api/teams/{team_id}")).status_code == 403
    async with kit.http("admin") as http:
        assert (await http.delete(f"/api/teams/{team_id}/members/{agent.id}")).status_code == 204
        assert (await http.delete(f"/api/teams/{team_id}")).status_code == 204
        assert (await http.delete(f"/api/teams/{team_id}")).status_code == 404
    actions = [a["action"] for a in await _audit(kit, action="team")]
    assert actions == ["team.delete", "team.member_remove", "team.update", "team.member_add", "team.create"]


async def _audit(kit: TenantKit, **params: str) -> list[dict[str, Any]]:
    async with kit.http("admin") as http:
        answer = await http.get("/api/audit", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]  # type: ignore[no-any-return]


async def test_canned_replies(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("supervisor", "agent"))
    other = await gateway.tenant(roles=("owner",))
    async with kit.http("supervisor") as http:
        created = await http.post("/api/canned", json={"shortcut": "orari", "title": "Orari",
                                                       "body": "Siamo aperti dalle 9 alle 18."})
        assert created.status_code == 201
        canned_id = created.json()["id"]
        assert set(created.json()) == {"id", "shortcut", "title", "body"}
        assert (await http.post("/api/canned", json={"shortcut": "orari", "title": "T", "body": "B"})).status_code == 409
        for bad in ({"shortcut": "Orari!", "title": "T", "body": "B"}, {"shortcut": "x", "title": "T", "body": ""},
                    {"shortcut": "x", "title": "T", "body": "b" * 4097}, {"shortcut": "x" * 41, "title": "T", "body": "B"},
                    {"shortcut": "x", "title": ["T"], "body": "B"}):
            assert (await http.post("/api/canned", json=bad)).status_code == 422, bad
        patched = await http.patch(f"/api/canned/{canned_id}", json={"title": "Orari di apertura"})
        assert patched.json()["title"] == "Orari di apertura" and patched.json()["shortcut"] == "orari"
    async with kit.http("agent") as http:
        assert [c["id"] for c in (await http.get("/api/canned", params={"q": "APERTI"})).json()["items"]] == [canned_id]
        assert (await http.get("/api/canned", params={"q": "nulla"})).json()["items"] == []
        assert (await http.get("/api/canned", params={"q": "x" * 201})).status_code == 422
        assert (await http.delete(f"/api/canned/{canned_id}")).status_code == 403
        assert (await http.patch(f"/api/canned/{canned_id}", json={"title": "Mio"})).status_code == 403
    async with other.http("owner") as http:
        assert (await http.patch(f"/api/canned/{canned_id}", json={"title": "Mio"})).status_code == 404
        assert (await http.delete(f"/api/canned/{canned_id}")).status_code == 404
        assert (await http.get("/api/canned")).json()["items"] == []
    async with kit.http("supervisor") as http:
        assert (await http.delete(f"/api/canned/{canned_id}")).status_code == 204
        assert (await http.delete(f"/api/canned/{canned_id}")).status_code == 404


async def test_team_chat_channels_direct_messages_and_unread(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("admin", "supervisor", "agent"))
    other = await gateway.tenant(roles=("owner", "agent"))
    agent, supervisor, admin = kit.members["agent"], kit.members["supervisor"], kit.members["admin"]
    async with kit.http("agent") as http:
        created = await http.post("/api/chat/channels", json={"name": "generale"})
        assert created.status_code == 201
        channel = created.json()
        assert channel["kind"] == "channel" and channel["members"] == [{"id": str(agent.id), "name": agent.name}]
        assert (await http.post("/api/chat/channels", json={"name": "generale"})).status_code == 409
        posted = await http.post(f"/api/chat/channels/{channel['id']}/messages", json={"text": "ciao a tutti"})
        assert posted.status_code == 201 and posted.json()["author"] == {"id": str(agent.id), "name": agent.name}
        assert (await http.post(f"/api/chat/channels/{channel['id']}/messages", json={"text": "x" * 4097})
                ).status_code == 422
        assert (await http.post(f"/api/chat/channels/{channel['id']}/messages", json={"text": "   "})).status_code == 422
        assert (await http.post(f"/api/chat/channels/{channel['id']}/messages", json={"text": 42})).status_code == 422
        assert (await http.post(f"/api/chat/channels/{channel['id']}/messages", json={"text": "é" * 4096})
                ).status_code == 201
    async with kit.http("supervisor") as http:
        # not a member yet: listed (so one can join) but not readable
        seen = (await http.get("/api/chat/channels")).json()["items"]
        assert [(c["name"], c["unread"], c["last_message"]) for c in seen] == [("generale", 0, None)]
        assert (await http.get(f"/api/chat/channels/{channel['id']}/messages")).status_code == 404
        assert (await http.post(f"/api/chat/channels/{channel['id']}/messages", json={"text": "hi"})).status_code == 404
        assert (await http.post(f"/api/chat/channels/{channel['id']}/join")).status_code == 204
        assert (await http.post(f"/api/chat/channels/{channel['id']}/join")).status_code == 204
        page = (await http.get(f"/api/chat/channels/{channel['id']}/messages", params={"limit": 1})).json()
        assert len(page["items"]) == 1 and page["has_more"] is True
        assert (await http.get(f"/api/chat/channels/{channel['id']}/messages", params={"limit": 0})).status_code == 422
        assert (await http.get(f"/api/chat/channels/{channel['id']}/messages", params={"before": "x"})).status_code == 422
    async with kit.http("agent") as http:
        await http.post(f"/api/chat/channels/{channel['id']}/messages", json={"text": "ci sei?"})
    event = await _wait_for_event(gateway, kit, "chat.message")
    assert sorted(event["user_ids"]) == sorted([str(agent.id), str(supervisor.id)])
    async with kit.http("supervisor") as http:
        listed = (await http.get("/api/chat/channels")).json()["items"][0]
        assert listed["unread"] == 1 and listed["last_message"]["text"] == "ci sei?"
        assert (await http.post(f"/api/chat/channels/{channel['id']}/read")).status_code == 204
        assert (await http.get("/api/chat/channels")).json()["items"][0]["unread"] == 0

        # direct: created once (201, then 200), visible to its two members only
        first = await http.post("/api/chat/direct", json={"user_id": str(agent.id)})
        assert first.status_code == 201 and first.json()["kind"] == "direct" and first.json()["name"] == agent.name
        direct_id = first.json()["id"]
        await http.post(f"/api/chat/channels/{direct_id}/messages", json={"text": "in privato"})
        assert (await http.post("/api/chat/direct", json={"user_id": str(supervisor.id)})).status_code == 422
        assert (await http.post("/api/chat/direct", json={"user_id": str(other.members["agent"].id)})).status_code == 404
        assert (await http.post("/api/chat/direct", json={"user_id": "nope"})).status_code == 422
    async with kit.http("agent") as http:
        again = await http.post("/api/chat/direct", json={"user_id": str(supervisor.id)})
        assert again.status_code == 200 and again.json()["id"] == direct_id and again.json()["unread"] == 1
    async with kit.http("admin") as http:
        assert direct_id not in [c["id"] for c in (await http.get("/api/chat/channels")).json()["items"]]
        for method, path in (("GET", "messages"), ("POST", "join"), ("POST", "read")):
            assert (await http.request(method, f"/api/chat/channels/{direct_id}/{path}")).status_code == 404
        assert (await http.post(f"/api/chat/channels/{direct_id}/messages", json={"text": "spia"})).status_code == 404
    async with other.http("owner") as http:
        assert (await http.post(f"/api/chat/channels/{channel['id']}/join")).status_code == 404
        assert (await http.get("/api/chat/channels")).json()["items"] == []
    assert admin.id  # the admin is a bystander above
    async with gateway.connect() as conn:
        bodies = await conn.fetch("SELECT details::text AS d FROM audit_log WHERE tenant_id = $1", kit.id)
    assert all("in privato" not in r["d"] for r in bodies)


async def test_notifications_listing_and_reading(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("supervisor", "agent"))
    agent, supervisor = kit.members["agent"], kit.members["supervisor"]
    async with gateway.connect() as conn:
        mine = [await conn.fetchval("INSERT INTO notifications (tenant_id, user_id, kind, data) VALUES ($1, $2, "
                                    "'mention', $3) RETURNING id", kit.id, agent.id, {"n": n}) for n in range(3)]
        theirs = await conn.fetchval("INSERT INTO notifications (tenant_id, user_id, kind) VALUES ($1, $2, 'mention') "
                                     "RETURNING id", kit.id, supervisor.id)
    async with kit.http("agent") as http:
        body = (await http.get("/api/notifications")).json()
        assert [n["id"] for n in body["items"]] == mine[::-1] and body["unread_count"] == 3
        assert set(body["items"][0]) == {"id", "kind", "conversation_id", "data", "read_at", "created_at"}
        assert (await http.get("/api/notifications", params={"before": mine[1]})).json()["items"][0]["id"] == mine[0]
        assert (await http.post(f"/api/notifications/{theirs}/read")).status_code == 404
        assert (await http.post("/api/notifications/abc/read")).status_code == 404
        assert (await http.post(f"/api/notifications/{mine[0]}/read")).status_code == 204
        unread = (await http.get("/api/notifications", params={"unread": "true"})).json()
        assert [n["id"] for n in unread["items"]] == [mine[2], mine[1]] and unread["unread_count"] == 2
        assert (await http.get("/api/notifications", params={"unread": "maybe"})).status_code == 422
        assert (await http.post("/api/notifications/read-all")).status_code == 204
        assert (await http.get("/api/notifications")).json()["unread_count"] == 0
    async with kit.http("supervisor") as http:
        assert (await http.get("/api/notifications")).json()["unread_count"] == 1


async def test_audit_log_is_for_admins(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("admin", "supervisor"))
    async with kit.http("supervisor") as http:
        await http.post("/api/canned", json={"shortcut": "ciao", "title": "Ciao", "body": "Ciao!"})
        assert (await http.get("/api/audit")).status_code == 403
    items = await _audit(kit, action="canned")
    assert [i["action"] for i in items] == ["canned.create"]
    assert items[0]["actor"]["id"] == str(kit.members["supervisor"].id)
    assert items[0]["actor"]["name"] == kit.members["supervisor"].name
    assert set(items[0]) == {"id", "actor", "action", "subject", "details", "created_at"}
    assert len(await _audit(kit, limit="1")) == 1
    async with kit.http("admin") as http:
        assert (await http.get("/api/audit", params={"before": "-1"})).status_code == 422
        assert (await http.get("/api/audit", params={"limit": "1000"})).status_code == 422
