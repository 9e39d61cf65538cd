"""/ws through the real Serve app: inbound webhooks reach the sockets allowed to see them, and
nothing else does; resume after a close or a killed connection loses and repeats nothing; bad
tokens, garbage, floods and trimmed ids get the contract's answers.

"Nothing else arrives" is asserted by order, not by waiting: after the event under test, a
tenant-wide marker is published to the same stream; a socket that gets the marker first never
got the event (one stream, one reader loop, delivered in order)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from engine import events
from engine.auth.tokens import TokenKeys, issue_access
from engine.users import User
from tests.api_harness import Gateway, TenantKit

pytestmark = pytest.mark.integration

WAIT_S = 15  # a guard against hanging, never a claim about speed
_phones = iter(range(10_000_000))


def phone() -> str:
    return f"39347{next(_phones):07d}"


@pytest.fixture
async def redis(gateway: Gateway) -> AsyncIterator[Any]:
    assert gateway.settings.redis_url is not None
    client = aioredis.from_url(gateway.settings.redis_url.get_secret_value())
    try:
        yield client
    finally:
        await client.aclose()


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}

    async def frame(self) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.ws.recv(), WAIT_S))

    async def event(self) -> dict[str, Any]:
        """The next event frame (pongs and presence of others are skipped)."""
        while True:
            frame = await self.frame()
            if frame.get("type") not in ("pong", "presence"):
                return frame

    async def frames_until_marker(self, marker: str) -> list[dict[str, Any]]:
        got = []
        while True:
            frame = await self.frame()
            if frame.get("type") == "test.marker" and frame["data"].get("marker") == marker:
                return got
            got.append(frame)

    async def events_until_marker(self, marker: str) -> list[dict[str, Any]]:
        return [f for f in await self.frames_until_marker(marker) if f.get("type") not in ("pong", "presence")]

    async def closed_with(self) -> int:
        """The close code the server sent (reading, and skipping, anything before it)."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), WAIT_S)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code


def ws_url(gateway: Gateway, token: str | None, last_id: str | None = None) -> str:
    url = gateway.base_url.replace("http://", "ws://") + "/ws"
    params = [f"token={token}"] if token is not None else []
    if last_id is not None:
        params.append(f"last_id={last_id}")
    return url + ("?" + "&".join(params) if params else "")


async def open_socket(gateway: Gateway, token: str | None, last_id: str | None = None) -> Socket:
    socket = Socket(await connect(ws_url(gateway, token, last_id), open_timeout=WAIT_S, max_size=2**22))
    socket.hello = await socket.frame()
    assert socket.hello["type"] == "hello", socket.hello
    return socket


async def marker(redis: Any, kit: TenantKit) -> str:
    name = uuid.uuid4().hex
    assert await events.publish(redis, kit.id, "test.marker", {"marker": name}, maxlen=100_000)
    return name


async def inbound(kit: TenantKit, wa_id: str, text: str) -> None:
    """Post a signed inbound message and return once it is stored. A number added in the last
    seconds may be unknown to the Gateway's cached channel routes (its delivery is acknowledged
    and ignored), so the same delivery is posted again until it is stored; redelivery is a no-op."""
    wamid = f"wamid.live.{uuid.uuid4().hex}"
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        response = await asyncio.to_thread(kit.inbound, wa_id, text, wamid=wamid)
        assert response.status_code == 200, response.text
        async with kit.gateway.connect() as conn:
            if await conn.fetchval("SELECT count(*) FROM messages WHERE wamid = $1", wamid):
                return
        assert asyncio.get_running_loop().time() < deadline, "the delivery was never stored"
        await asyncio.sleep(0.5)


async def next_message(socket: Socket, text: str | None = None) -> dict[str, Any]:
    """The next message.created (with this text, if given: earlier ones are skipped)."""
    while True:
        frame = await socket.event()
        if frame["type"] == "message.created" and text in (None, frame["data"]["text"]):
            return frame


async def pong(socket: Socket) -> None:
    await socket.ws.send('{"type": "ping"}')
    while (await socket.frame())["type"] != "pong":
        pass


