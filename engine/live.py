"""Live events to agents' browsers: the WebSocket side of the tenants' Redis Streams.

One :class:`LiveHub` per Gateway replica reads, with a single blocking ``XREAD`` loop, the streams
of every tenant that has a user connected to this replica, and fans each event out to the
sockets (:class:`Subscriber`) allowed to see it (:func:`may_receive`).

Ordering and resume. Every subscriber remembers the id of the last event queued for it and never
takes one that is not newer, so the backlog a reconnecting client asks for (``XRANGE`` after its
``last_id``) and the live tail join without a gap or a duplicate: the subscriber is registered
(buffering live events) *before* the backlog is read, so each event is in one or both, and the ids
decide. A ``last_id`` the stream no longer holds gets ``{"type": "resync"}``.

Slow consumers. Each socket has a bounded queue; a socket that lets it overflow is closed
(:attr:`CloseCode.SLOW_CONSUMER`) rather than silently skipped, and resumes from its last id.

Audience. Conversation events name ``conversation_id`` and, when the publisher knows them,
``team_id`` and ``assignee_id``; the webhook ingest names only the conversation, so the hub keeps a
small per-tenant :class:`ScopeCache` (conversation → team, assignee), loaded from PostgreSQL on a
miss and kept current by the events that carry both fields (``conversation.updated``).

The socket itself is reached through three ASGI-shaped callables (``receive`` returns ASGI
``websocket.*`` messages), so this module imports no web framework.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from engine import events
from engine.auth.tokens import AccessClaims, TokenKeys, verify_access
from engine.db.queries import sql
from engine.db.tenancy import tenant_transaction
from engine.errors import Unauthenticated
from engine.inbox.principal import Principal, load_principal

log = logging.getLogger("parlo.live")

Key = tuple[int, int]  # a stream id as (milliseconds, sequence): ids compare as these tuples
Scope = tuple[uuid.UUID | None, uuid.UUID | None]  # (team_id, assignee_id) of a conversation
ScopeLoader = Callable[[uuid.UUID, list[uuid.UUID]], Awaitable[dict[uuid.UUID, Scope]]]
ZERO: Key = (0, 0)


class CloseCode(IntEnum):
    GARBAGE = 1003          # a frame that is not one of the client frames of the contract
    TOO_BIG = 1009
    UNAVAILABLE = 1011      # Redis or PostgreSQL unreachable: reconnect with backoff
    SLOW_CONSUMER = 1013    # the socket's queue overflowed: reconnect with last_id
    IDLE = 4000             # nothing heard from the client for too long
    UNAUTHORIZED = 4401     # bad, forged or expired token; deactivated user
    FLOOD = 4408


@dataclass(frozen=True, slots=True)
class LiveLimits:
    queue: int = 1000                # live events waiting for one socket before it is closed
    frame_bytes: int = 4096          # client frames are tiny; anything larger is refused (1009)
    frames_per_s: float = 10.0       # client frames, a token bucket per socket (4408 beyond)
    frame_burst: int = 40
    typing_interval_s: float = 3.0   # one typing event per user and conversation at most this often
    heartbeat_s: float = 30.0        # presence refresh, user re-check
    presence_ttl_s: float = 90.0     # a crashed replica's connections drop out of presence after this
    idle_s: float = 120.0            # the inbox pings every 25 s; silence this long means a dead socket
    send_timeout_s: float = 10.0
    scope_ttl_s: float = 60.0        # safety net for assignment changes that were not published
    scope_entries: int = 10_000      # per tenant
    block_ms: int = 5000
    batch: int = 500


# --- stream ids ------------------------------------------------------------------------------

def parse_id(value: str | bytes) -> Key:
    """``"1700000000000-3"`` → ``(1700000000000, 3)``; ValueError for anything else."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, dash, seq = text.partition("-")
    if len(text) > 41 or not ms.isdigit() or (dash and not seq.isdigit()):
        raise ValueError(f"not a stream id: {text[:50]!r}")
    return int(ms), int(seq or 0)


