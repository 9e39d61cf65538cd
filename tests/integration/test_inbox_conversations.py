"""The inbox REST API for conversations and messages, through the real Serve app with the Cloud
API simulator as Meta: what agents see, what they may do, what reaches WhatsApp, and what is refused."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import ray

from actors import NAMESPACE
from bench.simulator import payloads
from engine.sharding import shard_name, shard_of
from tests.api_harness import Gateway, TenantKit

pytestmark = pytest.mark.integration


def new_wa_id() -> str:
    return f"39333{secrets.randbelow(10**7):07d}"


async def eventually(check: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def customer(kit: TenantKit, text: str = "Buongiorno", *, name: str = "Cliente",
                   timestamp: float | None = None) -> tuple[str, uuid.UUID]:
    """A customer writes in. Posted again (same wamid: a no-op redelivery) while the Gateway's
    route cache, refreshed at most once a second, does not know the new tenant's number yet."""
    wa_id, wamid = new_wa_id(), f"wamid.{uuid.uuid4().hex}"
    for _ in range(10):
        assert kit.inbound(wa_id, text, name=name, timestamp=timestamp, wamid=wamid).status_code == 200
        try:
            return wa_id, await kit.conversation_of(wa_id, timeout_s=1.5)
        except AssertionError:
            continue
    raise AssertionError(f"the Gateway never stored the message from {wa_id}")


async def team_of(kit: TenantKit, *roles: str, name: str | None = None) -> uuid.UUID:
    async with kit.gateway.connect() as conn:
        team = await conn.fetchval("INSERT INTO teams (tenant_id, name) VALUES ($1, $2) RETURNING id", kit.id,
                                   name or f"Team {uuid.uuid4().hex[:6]}")
        for role in roles:
            await conn.execute("INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)",
                               kit.id, team, kit.members[role].id)
    return team


async def sql(kit: TenantKit, query: str, *args: Any) -> Any:
    async with kit.gateway.connect() as conn:
        return await conn.fetchval(query, *args)


async def visible_to_agent(kit: TenantKit, text: str = "Buongiorno") -> tuple[str, uuid.UUID]:
    """A conversation in a team the kit's agent belongs to."""
    wa_id, conversation = await customer(kit, text)
    team = await team_of(kit, "agent")
    await sql(kit, "UPDATE conversations SET team_id = $2 WHERE id = $1", conversation, team)
    return wa_id, conversation


# --- listing and reading -------------------------------------------------------------------------