async def test_an_inbound_message_reaches_a_connected_supervisor(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    supervisor = await open_socket(gateway, kit.members["supervisor"].token)
    assert supervisor.hello["user_id"] == str(kit.members["supervisor"].id)
    await inbound(kit, wa := phone(), "Buongiorno, avete aperto?")
    frame = await next_message(supervisor)
    assert frame["data"]["text"] == "Buongiorno, avete aperto?"
    assert frame["data"]["conversation_id"] == str(await kit.conversation_of(wa))
    assert frame["id"]
    await supervisor.ws.close()


async def test_an_agent_gets_only_the_conversations_they_may_see(gateway: Gateway, redis: Any) -> None:
    kit = await gateway.tenant()
    agent = kit.members["agent"]
    teammate = await kit.add_member("agent")
    watcher = await open_socket(gateway, kit.members["supervisor"].token)
    agent_socket = await open_socket(gateway, agent.token)

    # neither assigned nor on a team of theirs: the supervisor hears it, the agent does not
    await inbound(kit, wa := phone(), "primo")
    assert (await next_message(watcher))["data"]["text"] == "primo"
    mark = await marker(redis, kit)
    assert await agent_socket.events_until_marker(mark) == []
    conversation = await kit.conversation_of(wa)

    # assigned to the agent (as the assignment service would: commit, then conversation.updated)
    async with gateway.connect() as conn:
        await conn.execute("UPDATE conversations SET assignee_id = $2 WHERE id = $1", conversation, agent.id)
    await events.publish(redis, kit.id, "conversation.updated",
                         {"conversation_id": str(conversation), "team_id": None, "assignee_id": str(agent.id)},
                         maxlen=gateway.settings.events_stream_maxlen)
    update = await agent_socket.event()
    assert update["type"] == "conversation.updated" and update["data"]["assignee_id"] == str(agent.id)
    await inbound(kit, wa, "secondo")
    assert (await next_message(agent_socket))["data"]["text"] == "secondo"

    # put on a team: its members hear of it too
    async with gateway.connect() as conn:
        team = await conn.fetchval("INSERT INTO teams (tenant_id, name) VALUES ($1, 'Vendite') RETURNING id", kit.id)
        await conn.execute("INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)",
                           kit.id, team, teammate.id)
        await conn.execute("UPDATE conversations SET team_id = $2 WHERE id = $1", conversation, team)
    await events.publish(redis, kit.id, "conversation.updated",
                         {"conversation_id": str(conversation), "team_id": str(team), "assignee_id": str(agent.id)},
                         maxlen=gateway.settings.events_stream_maxlen)
    assert (await agent_socket.event())["type"] == "conversation.updated"
    teammate_socket = await open_socket(gateway, teammate.token)
    await inbound(kit, wa, "terzo")
    assert (await next_message(teammate_socket))["data"]["text"] == "terzo"
    assert (await next_message(agent_socket))["data"]["text"] == "terzo"

    # unassigned and off the team: the agent hears of that change, then nothing more of it
    async with gateway.connect() as conn:
        await conn.execute("UPDATE conversations SET assignee_id = NULL, team_id = NULL WHERE id = $1", conversation)
    await events.publish(redis, kit.id, "conversation.updated",
                         {"conversation_id": str(conversation), "team_id": None, "assignee_id": None},
                         maxlen=gateway.settings.events_stream_maxlen)
    gone = await agent_socket.event()
    assert gone["type"] == "conversation.updated" and gone["data"]["assignee_id"] is None
    await inbound(kit, wa, "quarto")
    await next_message(watcher, "quarto")
    mark = await marker(redis, kit)
    assert [f["type"] for f in await agent_socket.events_until_marker(mark)] == []

    # events for named users reach only them
    await events.publish(redis, kit.id, "notification.created",
                         {"user_ids": [str(teammate.id)], "notification_id": 1, "kind": "mention"},
                         maxlen=gateway.settings.events_stream_maxlen)
    mark = await marker(redis, kit)
    # the teammate heard the conversation leave their team, not its next message; then their notification
    assert [f["type"] for f in await teammate_socket.events_until_marker(mark)] == \
        ["conversation.updated", "test.marker", "notification.created"]
    assert [f["type"] for f in await watcher.events_until_marker(mark)] == ["test.marker"]
    for socket in (watcher, agent_socket, teammate_socket):
        await socket.ws.close()


async def test_another_tenants_socket_hears_nothing(gateway: Gateway, redis: Any) -> None:
    ours, theirs = await gateway.tenant(), await gateway.tenant()
    our_socket = await open_socket(gateway, ours.members["owner"].token)
    their_socket = await open_socket(gateway, theirs.members["owner"].token)
    await inbound(ours, phone(), "solo per noi")
    assert (await next_message(our_socket))["data"]["text"] == "solo per noi"
    mark = await marker(redis, theirs)
    assert await their_socket.events_until_marker(mark) == []
    await our_socket.ws.close()
    await their_socket.ws.close()


async def test_resume_after_a_close_and_after_a_killed_connection_loses_and_repeats_nothing(
        gateway: Gateway, redis: Any) -> None:
    kit = await gateway.tenant()
    token = kit.members["supervisor"].token
    witness = await open_socket(gateway, token)  # stays connected: the truth of what was published
    wa = phone()

    socket = await open_socket(gateway, token)
    seen = []
    for text in ("uno", "due"):
        await inbound(kit, wa, text)
        seen.append(await next_message(socket))
    await socket.ws.close()

    for text in ("tre", "quattro"):
        await inbound(kit, wa, text)
    missed = [await next_message(witness) for _ in range(4)][2:]
    socket = await open_socket(gateway, token, last_id=seen[-1]["id"])
    assert socket.hello["last_id"] == seen[-1]["id"]
    mark = await marker(redis, kit)
    assert [f["id"] for f in await socket.events_until_marker(mark) if f["type"] == "message.created"] == \
        [f["id"] for f in missed]
    await witness.events_until_marker(mark)

    socket.ws.transport.abort()  # no close frame: as when a network drops or a replica is killed
    for text in ("cinque", "sei"):
        await inbound(kit, wa, text)
    missed_again = [await next_message(witness) for _ in range(2)]
    socket = await open_socket(gateway, token, last_id=missed[-1]["id"])
    mark = await marker(redis, kit)
    assert [(f["id"], f["data"]["text"]) for f in await socket.events_until_marker(mark)
            if f["type"] == "message.created"] == [(f["id"], f["data"]["text"]) for f in missed_again]
    await socket.ws.close()
    await witness.ws.close()


async def test_resuming_while_events_flow_joins_backlog_and_live_tail_exactly(gateway: Gateway, redis: Any) -> None:
    kit = await gateway.tenant()
    token = kit.members["admin"].token
    maxlen = gateway.settings.events_stream_maxlen
    start = await events.publish(redis, kit.id, "test.tick", {"n": -1}, maxlen=maxlen)
    published: list[str] = []

    async def publisher() -> None:
        for n in range(400):
            published.append(await events.publish(redis, kit.id, "test.tick", {"n": n}, maxlen=maxlen) or "")
            if n % 25 == 0:
                await asyncio.sleep(0)

    # reconnect repeatedly while the publisher runs, each time from the last id received
    task = asyncio.create_task(publisher())
    received: list[str] = []
    last = start
    while not task.done() or not received or received[-1] != published[-1]:
        socket = await open_socket(gateway, token, last_id=last)
        for _ in range(60):
            if task.done() and received and received[-1] == published[-1]:
                break
            frame = await socket.event()
            received.append(frame["id"])
            last = frame["id"]
        socket.ws.transport.abort()
    await task
    assert received == published


@pytest.mark.parametrize("case", ["missing", "garbage", "expired", "forged", "refresh-token", "deactivated"])
async def test_a_bad_token_is_closed_with_4401(gateway: Gateway, case: str) -> None:
    kit = await gateway.tenant(roles=("agent",))
    member = kit.members["agent"]
    user = User(member.id, kit.id, member.email, member.name, "agent")
    keys = TokenKeys.from_settings(gateway.settings)
    token: str | None = {
        "missing": None,
        "garbage": "not-a-token",
        "expired": issue_access(keys, user, now=datetime.now(timezone.utc) - timedelta(hours=2))[0],
        "forged": issue_access(TokenKeys("f" * 48, keys.access_ttl, keys.refresh_ttl), user)[0],
        "refresh-token": member.refresh_token,
        "deactivated": member.token,
    }[case]
    if case == "deactivated":
        async with gateway.connect() as conn:
            await conn.execute("UPDATE users SET active = false WHERE id = $1", member.id)
    ws = await connect(ws_url(gateway, token), open_timeout=WAIT_S)
    assert await Socket(ws).closed_with() == 4401


@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '{"type": "shout"}', '{"type": "typing"}',
                                   '{"type": "presence", "presence": "asleep"}', b"\x00\x01binary"])