def format_id(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


def _after(key: Key) -> str:
    """The smallest id greater than ``key`` (an exclusive XRANGE start that Redis < 6.2 reads too)."""
    return format_id((key[0], key[1] + 1))


# --- events and who may receive them ---------------------------------------------------------

class Event:
    """One stream entry, parsed once and framed once for every socket that gets it."""

    __slots__ = ("id", "key", "type", "data", "_raw", "_frame")

    def __init__(self, event_id: str, kind: str, data: dict[str, Any], raw: bytes | None = None) -> None:
        self.id = event_id
        self.key = parse_id(event_id)
        self.type = kind
        self.data = data
        self._raw = raw
        self._frame: str | None = None

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: dict[Any, Any]) -> Event | None:
        try:
            kind = fields.get(b"type", fields.get("type"))
            raw = fields.get(b"data", fields.get("data"))
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            raw = raw if isinstance(raw, bytes) else str(raw).encode()
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("data is not an object")
            return cls(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, kind, data, raw)
        except (ValueError, TypeError, AttributeError):
            log.warning("malformed stream entry skipped", extra={"entry": str(entry_id)})
            return None

    @property
    def frame(self) -> str:
        if self._frame is None:
            raw = self._raw if self._raw is not None else orjson.dumps(self.data, default=str)
            self._frame = (b'{"id":' + orjson.dumps(self.id) + b',"type":' + orjson.dumps(self.type)
                           + b',"data":' + raw + b"}").decode()
        return self._frame


def _uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def conversation_of(event: Event) -> uuid.UUID | None:
    """The conversation an event is about, if it is a conversation event (not one for named users)."""
    if "user_ids" in event.data:
        return None
    return _uuid(event.data.get("conversation_id"))


def carried_scope(event: Event) -> Scope | None:
    """The conversation's (team, assignee) as the publisher stated it, when it did."""
    if "team_id" in event.data and "assignee_id" in event.data:
        return _uuid(event.data["team_id"]), _uuid(event.data["assignee_id"])
    return None


def may_receive(principal: Principal, event: Event, scopes: Iterable[Scope]) -> bool:
    """Whether ``principal`` gets ``event``. ``scopes`` are the (team, assignee) pairs under which
    the event's conversation counts as visible (usually one; two while an assignment changes, so
    that who loses the conversation hears of it too); none means unknown: supervisors only."""
    data = event.data
    if "user_ids" in data:
        named = data["user_ids"]
        return isinstance(named, list) and str(principal.user_id) in {str(u) for u in named}
    if event.type == "typing" and str(data.get("user_id")) == str(principal.user_id):
        return False  # one's own typing is no news
    if "conversation_id" in data:
        return principal.sees_all or any(principal.may_see(team, assignee) for team, assignee in scopes)
    return True


class ScopeCache:
    """Per tenant: conversation → (team, assignee), least recently used out, entries expire."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[uuid.UUID, tuple[Scope, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, conversation_id: uuid.UUID) -> Scope | None:
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[conversation_id]
            return None
        self._entries.move_to_end(conversation_id)
        return entry[0]

    def put(self, conversation_id: uuid.UUID, scope: Scope) -> None:
        self._entries[conversation_id] = (scope, self._clock() + self._ttl)
        self._entries.move_to_end(conversation_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


def postgres_scopes(pool: Callable[[], Awaitable[Any]]) -> ScopeLoader:
    """A :data:`ScopeLoader` reading conversations inside the tenant's transaction."""

    async def load(tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID]) -> dict[uuid.UUID, Scope]:
        async with (await pool()).acquire() as conn, tenant_transaction(conn, tenant_id):
            rows = await conn.fetch(sql("live", "conversation_scopes"), tenant_id, conversation_ids)
        return {row["id"]: (row["team_id"], row["assignee_id"]) for row in rows}

    return load


# --- one socket's queue ----------------------------------------------------------------------

class SlowConsumer(Exception):
    pass


