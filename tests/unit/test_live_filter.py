"""engine.live without Redis: who receives what, the scope cache, the backlog/live handover of a
subscriber, and the client frames."""

from __future__ import annotations

import uuid

import orjson
import pytest

from engine.inbox.principal import Principal
from engine.live import (CloseCode, BadFrame, Event, FrameBudget, Ping, ScopeCache, SetPresence, SlowConsumer,
                         Subscriber, Typing, TypingThrottle, carried_scope, format_id, may_receive,
                         parse_client_frame, parse_id)

pytestmark = pytest.mark.unit

TENANT = uuid.uuid4()
TEAM, OTHER_TEAM = uuid.uuid4(), uuid.uuid4()
CONVERSATION = uuid.uuid4()


def person(role: str, teams: tuple[uuid.UUID, ...] = ()) -> Principal:
    return Principal(TENANT, uuid.uuid4(), role, role.title(), frozenset(teams))


SUPERVISOR, ADMIN = person("supervisor"), person("admin")
AGENT, TEAMMATE = person("agent"), person("agent", (TEAM,))
OUTSIDER = person("agent", (OTHER_TEAM,))
_seq = iter(range(1, 10**6))


def event(kind: str, **data: object) -> Event:
    return Event(f"1700000000000-{next(_seq)}", kind, orjson.loads(orjson.dumps(data, default=str)))


@pytest.mark.parametrize(("who", "scopes", "expected"), [
    (SUPERVISOR, [], True),                        # unknown conversation: supervisors and above only
    (ADMIN, [], True),
    (AGENT, [], False),
    (AGENT, [(None, None)], False),                # unassigned, no team
    (AGENT, [(None, AGENT.user_id)], True),        # assigned to them
    (AGENT, [(TEAM, None)], False),                # another team's
    (TEAMMATE, [(TEAM, None)], True),              # their team's
    (TEAMMATE, [(TEAM, AGENT.user_id)], True),     # their team's, someone else's
    (OUTSIDER, [(TEAM, AGENT.user_id)], False),
    (AGENT, [(TEAM, None), (None, AGENT.user_id)], True),  # during a reassignment: who had it hears too
])
def test_a_conversation_event_reaches_who_may_see_the_conversation(
        who: Principal, scopes: list[tuple[uuid.UUID | None, uuid.UUID | None]], expected: bool) -> None:
    assert may_receive(who, event("message.created", conversation_id=CONVERSATION), scopes) is expected


def test_events_for_named_users_reach_only_them_whatever_their_role() -> None:
    note = event("notification.created", user_ids=[str(AGENT.user_id)], conversation_id=CONVERSATION)
    assert may_receive(AGENT, note, [])
    assert not may_receive(SUPERVISOR, note, [(None, None)])
    assert not may_receive(TEAMMATE, note, [(TEAM, None)])
    assert not may_receive(AGENT, event("chat.message", user_ids="not a list"), [])


def test_events_with_no_audience_reach_the_whole_tenant() -> None:
    presence = event("presence", user_id=str(AGENT.user_id), presence="online")
    assert all(may_receive(p, presence, []) for p in (SUPERVISOR, AGENT, TEAMMATE, OUTSIDER))


def test_ones_own_typing_is_not_echoed() -> None:
    typing = event("typing", conversation_id=CONVERSATION, user_id=str(AGENT.user_id), name="Agent")
    assert not may_receive(AGENT, typing, [(None, AGENT.user_id)])
    assert may_receive(SUPERVISOR, typing, [(None, AGENT.user_id)])


def test_the_scope_is_read_from_an_event_only_when_it_carries_both_fields() -> None:
    assert carried_scope(event("conversation.updated", conversation_id=CONVERSATION, team_id=str(TEAM),
                               assignee_id=None)) == (TEAM, None)
    assert carried_scope(event("message.created", conversation_id=CONVERSATION, team_id=str(TEAM))) is None
    assert carried_scope(event("x", team_id="garbage", assignee_id=None)) == (None, None)


def test_the_scope_cache_expires_entries_and_keeps_the_most_recently_used() -> None:
    now = [0.0]
    cache = ScopeCache(ttl_s=10, max_entries=2, clock=lambda: now[0])
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(a, (TEAM, None))
    cache.put(b, (None, None))
    assert cache.get(a) == (TEAM, None)  # a is now the most recent
    cache.put(c, (None, AGENT.user_id))  # b goes
    assert (cache.get(a), cache.get(b), cache.get(c)) == ((TEAM, None), None, (None, AGENT.user_id))
    now[0] = 10.0
    assert cache.get(a) is None and len(cache) == 1


def test_stream_ids_parse_compare_and_refuse_garbage() -> None:
    assert parse_id("1700000000000-12") == (1700000000000, 12)
    assert parse_id(b"5") == (5, 0)
    assert parse_id("9-0") < parse_id("10-0") and parse_id("10-2") < parse_id("10-10")
    assert format_id((10, 2)) == "10-2"
    for garbage in ("", "-", "abc", "1-x", "1-2-3", "1" * 50, "-1"):
        with pytest.raises(ValueError):
            parse_id(garbage)