async def test_a_garbage_frame_is_closed_with_1003(gateway: Gateway, frame: str | bytes) -> None:
    kit = await gateway.tenant(roles=("agent",))
    socket = await open_socket(gateway, kit.members["agent"].token)
    await pong(socket)
    await socket.ws.send(frame)
    assert await socket.closed_with() == 1003


async def test_an_oversize_frame_is_closed_with_1009(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("agent",))
    socket = await open_socket(gateway, kit.members["agent"].token)
    await socket.ws.send(orjson.dumps({"type": "ping", "pad": "x" * 100_000}).decode())
    assert await socket.closed_with() == 1009


async def test_a_flood_of_frames_is_closed_with_4408(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("agent",))
    socket = await open_socket(gateway, kit.members["agent"].token)
    try:
        for _ in range(500):
            await socket.ws.send('{"type": "ping"}')
    except ConnectionClosed:
        pass
    assert await socket.closed_with() == 4408


async def test_a_last_id_the_stream_no_longer_keeps_gets_resync(gateway: Gateway, redis: Any) -> None:
    kit = await gateway.tenant(roles=("supervisor",))
    token = kit.members["supervisor"].token
    first = await events.publish(redis, kit.id, "test.tick", {"n": 0}, maxlen=1000)
    for n in range(1, 5):
        await events.publish(redis, kit.id, "test.tick", {"n": n}, maxlen=1000)
    await redis.xtrim(events.stream_key(kit.id), maxlen=2, approximate=False)
    for last_id in (first, "garbage", "99999999999999-0"):
        socket = await open_socket(gateway, token, last_id=last_id)
        resync = await socket.frame()
        assert resync["type"] == "resync", last_id
        assert resync["last_id"] == socket.hello["last_id"] != last_id
        # and it continues live from there
        mark = await marker(redis, kit)
        assert await socket.events_until_marker(mark) == []
        await socket.ws.close()