class Subscriber:
    """The events waiting for one socket. Starts catching up (live events buffered) until
    :meth:`start` gives it its backlog; from then on it takes only events newer than the last
    one it took, so backlog and live tail meet without a gap or a duplicate."""

    def __init__(self, principal: Principal, limit: int) -> None:
        self.principal = principal
        self.position: Key | None = None  # None while catching up
        self.overflowed = False
        self._limit = limit
        self._allowance = 0  # the backlog does not count against the limit
        self._pending: list[Event] = []
        self._queue: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        if self.position is None:
            if len(self._pending) >= self._limit:
                self._overflow()
            else:
                self._pending.append(event)
            return
        if event.key <= self.position:
            return
        if len(self._queue) >= self._limit + self._allowance:
            self._overflow()
            return
        self._queue.append(event)
        self.position = event.key
        self._ready.set()

    def start(self, start: Key, backlog: list[Event]) -> None:
        """End of the catch-up: ``backlog`` (events after ``start``, oldest first), then the live
        events buffered meanwhile that are newer than both."""
        position = start
        for event in [*backlog, *self._pending]:
            if event.key > position:
                self._queue.append(event)
                position = event.key
        self._pending.clear()
        self._allowance = len(self._queue)
        self.position = position
        if self._queue:
            self._ready.set()

    def _overflow(self) -> None:
        self.overflowed = True
        self._queue.clear()
        self._pending.clear()
        self._ready.set()

    async def next_batch(self) -> list[Event]:
        """Every event queued so far (waits for at least one); SlowConsumer once it overflowed."""
        while not self._queue:
            if self.overflowed:
                raise SlowConsumer
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            raise SlowConsumer
        batch = list(self._queue)
        self._queue.clear()
        self._allowance = 0
        return batch


@dataclass(slots=True)
class Subscription:
    subscriber: Subscriber
    last_id: str       # where the client is after the backlog: the hello frame's last_id
    resync: bool       # its last_id is older than the stream keeps: it must reload


# --- the hub: one XREAD loop per replica -----------------------------------------------------

class _Feed:
    __slots__ = ("cursor", "subscribers", "scopes")

    def __init__(self, scopes: ScopeCache) -> None:
        self.cursor: str | None = None  # None until the stream's end is known: not read yet
        self.subscribers: set[Subscriber] = set()
        self.scopes = scopes