def test_an_event_frame_is_the_contracts_json() -> None:
    e = Event("1-1", "message.created", {"conversation_id": "c", "text": "ciao \"tu\""},
              raw=orjson.dumps({"conversation_id": "c", "text": "ciao \"tu\""}))
    assert orjson.loads(e.frame) == {"id": "1-1", "type": "message.created",
                                     "data": {"conversation_id": "c", "text": "ciao \"tu\""}}
    assert Event.from_entry(b"1-2", {b"type": b"x", b"data": b"[1]"}) is None  # data must be an object
    assert Event.from_entry(b"1-3", {b"type": b"x", b"data": b"{"}) is None


# --- the subscriber's handover between backlog and live tail ---------------------------------

async def test_backlog_and_live_events_buffered_meanwhile_join_without_gap_or_duplicate() -> None:
    stream = [Event(f"100-{i}", "t", {"n": i}) for i in range(10)]
    subscriber = Subscriber(SUPERVISOR, limit=100)
    # registered before the backlog read: the loop dispatches 5..9 meanwhile (5..6 overlap the read)
    for e in stream[5:]:
        subscriber.offer(e)
    subscriber.start(parse_id("100-1"), stream[2:7])  # the backlog read saw up to 100-6
    assert [e.id for e in await subscriber.next_batch()] == [e.id for e in stream[2:]]
    subscriber.offer(stream[9])  # a late duplicate from the loop
    subscriber.offer(Event("100-10", "t", {}))
    assert [e.id for e in await subscriber.next_batch()] == ["100-10"]


async def test_a_fresh_subscriber_starts_after_the_streams_end() -> None:
    subscriber = Subscriber(AGENT, limit=10)
    subscriber.offer(Event("5-0", "t", {}))  # already in the stream when the client connected
    subscriber.offer(Event("7-0", "t", {}))
    subscriber.start(parse_id("5-0"), [])
    assert [e.id for e in await subscriber.next_batch()] == ["7-0"]


async def test_a_subscriber_that_falls_behind_is_cut_off_not_skipped() -> None:
    subscriber = Subscriber(AGENT, limit=3)
    subscriber.start((0, 0), [Event(f"1-{i}", "t", {}) for i in range(5)])  # the backlog is not counted
    for i in range(3):
        subscriber.offer(Event(f"2-{i}", "t", {}))
    assert len(await subscriber.next_batch()) == 8
    for i in range(4):
        subscriber.offer(Event(f"3-{i}", "t", {}))
    with pytest.raises(SlowConsumer):
        await subscriber.next_batch()
    subscriber.offer(Event("4-0", "t", {}))  # nothing more is queued once cut off
    with pytest.raises(SlowConsumer):
        await subscriber.next_batch()


async def test_a_subscriber_overflowing_while_catching_up_is_cut_off() -> None:
    subscriber = Subscriber(AGENT, limit=2)
    for i in range(3):
        subscriber.offer(Event(f"1-{i}", "t", {}))
    subscriber.start((0, 0), [])
    with pytest.raises(SlowConsumer):
        await subscriber.next_batch()


# --- client frames -------------------------------------------------------------------------

def text(frame: object) -> dict[str, object]:
    return {"type": "websocket.receive", "text": frame if isinstance(frame, str) else orjson.dumps(frame).decode()}


def test_the_contracts_client_frames_parse() -> None:
    assert parse_client_frame(text({"type": "ping"}), 4096) == Ping()
    assert parse_client_frame(text({"type": "typing", "conversation_id": str(CONVERSATION)}), 4096) == \
        Typing(CONVERSATION)
    assert parse_client_frame(text({"type": "presence", "presence": "away"}), 4096) == SetPresence("away")


@pytest.mark.parametrize(("message", "code"), [
    (text("not json"), CloseCode.GARBAGE),
    (text([1]), CloseCode.GARBAGE),
    (text({"type": "shout"}), CloseCode.GARBAGE),
    (text({"type": "typing", "conversation_id": 12}), CloseCode.GARBAGE),
    (text({"type": "typing", "conversation_id": "nope"}), CloseCode.GARBAGE),
    (text({"type": "presence", "presence": "offline"}), CloseCode.GARBAGE),
    ({"type": "websocket.receive", "bytes": b"\x00"}, CloseCode.GARBAGE),
    ({"type": "websocket.receive", "bytes": b"\x00" * 5000}, CloseCode.TOO_BIG),
    (text({"type": "ping", "pad": "é" * 3000}), CloseCode.TOO_BIG),  # 3,000 characters, 6,000 bytes
])
def test_anything_else_is_refused_with_its_close_code(message: dict[str, object], code: CloseCode) -> None:
    with pytest.raises(BadFrame) as refused:
        parse_client_frame(message, 4096)
    assert refused.value.code == code


def test_the_frame_budget_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    budget = FrameBudget(rate=10, burst=5, clock=lambda: now[0])
    assert [budget.take() for _ in range(6)] == [True] * 5 + [False]
    now[0] = 0.25  # 2.5 frames' worth
    assert [budget.take() for _ in range(3)] == [True, True, False]


def test_typing_is_throttled_per_user_and_conversation() -> None:
    now = [0.0]
    throttle = TypingThrottle(3.0, clock=lambda: now[0])
    other = uuid.uuid4()
    assert throttle.allow(AGENT.user_id, CONVERSATION)
    assert not throttle.allow(AGENT.user_id, CONVERSATION)
    assert throttle.allow(AGENT.user_id, other) and throttle.allow(TEAMMATE.user_id, CONVERSATION)
    now[0] = 3.0
    assert throttle.allow(AGENT.user_id, CONVERSATION)