async def test_a_team_member_connecting_later_learns_the_scope_from_postgresql(gateway: Gateway) -> None:
    kit = await gateway.tenant(roles=("supervisor", "agent"))
    agent = kit.members["agent"]
    await inbound(kit, wa := phone(), "prima")  # nobody of this tenant connected: nothing cached
    conversation = await kit.conversation_of(wa)
    async with gateway.connect() as conn:  # no event tells of this change
        team = await conn.fetchval("INSERT INTO teams (tenant_id, name) VALUES ($1, 'Assistenza') RETURNING id",
                                   kit.id)
        await conn.execute("INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)",
                           kit.id, team, agent.id)
        await conn.execute("UPDATE conversations SET team_id = $2 WHERE id = $1", conversation, team)
    socket = await open_socket(gateway, agent.token)
    await inbound(kit, wa, "seconda")
    frame = await next_message(socket, "seconda")  # ("prima" too, if its event was published after we connected)
    assert frame["data"]["conversation_id"] == str(conversation)
    await socket.ws.close()


async def test_typing_and_presence_reach_who_may_see_them(gateway: Gateway, redis: Any) -> None:
    kit = await gateway.tenant()
    agent, outsider = kit.members["agent"], await kit.add_member("agent")
    supervisor = await open_socket(gateway, kit.members["supervisor"].token)
    await inbound(kit, wa := phone(), "c'è qualcuno?")
    await next_message(supervisor)
    conversation = await kit.conversation_of(wa)
    async with gateway.connect() as conn:
        await conn.execute("UPDATE conversations SET assignee_id = $2 WHERE id = $1", conversation, agent.id)

    def presence_of_agent(frames: list[dict[str, Any]]) -> list[str]:
        return [f["data"]["presence"] for f in frames
                if f.get("type") == "presence" and f["data"]["user_id"] == str(agent.id)]

    agent_socket = await open_socket(gateway, agent.token)
    outsider_socket = await open_socket(gateway, outsider.token)
    typing = orjson.dumps({"type": "typing", "conversation_id": str(conversation)}).decode()
    for _ in range(3):  # a burst of keystrokes: one event
        await agent_socket.ws.send(typing)
    await outsider_socket.ws.send(typing)  # not theirs: nobody hears it
    await agent_socket.ws.send('{"type": "presence", "presence": "away"}')
    await pong(agent_socket)
    await pong(outsider_socket)
    mark = await marker(redis, kit)
    frames = await supervisor.frames_until_marker(mark)
    got = [f for f in frames if f["type"] not in ("presence", "pong")]
    assert [(f["type"], f["data"]["user_id"], f["data"]["name"]) for f in got] == [("typing", str(agent.id), agent.name)]
    changes = presence_of_agent(frames)
    assert changes == ["online", "away"]

    await agent_socket.ws.close()
    while changes[-1] != "offline":
        changes += presence_of_agent([await supervisor.frame()])
    assert changes == ["online", "away", "offline"]
    await outsider_socket.ws.close()
    await supervisor.ws.close()