class LiveHub:
    """Reads the streams of the tenants with connected users and fans events out.

    ``redis`` serves short commands; ``blocking_redis`` is a separate client for the blocking
    ``XREAD`` (its socket timeout must exceed ``limits.block_ms``). The loop starts with the first
    subscriber and ends by itself after the last one leaves; :meth:`stop` ends it at once."""

    def __init__(self, redis: Any, blocking_redis: Any, scopes: ScopeLoader, *,
                 limits: LiveLimits = LiveLimits()) -> None:
        self.redis = redis
        self._blocking = blocking_redis
        self._load_scopes = scopes
        self.limits = limits
        self._feeds: dict[uuid.UUID, _Feed] = {}
        self._task: asyncio.Task[None] | None = None
        # XADDing to this stream, which the loop also reads, wakes it when the set of streams changes
        self._wake_key = f"parlo:live:wake:{uuid.uuid4().hex}"
        self._wake_cursor = "0-0"
        self.delivered = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def subscribers(self, tenant_id: uuid.UUID) -> int:
        feed = self._feeds.get(tenant_id)
        return len(feed.subscribers) if feed else 0

    async def subscribe(self, principal: Principal, last_id: str | None) -> Subscription:
        tenant = principal.tenant_id
        subscriber = Subscriber(principal, self.limits.queue)
        feed = self._feeds.get(tenant)
        if feed is None:
            feed = self._feeds[tenant] = _Feed(ScopeCache(self.limits.scope_ttl_s, self.limits.scope_entries))
        # registered before the backlog is read: whatever the loop dispatches from now on is buffered
        feed.subscribers.add(subscriber)
        try:
            return await self._catch_up(tenant, feed, subscriber, last_id)
        except BaseException:
            self.unsubscribe(subscriber)
            raise

    async def _catch_up(self, tenant: uuid.UUID, feed: _Feed, subscriber: Subscriber,
                        last_id: str | None) -> Subscription:
        key = events.stream_key(tenant)
        wanted: Key | None = None
        if last_id is not None:
            try:
                wanted = parse_id(last_id)
            except ValueError:
                wanted = None  # garbage: treated like an id the stream no longer has
        pipe = self.redis.pipeline(transaction=True)  # one consistent view of the stream
        pipe.xrange(key, "-", "+", count=1)
        pipe.xrevrange(key, "+", "-", count=1)
        if wanted is not None:
            pipe.xrange(key, _after(wanted), "+")
        first, last, *rest = await pipe.execute()
        end = parse_id(last[0][0]) if last else ZERO
        resync = last_id is not None and (
            wanted is None or wanted > end or (bool(first) and wanted < parse_id(first[0][0]))
            or (not first and wanted > ZERO))
        backlog = [] if wanted is None or resync else rest[0]
        if feed.cursor is None:  # the first subscriber of this tenant here: the loop starts at this end
            feed.cursor = format_id(end)
            self._ensure_running()
            await self._wake()
        elif (cursor := parse_id(feed.cursor)) > end:
            # another subscriber started the loop past our snapshot: what lies between was never
            # dispatched to us, so it is backlog too (a fresh client simply starts at the cursor)
            if wanted is not None and not resync:
                backlog = [*backlog, *await self.redis.xrange(key, _after(end), feed.cursor)]
            end = cursor
        if last_id is None or resync:
            subscriber.start(end, [])
            return Subscription(subscriber, format_id(end), resync)
        assert wanted is not None
        parsed = [e for e in (Event.from_entry(i, f) for i, f in backlog) if e is not None]
        scopes = await self._scopes(tenant, feed, parsed, subscriber.principal.sees_all)
        subscriber.start(wanted, [e for e in parsed if may_receive(subscriber.principal, e, scopes(e))])
        return Subscription(subscriber, format_id(wanted), False)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        tenant = subscriber.principal.tenant_id
        feed = self._feeds.get(tenant)
        if feed is None:
            return
        feed.subscribers.discard(subscriber)
        if not feed.subscribers:
            del self._feeds[tenant]

    async def scope_of(self, tenant: uuid.UUID, conversation_id: uuid.UUID) -> Scope | None:
        """A conversation's (team, assignee) for this tenant, from the cache or PostgreSQL."""
        feed = self._feeds.get(tenant)
        if feed is not None and (found := feed.scopes.get(conversation_id)) is not None:
            return found
        loaded = await self._load_scopes(tenant, [conversation_id])
        scope = loaded.get(conversation_id)
        if feed is not None and scope is not None:
            feed.scopes.put(conversation_id, scope)
        return scope

    def _ensure_running(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="parlo-live-hub")

    async def _wake(self) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=10, approximate=False)
            pipe.expire(self._wake_key, 3600)
            await pipe.execute()
        except Exception as exc:  # the loop still notices within block_ms
            log.warning("live hub wake failed", extra={"error": type(exc).__name__})

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        try:
            await self.redis.delete(self._wake_key)
        except Exception:  # the key expires by itself
            pass

    async def _run(self) -> None:
        delay = 0.5
        while self._feeds:
            streams = {events.stream_key(t): f.cursor for t, f in self._feeds.items() if f.cursor is not None}
            streams[self._wake_key] = self._wake_cursor
            try:
                reply = await self._blocking.xread(streams, count=self.limits.batch, block=self.limits.block_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live hub cannot read the streams; retrying",
                            extra={"error": type(exc).__name__, "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.5
            for raw_key, entries in reply or ():
                key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                if key == self._wake_key:
                    if entries:
                        last = entries[-1][0]
                        self._wake_cursor = last.decode() if isinstance(last, bytes) else last
                    continue
                try:
                    await self._dispatch(key, entries)
                except Exception:  # one bad batch must not stop every socket of the replica
                    log.exception("live events not dispatched", extra={"stream": key})
        log.debug("live hub idle: loop ends")

    async def _dispatch(self, key: str, entries: list[Any]) -> None:
        try:
            tenant = uuid.UUID(key.split(":")[2])
        except (IndexError, ValueError):
            return
        feed = self._feeds.get(tenant)
        if feed is None or not entries:
            return
        last = entries[-1][0]
        last_id = last.decode() if isinstance(last, bytes) else last
        if feed.cursor is None or parse_id(last_id) > parse_id(feed.cursor):
            feed.cursor = last_id
        batch = [e for e in (Event.from_entry(i, f) for i, f in entries) if e is not None]
        subscribers = list(feed.subscribers)
        everyone_sees_all = all(s.principal.sees_all for s in subscribers)
        scopes = await self._scopes(tenant, feed, batch, everyone_sees_all)
        for event in batch:
            audience = scopes(event)
            stated = carried_scope(event)
            conversation = conversation_of(event)
            if stated is not None and conversation is not None:
                # the state as published; who could see it before hears of the change as well
                previous = feed.scopes.get(conversation)
                feed.scopes.put(conversation, stated)
                if previous is not None and previous != stated:
                    audience = [stated, previous]
            for subscriber in subscribers:
                if may_receive(subscriber.principal, event, audience):
                    subscriber.offer(event)
                    self.delivered += 1

    async def _scopes(self, tenant: uuid.UUID, feed: _Feed, batch: list[Event],
                      skip_lookup: bool) -> Callable[[Event], list[Scope]]:
        """For each event, the scopes its audience is computed under. Misses are loaded from
        PostgreSQL in one query, and only when someone connected does not see everything."""
        if not skip_lookup:
            missing = {c for e in batch if carried_scope(e) is None and (c := conversation_of(e)) is not None
                       and feed.scopes.get(c) is None}
            if missing:
                try:
                    loaded = await self._load_scopes(tenant, sorted(missing))
                except Exception as exc:  # fail closed: unknown conversations reach supervisors only
                    log.warning("conversation scopes not loaded", extra={"tenant": str(tenant),
                                                                         "error": type(exc).__name__})
                    loaded = None
                if loaded is not None:
                    for conversation in missing:
                        feed.scopes.put(conversation, loaded.get(conversation, (None, None)))

        def scopes(event: Event) -> list[Scope]:
            stated = carried_scope(event)
            if stated is not None:
                return [stated]
            conversation = conversation_of(event)
            found = feed.scopes.get(conversation) if conversation is not None else None
            return [found] if found is not None else []

        return scopes


# --- presence --------------------------------------------------------------------------------

# A hash per user: one field per open socket ("c:<id>" → expiry in ms) and "state" (online|away).
_PRESENCE_CONNECT = """
local now, live = tonumber(ARGV[3]), 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'c:' then
    if tonumber(fields[i + 1]) < now then redis.call('HDEL', KEYS[1], fields[i]) else live = live + 1 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if live == 0 then redis.call('HSET', KEYS[1], 'state', 'online') end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return live
"""
_PRESENCE_DISCONNECT = """
local now, live = tonumber(ARGV[2]), 0
redis.call('HDEL', KEYS[1], ARGV[1])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'c:' then
    if tonumber(fields[i + 1]) < now then redis.call('HDEL', KEYS[1], fields[i]) else live = live + 1 end
  end
end
if live == 0 then redis.call('DEL', KEYS[1]) end
return live
"""


def presence_key(tenant_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return f"parlo:tenant:{tenant_id}:presence:{user_id}"


async def presence_of(redis: Any, tenant_id: uuid.UUID, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Each user's live presence: online or away while a socket of theirs is open, else offline."""
    pipe = redis.pipeline(transaction=False)
    for user in user_ids:
        pipe.hget(presence_key(tenant_id, user), "state")
    answers = await pipe.execute()
    return {u: (a.decode() if isinstance(a, bytes) else a) or "offline" for u, a in zip(user_ids, answers)}


class Presence:
    """One socket's share in its user's presence (a user with two tabs is online until both close)."""

    def __init__(self, redis: Any, principal: Principal, ttl_s: float, maxlen: int) -> None:
        self.redis = redis
        self.principal = principal
        self.key = presence_key(principal.tenant_id, principal.user_id)
        self.field = f"c:{uuid.uuid4().hex}"
        self.ttl_ms = int(ttl_s * 1000)
        self.maxlen = maxlen

    async def _publish(self, presence: str) -> None:
        await events.publish(self.redis, self.principal.tenant_id, "presence",
                             {"user_id": str(self.principal.user_id), "presence": presence}, maxlen=self.maxlen)

    async def connect(self) -> None:
        now = int(time.time() * 1000)
        before = await self.redis.eval(_PRESENCE_CONNECT, 1, self.key, self.field, now + self.ttl_ms, now,
                                       self.ttl_ms)
        if int(before) == 0:
            await self._publish("online")

    async def refresh(self) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, self.field, int(time.time() * 1000) + self.ttl_ms)
        pipe.pexpire(self.key, self.ttl_ms)
        await pipe.execute()

    async def set_state(self, state: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.key, "state")
        pipe.hset(self.key, "state", state)
        pipe.pexpire(self.key, self.ttl_ms)
        previous, *_ = await pipe.execute()
        if (previous.decode() if isinstance(previous, bytes) else previous) != state:
            await self._publish(state)

    async def disconnect(self) -> None:
        left = await self.redis.eval(_PRESENCE_DISCONNECT, 1, self.key, self.field, int(time.time() * 1000))
        if int(left) == 0:
            await self._publish("offline")


# --- client frames ---------------------------------------------------------------------------

class BadFrame(Exception):
    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Typing:
    conversation_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class SetPresence:
    presence: str


ClientFrame = Ping | Typing | SetPresence


def parse_client_frame(message: dict[str, Any], max_bytes: int) -> ClientFrame:
    """An ASGI ``websocket.receive`` message as one of the client frames of the contract."""
    text = message.get("text")
    if text is None:
        if message.get("bytes") is not None and len(message["bytes"]) > max_bytes:
            raise BadFrame(CloseCode.TOO_BIG, "frame too large")
        raise BadFrame(CloseCode.GARBAGE, "binary frames are not accepted")
    if len(text) > max_bytes or len(text.encode()) > max_bytes:
        raise BadFrame(CloseCode.TOO_BIG, "frame too large")
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadFrame(CloseCode.GARBAGE, "frames must be JSON") from None
    if not isinstance(frame, dict):
        raise BadFrame(CloseCode.GARBAGE, "frames must be JSON objects")
    kind = frame.get("type")
    if kind == "ping":
        return Ping()
    if kind == "typing":
        conversation = _uuid(frame.get("conversation_id")) if isinstance(frame.get("conversation_id"), str) else None
        if conversation is None:
            raise BadFrame(CloseCode.GARBAGE, "typing needs a conversation_id")
        return Typing(conversation)
    if kind == "presence":
        if frame.get("presence") not in ("online", "away"):
            raise BadFrame(CloseCode.GARBAGE, "presence must be online or away")
        return SetPresence(frame["presence"])
    raise BadFrame(CloseCode.GARBAGE, "unknown frame type")


class FrameBudget:
    """A token bucket of client frames per socket."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, float(burst), clock
        self.tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class TypingThrottle:
    """At most one typing event per user and conversation per interval (per replica; extra typing
    frames are dropped quietly, they are not an error)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000) -> None:
        self.interval_s, self._clock, self._max = interval_s, clock, max_entries
        self._last: collections.OrderedDict[tuple[uuid.UUID, uuid.UUID], float] = collections.OrderedDict()

    def allow(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
        now, key = self._clock(), (user_id, conversation_id)
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self._max:
            self._last.popitem(last=False)
        return True


# --- one socket ------------------------------------------------------------------------------

class Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def authenticate(pool: Any, keys: TokenKeys, token: str | None) -> tuple[AccessClaims, Principal]:
    """The claims and the principal (re-read from PostgreSQL) of a socket's ``?token=``;
    Unauthenticated for a missing, forged or expired token or a deactivated user."""
    claims = verify_access(keys, token or "")
    async with pool.acquire() as conn, tenant_transaction(conn, claims.tenant_id):
        principal = await load_principal(conn, claims)
    return claims, principal


class LiveSession:
    """One agent's socket from the hello frame to the close: the queue pump, the client frames,
    and a heartbeat (presence refresh, the user re-read, the token's expiry)."""

    def __init__(self, hub: LiveHub, claims: AccessClaims, principal: Principal, *,
                 receive: Callable[[], Awaitable[dict[str, Any]]], send_text: Callable[[str], Awaitable[None]],
                 reload_principal: Callable[[], Awaitable[Principal]], typing: TypingThrottle, maxlen: int) -> None:
        self.hub = hub
        self.claims = claims
        self.principal = principal
        self._receive = receive
        self._send_text = send_text
        self._reload = reload_principal
        self._typing = typing
        self._maxlen = maxlen
        self._send_lock = asyncio.Lock()
        self._heard_at = time.monotonic()
        self.presence = Presence(hub.redis, principal, hub.limits.presence_ttl_s, maxlen)

    async def _send(self, *texts: str) -> None:
        # one lock and one timeout per batch: a task per frame (wait_for) cost more than the send
        async with self._send_lock:
            try:
                async with asyncio.timeout(self.hub.limits.send_timeout_s):
                    for text in texts:
                        await self._send_text(text)
            except TimeoutError:
                raise Close(CloseCode.SLOW_CONSUMER, "too slow to receive: reconnect with last_id") from None

    async def run(self, last_id: str | None) -> Close | None:
        """Serve the socket; returns how to close it (None: the client went away)."""
        log_extra = {"tenant": str(self.principal.tenant_id), "user": str(self.principal.user_id)}
        try:
            subscription = await self.hub.subscribe(self.principal, last_id)
        except Exception as exc:
            log.warning("live events unavailable", extra={**log_extra, "error": type(exc).__name__})
            return Close(CloseCode.UNAVAILABLE, "live events unavailable, reconnect shortly")
        subscriber = subscription.subscriber
        tasks: list[asyncio.Task[None]] = []
        outcome: Close | None = None
        try:
            await self._send(orjson.dumps({"type": "hello", "user_id": str(self.principal.user_id),
                                           "last_id": subscription.last_id}).decode())
            if subscription.resync:
                await self._send(orjson.dumps({"type": "resync", "last_id": subscription.last_id}).decode())
            await self.presence.connect()
            tasks = [asyncio.create_task(self._pump(subscriber)), asyncio.create_task(self._listen(subscriber)),
                     asyncio.create_task(self._heartbeat(subscriber))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, Close):
                    outcome = exc
                elif exc is not None:
                    raise exc
        except Close as exc:
            outcome = exc
        except Exception as exc:
            log.warning("live socket failed", extra={**log_extra, "error": type(exc).__name__})
            outcome = Close(CloseCode.UNAVAILABLE, "live events unavailable, reconnect shortly")
        finally:
            for task in tasks:
                task.cancel()
            self.hub.unsubscribe(subscriber)
            await asyncio.shield(self._leave(log_extra))
        log.info("live socket closed", extra={**log_extra, "code": outcome.code if outcome else "client"})
        return outcome

    async def _leave(self, log_extra: dict[str, str]) -> None:
        try:
            await self.presence.disconnect()
        except Exception as exc:  # the presence hash expires by itself
            log.warning("presence not cleared", extra={**log_extra, "error": type(exc).__name__})

    async def _pump(self, subscriber: Subscriber) -> None:
        while True:
            try:
                batch = await subscriber.next_batch()
            except SlowConsumer:
                raise Close(CloseCode.SLOW_CONSUMER, "too slow to receive: reconnect with last_id") from None
            await self._send(*(event.frame for event in batch))

    async def _listen(self, subscriber: Subscriber) -> None:
        limits = self.hub.limits
        budget = FrameBudget(limits.frames_per_s, limits.frame_burst)
        while True:
            message = await self._receive()
            if message.get("type") == "websocket.disconnect":
                return
            if message.get("type") != "websocket.receive":
                continue
            self._heard_at = time.monotonic()
            if not budget.take():
                raise Close(CloseCode.FLOOD, "too many frames")
            try:
                frame = parse_client_frame(message, limits.frame_bytes)
            except BadFrame as exc:
                raise Close(exc.code, exc.reason) from None
            if isinstance(frame, Ping):
                await self._send('{"type":"pong"}')
            elif isinstance(frame, Typing):
                await self._typing_frame(subscriber, frame.conversation_id)
            elif isinstance(frame, SetPresence):
                await self.presence.set_state(frame.presence)

    async def _typing_frame(self, subscriber: Subscriber, conversation_id: uuid.UUID) -> None:
        principal = subscriber.principal
        if not self._typing.allow(principal.user_id, conversation_id):
            return
        scope = await self.hub.scope_of(principal.tenant_id, conversation_id)
        if scope is None or not principal.may_see(*scope):
            return  # not theirs to type in (or no such conversation): nothing to tell anyone
        await events.publish(self.hub.redis, principal.tenant_id, "typing",
                             {"conversation_id": str(conversation_id), "team_id": scope[0], "assignee_id": scope[1],
                              "user_id": str(principal.user_id), "name": principal.name}, maxlen=self._maxlen)

    async def _heartbeat(self, subscriber: Subscriber) -> None:
        limits = self.hub.limits
        while True:
            left = (self.claims.expires_at.timestamp() - time.time())
            await asyncio.sleep(max(0.05, min(limits.heartbeat_s, left)))
            if self.claims.expires_at.timestamp() <= time.time():
                raise Close(CloseCode.UNAUTHORIZED, "access token expired")
            if time.monotonic() - self._heard_at > limits.idle_s:
                raise Close(CloseCode.IDLE, "no frame from the client for too long")
            try:
                subscriber.principal = self.principal = await self._reload()
            except Unauthenticated:
                raise Close(CloseCode.UNAUTHORIZED, "this account no longer exists or has been deactivated") from None
            except Exception as exc:  # PostgreSQL away: keep the last known principal
                log.warning("principal not re-read", extra={"tenant": str(self.principal.tenant_id),
                                                           "error": type(exc).__name__})
            await self.presence.refresh()


async def serve_socket(hub: LiveHub, pool: Callable[[], Awaitable[Any]], keys: TokenKeys, *, token: str | None,
                       last_id: str | None, receive: Callable[[], Awaitable[dict[str, Any]]],
                       send_text: Callable[[str], Awaitable[None]], typing: TypingThrottle,
                       maxlen: int) -> Close | None:
    """Everything after the WebSocket was accepted; returns how to close it (None: client left)."""
    try:
        claims, principal = await authenticate(await pool(), keys, token)
    except Unauthenticated as exc:
        return Close(CloseCode.UNAUTHORIZED, exc.message)
    except Exception as exc:
        log.warning("live socket not authenticated: a service is unavailable", extra={"error": type(exc).__name__})
        return Close(CloseCode.UNAVAILABLE, "live events unavailable, reconnect shortly")

    async def reload() -> Principal:
        return (await authenticate(await pool(), keys, token))[1]

    session = LiveSession(hub, claims, principal, receive=receive, send_text=send_text, reload_principal=reload,
                          typing=typing, maxlen=maxlen)
    return await session.run(last_id)