async def test_supervisors_list_every_conversation_newest_first_with_stable_pages(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    now = time.time()  # Meta's timestamps have whole seconds: one apart each, so the order is known
    made = [await customer(kit, f"messaggio {i}", name=f"Persona {i}", timestamp=now - 60 + i) for i in range(3)]
    async with kit.http("supervisor") as http:
        everything = (await http.get("/api/conversations")).json()
        assert [c["id"] for c in everything["items"]] == [str(c) for _, c in reversed(made)]
        assert everything["next_cursor"] is None
        first = everything["items"][0]
        assert first["status"] == "open" and first["unread_count"] == 1 and first["window_open"] is True
        assert first["contact"] == {"id": first["contact"]["id"], "wa_id": made[2][0], "username": None,
                                    "bsuid": None, "name": "Persona 2"}
        assert first["channel"]["display_phone"] == kit.display_phone
        assert first["last_message"]["text"] == "messaggio 2" and first["last_message"]["direction"] == "inbound"
        assert first["assignee"] is None and first["team"] is None and first["labels"] == []

        seen: list[str] = []
        cursor = None
        while True:
            page = (await http.get("/api/conversations", params={"limit": 1, **({"cursor": cursor} if cursor else {})})).json()
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [c["id"] for c in everything["items"]]

        by_text = (await http.get("/api/conversations", params={"q": "messaggio 1"})).json()["items"]
        assert str(made[1][1]) in [c["id"] for c in by_text]
        by_name = (await http.get("/api/conversations", params={"q": "persona 0"})).json()["items"]
        assert [c["id"] for c in by_name] == [str(made[0][1])]
        by_number = (await http.get("/api/conversations", params={"q": made[2][0][-6:]})).json()["items"]
        assert [c["id"] for c in by_number] == [str(made[2][1])]
        one = await http.get(f"/api/conversations/{made[0][1]}")
        assert one.status_code == 200 and one.json()["id"] == str(made[0][1])

        for bad in ({"limit": 0}, {"limit": 101}, {"limit": "many"}, {"status": "gone"}, {"scope": "everyone"},
                    {"cursor": "not-a-cursor"}, {"team_id": "nope"}, {"q": "x" * 201}):
            answer = await http.get("/api/conversations", params=bad)
            assert answer.status_code == 422, bad
            assert set(answer.json()) == {"error", "code"}


async def test_agents_see_only_their_teams_and_their_own_conversations(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    _, theirs = await visible_to_agent(kit)
    _, elsewhere = await customer(kit)
    _, mine = await customer(kit)
    await sql(kit, "UPDATE conversations SET assignee_id = $2 WHERE id = $1", mine, kit.members["agent"].id)
    async with kit.http("agent") as http:
        listed = {c["id"] for c in (await http.get("/api/conversations")).json()["items"]}
        assert listed == {str(theirs), str(mine)}
        assert [c["id"] for c in (await http.get("/api/conversations", params={"scope": "mine"})).json()["items"]] == [str(mine)]
        assert [c["id"] for c in (await http.get("/api/conversations", params={"scope": "unassigned"})).json()["items"]] == [str(theirs)]
        # invisible and nonexistent read the same
        hidden, missing = await http.get(f"/api/conversations/{elsewhere}"), await http.get(f"/api/conversations/{uuid.uuid4()}")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["code"] == missing.json()["code"] == "NotFound"
        assert (await http.get(f"/api/conversations/{elsewhere}/messages")).status_code == 404
        assert (await http.post(f"/api/conversations/{elsewhere}/read")).status_code == 404
        assert (await http.get("/api/conversations/not-a-uuid")).status_code == 404
    other = await gateway.tenant()
    async with other.http("owner") as http:
        assert (await http.get(f"/api/conversations/{theirs}")).status_code == 404
        assert (await http.get("/api/conversations")).json()["items"] == []
    async with gateway.client() as anonymous:
        assert (await anonymous.get("/api/conversations")).status_code == 401


async def test_reading_a_conversation_zeroes_unread_here_and_in_its_shard(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    wa_id, conversation = await visible_to_agent(kit, "uno")
    assert kit.inbound(wa_id, "due").status_code == 200
    shard = ray.get_actor(shard_name(shard_of(conversation, gateway.settings.conversation_shards)), namespace=NAMESPACE)

    async def shard_unread() -> Any:
        state = await shard.get.remote(str(conversation))
        return state and state["unread_count"]

    await eventually(lambda: _equals(shard_unread(), 2), what="the shard to count two unread")
    async with kit.http("agent") as http:
        assert (await http.get(f"/api/conversations/{conversation}")).json()["unread_count"] == 2
        answer = await http.post(f"/api/conversations/{conversation}/read")
        assert answer.status_code == 204
        assert (await http.get(f"/api/conversations/{conversation}")).json()["unread_count"] == 0
    await eventually(lambda: _equals(shard_unread(), 0), what="the shard to follow the read")
    assert await sql(kit, "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'conversation.read'",
                     kit.id) == 1


async def _equals(value: Any, expected: Any) -> bool:
    return (await value) == expected


# --- sending ------------------------------------------------------------------------------------

async def test_an_agent_reply_is_queued_then_reaches_whatsapp(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    wa_id, conversation = await visible_to_agent(kit, "Avete la taglia M?")
    agent = kit.members["agent"]
    script = "Sì! <script>alert('x')</script> & grazie"
    async with kit.http("agent") as http:
        inbound = (await http.get(f"/api/conversations/{conversation}/messages")).json()["items"][0]
        answer = await http.post(f"/api/conversations/{conversation}/messages",
                                 json={"type": "text", "text": script, "reply_to": inbound["id"]})
        assert answer.status_code == 201, answer.text
        sent = answer.json()
        assert sent["status"] == "queued" and sent["direction"] == "outbound" and sent["text"] == script
        assert sent["author"] == {"id": str(agent.id), "name": agent.name}
        assert sent["reply_to"] == {"id": inbound["id"], "text": "Avete la taglia M?", "direction": "inbound"}
        records = await eventually(lambda: gateway.simulator.sends_to(wa_id), what="the send at the simulator")
        assert records[0].text == script
        assert records[0].payload["context"]["message_id"] == inbound["wamid"]

        async def delivered() -> Any:
            page = (await http.get(f"/api/conversations/{conversation}/messages", params={"after": inbound["id"]})).json()
            return page["items"] and page["items"][0]["status"] in ("sent", "delivered", "read") and page

        page = await eventually(delivered, what="the message to be sent")
        assert page["items"][0]["wamid"] == records[0].wamid and page["has_more"] is False
        listed = (await http.get(f"/api/conversations/{conversation}")).json()
        assert listed["last_message"]["id"] == sent["id"] and listed["unread_count"] == 0
    assert await sql(kit, "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'message.send'", kit.id) == 1
    # a person answered: the assistant is paused there, its mode untouched
    assert await sql(kit, "SELECT ai_state || '/' || ai_mode FROM conversations WHERE id = $1", conversation) == "paused/auto"


async def test_reactions_are_sent_and_folded_into_the_message(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    wa_id, conversation = await visible_to_agent(kit, "Grazie mille")
    async with kit.http("agent") as http:
        inbound = (await http.get(f"/api/conversations/{conversation}/messages")).json()["items"][0]
        answer = await http.post(f"/api/conversations/{conversation}/messages",
                                 json={"type": "reaction", "message_id": inbound["id"], "emoji": "👍"})
        assert answer.status_code == 201, answer.text
        records = await eventually(lambda: gateway.simulator.sends_to(wa_id), what="the reaction at the simulator")
        assert await sql(kit, "SELECT ai_state FROM conversations WHERE id = $1", conversation) == "active"
        assert records[0].payload["reaction"] == {"message_id": inbound["wamid"], "emoji": "👍"}
        page = (await http.get(f"/api/conversations/{conversation}/messages")).json()
        assert [m["id"] for m in page["items"]] == [inbound["id"]]  # a reaction is not a message of its own
        assert page["items"][0]["reactions"] == [{"emoji": "👍", "direction": "outbound"}]
        for bad in ({"type": "reaction", "message_id": 999999999, "emoji": "👍"},
                    {"type": "reaction", "message_id": inbound["id"], "emoji": "a b"}):
            assert (await http.post(f"/api/conversations/{conversation}/messages", json=bad)).status_code in (404, 422)


async def test_a_closed_window_refuses_free_text_but_not_a_template(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    wa_id, conversation = await visible_to_agent(kit)
    await sql(kit, "UPDATE conversations SET last_inbound_at = now() - interval '25 hours' WHERE id = $1", conversation)
    components = [{"type": "HEADER", "format": "TEXT", "text": "Ordine {{1}}"},
                  {"type": "BODY", "text": "Ciao {{1}}, il tuo ordine è {{2}}."}, {"type": "FOOTER", "text": "Negozio"}]
    template_id = await sql(kit, "INSERT INTO templates (tenant_id, waba_id, name, language, category, status, components) "
                                 "VALUES ($1, $2, 'order_update', 'it', 'UTILITY', 'APPROVED', $3) RETURNING id",
                            kit.id, kit.waba_id, components)
    await sql(kit, "INSERT INTO templates (tenant_id, waba_id, name, language, status) "
                   "VALUES ($1, $2, 'draft_one', 'it', 'PENDING')", kit.id, kit.waba_id)
    async with kit.http("agent") as http:
        refused = await http.post(f"/api/conversations/{conversation}/messages", json={"type": "text", "text": "Ciao"})
        assert refused.status_code == 409 and refused.json()["code"] == "ServiceWindowClosed"
        listed = (await http.get(f"/api/conversations/{conversation}")).json()
        assert listed["window_open"] is False and listed["window_expires_at"] is not None

        approved = (await http.get("/api/templates", params={"status": "APPROVED"})).json()["items"]
        assert [(t["id"], t["name"], t["params"]) for t in approved] == [(template_id, "order_update", 3)]
        preview = await http.post(f"/api/templates/{template_id}/preview", json={"params": ["42", "Anna", "spedito"]})
        assert preview.json() == {"header": "Ordine 42", "body": "Ciao Anna, il tuo ordine è spedito.",
                                  "footer": "Negozio", "buttons": []}
        wrong = await http.post(f"/api/templates/{template_id}/preview", json={"params": ["42"]})
        assert wrong.status_code == 422

        answer = await http.post(f"/api/conversations/{conversation}/messages", json={
            "type": "template", "name": "order_update", "language": "it", "params": ["42", "Anna", "spedito"]})
        assert answer.status_code == 201, answer.text
        sent = answer.json()
        assert sent["template"] == {"name": "order_update", "language": "it", "params": ["42", "Anna", "spedito"]}
        assert "Ciao Anna" in sent["text"]
        records = await eventually(lambda: gateway.simulator.sends_to(wa_id), what="the template at the simulator")
        assert records[0].type == "template" and records[0].payload["template"]["name"] == "order_update"
        pending = await http.post(f"/api/conversations/{conversation}/messages",
                                  json={"type": "template", "name": "draft_one", "language": "it"})
        assert pending.status_code == 422


async def test_bad_sends_are_refused_with_readable_errors(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    _, conversation = await visible_to_agent(kit)
    url = f"/api/conversations/{conversation}/messages"
    async with kit.http("agent") as http:
        for body in (b"{not json", b"[]", b"", b'{"type": "text"}', b'{"type": "text", "text": 5}',
                     b'{"type": "fax", "text": "x"}', b'{"type": "text", "text": "   "}',
                     b'{"type": "text", "text": "ciao", "extra": 1}'):
            answer = await http.post(url, content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 422, body
            assert answer.json()["code"] == "InvalidInput" and answer.json()["error"]
        too_long = await http.post(url, json={"type": "text", "text": "x" * 4097})
        assert too_long.status_code == 422
        huge = await http.post(url, content=b'{"type": "text", "text": "' + b"x" * 300_000 + b'"}',
                               headers={"content-type": "application/json"})
        assert huge.status_code == 413 and huge.json()["code"] == "TooLarge"
    async with kit.http("agent") as http:
        assert (await http.post(f"/api/conversations/{uuid.uuid4()}/messages",
                                json={"type": "text", "text": "ciao"})).status_code == 404
    assert await sql(kit, "SELECT count(*) FROM messages WHERE conversation_id = $1 AND direction = 'outbound'",
                     conversation) == 0


async def test_each_agent_has_a_send_rate_limit(gateway: Gateway) -> None:
    import redis.asyncio as aioredis

    from engine.inbox.messages import SEND_LIMIT
    from engine.ratelimit import RateLimiter

    kit = await gateway.tenant()
    _, conversation = await visible_to_agent(kit)
    url = f"/api/conversations/{conversation}/messages"
    async with kit.http("agent") as http:
        for i in range(3):
            assert (await http.post(url, json={"type": "text", "text": f"n. {i}"})).status_code == 201
        # the rest of the window's allowance used up directly (so the test does not race the clock)
        assert gateway.settings.redis_url is not None
        redis = aioredis.from_url(gateway.settings.redis_url.get_secret_value())
        try:
            limiter = RateLimiter(redis)
            for _ in range(SEND_LIMIT.limit - 3):
                await limiter.hit(SEND_LIMIT, f"{kit.id}:{kit.members['agent'].id}")
        finally:
            await redis.aclose()
        limited = await http.post(url, json={"type": "text", "text": "uno di troppo"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["code"] == "RateLimited"
    async with kit.http("supervisor") as http:  # the limit is the agent's, not the conversation's
        assert (await http.post(url, json={"type": "text", "text": "io posso"})).status_code == 201
    assert await sql(kit, "SELECT count(*) FROM messages WHERE conversation_id = $1 AND direction = 'outbound'",
                     conversation) == 4


# --- media --------------------------------------------------------------------------------------

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


async def test_an_uploaded_image_is_sent_and_served_back(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    wa_id, conversation = await visible_to_agent(kit)
    url = f"/api/conversations/{conversation}/media"
    async with kit.http("agent") as http:
        answer = await http.post(url, files={"file": ("foto.png", PNG, "image/png")}, data={"caption": "Eccola"})
        assert answer.status_code == 201, answer.text
        message = answer.json()
        assert message["type"] == "image" and message["text"] == "Eccola" and message["status"] == "queued"
        assert message["media"]["mime_type"] == "image/png" and message["media"]["size"] == len(PNG)
        records = await eventually(lambda: gateway.simulator.sends_to(wa_id), what="the image at the simulator")
        assert records[0].type == "image" and records[0].payload["image"]["caption"] == "Eccola"
        served = await http.get(message["media"]["url"])
        assert served.status_code == 200 and served.content == PNG
        assert served.headers["content-type"] == "image/png" and served.headers["x-content-type-options"] == "nosniff"

        big = await http.post(url, files={"file": ("big.jpg", b"\xff" * (5 * 1024 * 1024 + 1), "image/jpeg")})
        assert big.status_code == 413 and big.json()["code"] == "TooLarge"
        html = await http.post(url, files={"file": ("x.html", b"<script>", "text/html")})
        assert html.status_code == 422
        not_multipart = await http.post(url, json={"file": "x"})
        assert not_multipart.status_code == 422
        two_files = await http.post(url, files=[("file", ("a.png", PNG, "image/png")), ("file", ("b.png", PNG, "image/png"))])
        assert two_files.status_code == 422 and two_files.json()["code"] == "InvalidInput"
        garbage = await http.post(url, content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"})
        assert garbage.status_code == 422
    other = await gateway.tenant()
    async with other.http("owner") as http:
        assert (await http.get(message["media"]["url"])).status_code == 404
    agent2 = await kit.add_member("agent")
    async with kit.gateway.client(agent2.token) as http:  # same tenant, not their conversation
        assert (await http.get(message["media"]["url"])).status_code == 404


# --- assignment, status, labels, notes, contacts ------------------------------------------------

async def test_assignment_rules_and_notifications(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    _, conversation = await visible_to_agent(kit)
    agent, colleague = kit.members["agent"], await kit.add_member("agent")
    url = f"/api/conversations/{conversation}/assign"
    async with kit.gateway.client(colleague.token) as http:  # not in the team: cannot see it
        assert (await http.post(url, json={"assignee_id": str(colleague.id)})).status_code == 404
    async with kit.http("agent") as http:
        assert (await http.post(url, json={"assignee_id": str(colleague.id)})).status_code == 403
        assert (await http.post(url, json={"assignee_id": str(agent.id), "team_id": None})).status_code == 403
        taken = await http.post(url, json={"assignee_id": str(agent.id)})
        assert taken.status_code == 200 and taken.json()["assignee"] == {"id": str(agent.id), "name": agent.name}
        assert (await http.post(url, json={"assignee_id": None})).status_code == 403
        assert (await http.post(url, json="nope")).status_code == 422
    async with kit.http("supervisor") as http:
        moved = await http.post(url, json={"assignee_id": str(colleague.id)})
        assert moved.status_code == 200 and moved.json()["assignee"]["id"] == str(colleague.id)
        assert (await http.post(url, json={"assignee_id": str(uuid.uuid4())})).status_code == 404
        other = await gateway.tenant()
        assert (await http.post(url, json={"assignee_id": str(other.members["agent"].id)})).status_code == 404
    async with kit.http("agent") as http:  # no longer theirs, and the team still shows it
        again = await http.post(url, json={"assignee_id": str(agent.id)})
        assert again.status_code == 409
    kinds = await sql(kit, "SELECT array_agg(kind) FROM notifications WHERE tenant_id = $1 AND user_id = $2",
                      kit.id, colleague.id)
    assert kinds == ["assignment"]


async def test_a_team_conversation_is_assigned_automatically_to_an_online_member(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    _, conversation = await customer(kit)
    team = await team_of(kit, "agent")
    await sql(kit, "UPDATE users SET presence = 'online', capacity = 1 WHERE id = $1", kit.members["agent"].id)
    async with kit.http("supervisor") as http:
        moved = await http.post(f"/api/conversations/{conversation}/assign", json={"assignee_id": None, "team_id": str(team)})
        assert moved.status_code == 200
        body = moved.json()
        assert body["team"]["id"] == str(team) and body["assignee"]["id"] == str(kit.members["agent"].id)
        _, second = await customer(kit)
        queued = (await http.post(f"/api/conversations/{second}/assign",
                                  json={"assignee_id": None, "team_id": str(team)})).json()
        assert queued["assignee"] is None  # the only member is full: it waits in the queue
        # resolving the first frees room; the waiting one is assigned
        resolved = await http.patch(f"/api/conversations/{conversation}", json={"status": "resolved"})
        assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
        assert (await http.get(f"/api/conversations/{second}")).json()["assignee"]["id"] == str(kit.members["agent"].id)


async def test_status_snooze_and_ai_mode(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    _, conversation = await visible_to_agent(kit)
    url = f"/api/conversations/{conversation}"
    async with kit.http("agent") as http:
        snoozed = await http.patch(url, json={"snoozed_until": "2099-01-01T00:00:00Z"})
        assert snoozed.status_code == 422  # more than a year away
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        snoozed = await http.patch(url, json={"status": "snoozed", "snoozed_until": later})
        assert snoozed.status_code == 200 and snoozed.json()["status"] == "snoozed" and snoozed.json()["snoozed_until"]
        reopened = await http.patch(url, json={"status": "open", "ai_mode": "off"})
        assert reopened.json()["status"] == "open" and reopened.json()["snoozed_until"] is None
        assert reopened.json()["ai_mode"] == "off"
        for bad in ({}, {"status": "closed"}, {"ai_mode": "smart"}, {"status": "snoozed"},
                    {"status": "open", "snoozed_until": later}, {"owner": "me"}):
            assert (await http.patch(url, json=bad)).status_code == 422, bad
        assert [c["id"] for c in (await http.get("/api/conversations", params={"status": "open"})).json()["items"]] == [str(conversation)]
    actions = await sql(kit, "SELECT array_agg(action ORDER BY id) FROM audit_log WHERE tenant_id = $1 AND subject = $2",
                        kit.id, str(conversation))
    assert actions == ["conversation.update", "conversation.update"]


async def test_labels_are_managed_by_supervisors_and_put_on_conversations(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    _, conversation = await visible_to_agent(kit)
    async with kit.http("agent") as http:
        assert (await http.post("/api/labels", json={"name": "VIP", "color": "#ff0000"})).status_code == 403
    async with kit.http("supervisor") as http:
        created = await http.post("/api/labels", json={"name": "VIP", "color": "#FF0000"})
        assert created.status_code == 201
        label = created.json()
        assert label["color"] == "#ff0000"
        assert (await http.post("/api/labels", json={"name": "VIP"})).status_code == 409
        assert (await http.post("/api/labels", json={"name": "x", "color": "red"})).status_code == 422
        assert (await http.post("/api/labels", json={"name": ""})).status_code == 422
        renamed = await http.patch(f"/api/labels/{label['id']}", json={"name": "Cliente VIP"})
        assert renamed.json()["name"] == "Cliente VIP"
    async with kit.http("agent") as http:
        assert [item["id"] for item in (await http.get("/api/labels")).json()["items"]] == [label["id"]]
        labelled = await http.post(f"/api/conversations/{conversation}/labels", json={"label_id": label["id"]})
        assert labelled.status_code == 200
        assert labelled.json()["labels"] == [{"id": label["id"], "name": "Cliente VIP", "color": "#ff0000"}]
        filtered = (await http.get("/api/conversations", params={"label_id": label["id"]})).json()["items"]
        assert [c["id"] for c in filtered] == [str(conversation)]
        assert (await http.post(f"/api/conversations/{conversation}/labels",
                                json={"label_id": str(uuid.uuid4())})).status_code == 404
        removed = await http.delete(f"/api/conversations/{conversation}/labels/{label['id']}")
        assert removed.json()["labels"] == []
    async with kit.http("supervisor") as http:
        assert (await http.delete(f"/api/labels/{label['id']}")).status_code == 204
        assert (await http.delete(f"/api/labels/{label['id']}")).status_code == 404


async def test_notes_with_mentions_notify_the_mentioned(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    _, conversation = await visible_to_agent(kit)
    supervisor = kit.members["supervisor"]
    admin = kit.members["admin"]
    local = supervisor.email.split("@")[0]
    text = f"@{local} guarda qui <b>subito</b>"
    async with kit.http("agent") as http:
        answer = await http.post(f"/api/conversations/{conversation}/notes",
                                 json={"text": text, "mentions": [str(admin.id)]})
        assert answer.status_code == 201, answer.text
        note = answer.json()
        assert note["text"] == text and note["author"]["id"] == str(kit.members["agent"].id)
        assert {m["id"] for m in note["mentions"]} == {str(supervisor.id), str(admin.id)}
        listed = (await http.get(f"/api/conversations/{conversation}/notes")).json()["items"]
        assert [n["id"] for n in listed] == [note["id"]]
        assert (await http.post(f"/api/conversations/{conversation}/notes", json={"text": ""})).status_code == 422
        assert (await http.post(f"/api/conversations/{conversation}/notes", json={"text": "x" * 10001})).status_code == 422
        assert (await http.post(f"/api/conversations/{conversation}/notes",
                                json={"text": "ciao", "mentions": [str(uuid.uuid4())]})).status_code == 422
    for member in (supervisor, admin):
        assert await sql(kit, "SELECT kind FROM notifications WHERE tenant_id = $1 AND user_id = $2",
                         kit.id, member.id) == "mention"
    assert await sql(kit, "SELECT count(*) FROM notifications WHERE user_id = $1", kit.members["agent"].id) == 0


async def test_a_customer_known_only_by_username_is_shown_found_and_answered(gateway: Gateway) -> None:
    """A customer who adopted a WhatsApp username writes without a phone number: the inbox shows
    and finds them by username, and the agent's reply goes to their BSUID ("recipient", no "to")."""
    kit = await gateway.tenant()
    bsuid, wamid = f"IT.{secrets.randbelow(10**19):019d}", f"wamid.{uuid.uuid4().hex}"
    message = payloads.text_message(bsuid, "Posso ritirare oggi?", wamid=wamid)
    body = payloads.inbound(message, waba_id=kit.waba_id, phone_number_id=kit.phone_number_id,
                            display_phone_number=kit.display_phone, username="giulia.b")
    conversation = None
    for _ in range(10):  # the Gateway's route cache may not know the new tenant's number yet
        assert kit.post_webhook(body).status_code == 200
        conversation = await sql(kit, "SELECT v.id FROM conversations v JOIN contacts c ON c.id = v.contact_id "
                                      "WHERE v.tenant_id = $1 AND c.bsuid = $2", kit.id, bsuid)
        if conversation is not None:
            break
        await asyncio.sleep(1.0)
    assert conversation is not None, "the username-only message was never stored"
    team = await team_of(kit, "agent")
    await sql(kit, "UPDATE conversations SET team_id = $2 WHERE id = $1", conversation, team)

    async with kit.http("agent") as http:
        shown = (await http.get(f"/api/conversations/{conversation}")).json()["contact"]
        assert {k: shown[k] for k in ("wa_id", "username", "bsuid")} == {"wa_id": None, "username": "giulia.b",
                                                                        "bsuid": bsuid}
        found = (await http.get("/api/conversations", params={"q": "@giulia.b"})).json()["items"]
        assert [c["id"] for c in found] == [str(conversation)]
        contacts = (await http.get("/api/contacts", params={"q": "@giulia"})).json()["items"]
        assert [(c["wa_id"], c["username"], c["bsuid"]) for c in contacts] == [(None, "giulia.b", bsuid)]
        answer = await http.post(f"/api/conversations/{conversation}/messages", json={"type": "text", "text": "Certo!"})
        assert answer.status_code == 201, answer.text
        records = await eventually(lambda: gateway.simulator.sends_to(bsuid), what="the send at the simulator")
        assert (records[0].addressed_by, records[0].to, records[0].text) == ("recipient", None, "Certo!")
        assert "to" not in records[0].payload and records[0].payload["recipient"] == bsuid


async def test_contacts_are_read_by_agents_and_edited_by_supervisors(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    wa_id, conversation = await visible_to_agent(kit)
    await customer(kit, name="Zeta")
    async with kit.http("agent") as http:
        listed = (await http.get("/api/contacts", params={"limit": 1})).json()
        assert len(listed["items"]) == 1 and listed["next_cursor"]
        rest = (await http.get("/api/contacts", params={"cursor": listed["next_cursor"]})).json()
        assert len(rest["items"]) == 1 and rest["items"][0]["id"] != listed["items"][0]["id"]
        found = (await http.get("/api/contacts", params={"q": wa_id})).json()["items"]
        assert [c["wa_id"] for c in found] == [wa_id]
        contact_id = found[0]["id"]
        contact = (await http.get(f"/api/contacts/{contact_id}")).json()
        assert contact["conversations"] == [{"id": str(conversation), "status": "open",
                                             "last_message_at": contact["conversations"][0]["last_message_at"]}]
        assert (await http.patch(f"/api/contacts/{contact_id}", json={"display_name": "Anna"})).status_code == 403
    async with kit.http("supervisor") as http:
        edited = await http.patch(f"/api/contacts/{contact_id}", json={
            "display_name": "Anna Rossi", "email": "anna@example.it", "notes": "preferisce WhatsApp",
            "attributes": {"tier": "gold"}})
        assert edited.status_code == 200, edited.text
        assert edited.json()["display_name"] == "Anna Rossi" and edited.json()["attributes"] == {"tier": "gold"}
        assert (await http.get(f"/api/conversations/{conversation}")).json()["contact"]["name"] == "Anna Rossi"
        for bad in ({"email": "not an email"}, {"notes": "x" * 10001}, {"wa_id": "123"}, {}):
            assert (await http.patch(f"/api/contacts/{contact_id}", json=bad)).status_code == 422, bad
        assert (await http.get(f"/api/contacts/{uuid.uuid4()}")).status_code == 404


async def test_live_events_name_their_audience(gateway: Gateway) -> None:
    import redis.asyncio as aioredis

    from engine import events

    kit = await gateway.tenant()
    _, conversation = await visible_to_agent(kit)
    async with kit.http("agent") as http:
        await http.post(f"/api/conversations/{conversation}/read")
        await http.post(f"/api/conversations/{conversation}/notes",
                        json={"text": f"@{kit.members['admin'].email.split('@')[0]} ciao"})
        await http.post(f"/api/conversations/{conversation}/messages", json={"type": "text", "text": "ciao"})
    assert gateway.settings.redis_url is not None
    client = aioredis.from_url(gateway.settings.redis_url.get_secret_value())
    try:
        entries = await client.xrange(events.stream_key(kit.id))
    finally:
        await client.aclose()
    import orjson

    seen = [(e[b"type"].decode(), orjson.loads(e[b"data"])) for _, e in entries]
    kinds = [k for k, _ in seen]
    for kind in ("conversation.updated", "note.created", "notification.created"):
        assert kind in kinds, kinds
    outbound = [d for k, d in seen if k == "message.created" and d.get("direction") == "outbound"]
    assert outbound and outbound[0]["conversation_id"] == str(conversation) and "team_id" in outbound[0]
    notification = next(d for k, d in seen if k == "notification.created")
    assert notification["user_ids"] == [str(kit.members["admin"].id)]


async def test_inbound_media_is_served_once_fetched(gateway: Gateway) -> None:
    import hashlib

    from bench.simulator import payloads

    kit = await gateway.tenant()
    wa_id, conversation = await visible_to_agent(kit)
    media_id = gateway.simulator.add_media(PNG, "image/png", phone_number_id=kit.phone_number_id)
    message = payloads.image_message(wa_id, media_id, mime_type="image/png", caption="la foto",
                                     sha256=hashlib.sha256(PNG).hexdigest())
    assert kit.post_webhook(payloads.inbound(message, waba_id=kit.waba_id, phone_number_id=kit.phone_number_id,
                                             display_phone_number=kit.display_phone)).status_code == 200
    async with kit.http("agent") as http:
        async def image() -> Any:
            items = (await http.get(f"/api/conversations/{conversation}/messages")).json()["items"]
            return items[-1]["type"] == "image" and items[-1]

        shown = await eventually(image, what="the inbound image")
        assert shown["text"] == "la foto" and shown["media"]["url"] == f"/api/media/{shown['media']['id']}"

        async def served() -> Any:
            answer = await http.get(shown["media"]["url"])
            assert answer.status_code in (200, 409), answer.text  # 409 while still being downloaded
            return answer.status_code == 200 and answer

        answer = await eventually(served, what="the image to be fetched from WhatsApp")
        assert answer.content == PNG and answer.headers["content-type"] == "image/png"
        assert (await http.get("/api/media/999999999")).status_code == 404
        assert (await http.get("/api/media/abc")).status_code == 404


async def test_message_pages_go_back_and_forward_by_id(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    wa_id, conversation = await visible_to_agent(kit, "0")
    for i in range(1, 5):
        assert kit.inbound(wa_id, str(i)).status_code == 200
    async with kit.http("agent") as http:
        url = f"/api/conversations/{conversation}/messages"
        await eventually(lambda: _count(http, url, 5), what="five messages")
        newest = (await http.get(url, params={"limit": 2})).json()
        assert [m["text"] for m in newest["items"]] == ["3", "4"] and newest["has_more"] is True
        older = (await http.get(url, params={"limit": 2, "before": newest["items"][0]["id"]})).json()
        assert [m["text"] for m in older["items"]] == ["1", "2"] and older["has_more"] is True
        oldest = (await http.get(url, params={"limit": 2, "before": older["items"][0]["id"]})).json()
        assert [m["text"] for m in oldest["items"]] == ["0"] and oldest["has_more"] is False
        newer = (await http.get(url, params={"after": oldest["items"][0]["id"], "limit": 3})).json()
        assert [m["text"] for m in newer["items"]] == ["1", "2", "3"] and newer["has_more"] is True
        for bad in ({"limit": 0}, {"limit": 201}, {"before": "x"}, {"before": 5, "after": 1}, {"after": -1}):
            assert (await http.get(url, params=bad)).status_code == 422, bad


async def _count(http: Any, url: str, n: int) -> bool:
    return len((await http.get(url)).json()["items"]) == n
