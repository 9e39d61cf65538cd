"""Hot state of the conversations one ConversationShard owns.

The store is plain Python so it is unit-tested without Ray; the actor in ``actors/`` is a shell
that holds one store. PostgreSQL stays the truth: the store can be dropped and rebuilt with
:meth:`ConversationStore.load` at any time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

import asyncpg

from engine.db.queries import sql
from engine.sharding import shard_of

SERVICE_WINDOW = timedelta(hours=24)


@dataclass(slots=True)
class ConversationState:
    id: uuid.UUID
    tenant_id: uuid.UUID
    channel_id: uuid.UUID
    contact_id: uuid.UUID
    status: str
    ai_mode: str
    assignee_id: uuid.UUID | None
    unread_count: int
    last_inbound_at: datetime | None
    last_message_at: datetime | None

    def window_open(self, now: datetime | None = None) -> bool:
        """Whether the 24-hour customer service window is open (free-form replies allowed)."""
        if self.last_inbound_at is None:
            return False
        now = now or datetime.now(timezone.utc)
        return now - self.last_inbound_at < SERVICE_WINDOW

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["window_open"] = self.window_open()
        return out


class ConversationStore:
    RELOAD_GRACE_S = 15.0  # after a load, committed rows are re-read rather than taken as given
    def __init__(self, shard_index: int, shard_count: int) -> None:
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard index {shard_index} is outside 0..{shard_count - 1}")
        self.shard_index = shard_index
        self.shard_count = shard_count
        self._conversations: dict[uuid.UUID, ConversationState] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self.loaded_at: datetime | None = None
        self._trust_rows_at: float | None = None
        # (tenant, conversation) whose customer wrote, as of the last apply()
        self.customer_wrote: list[tuple[uuid.UUID, uuid.UUID]] = []

    def owns(self, conversation_id: uuid.UUID) -> bool:
        return shard_of(conversation_id, self.shard_count) == self.shard_index

    async def load(self, conn: asyncpg.Connection | asyncpg.Pool) -> int:
        """Replace the hot state with this shard's open conversations as PostgreSQL has them."""
        rows = await conn.fetch(sql("conversations", "load_shard"), self.shard_count, self.shard_index)
        self._conversations = {row["id"]: ConversationState(**dict(row)) for row in rows}
        self.loaded_at = datetime.now(timezone.utc)
        self._trust_rows_at = time.monotonic() + self.RELOAD_GRACE_S
        return len(self._conversations)

    async def get(self, conn: asyncpg.Connection | asyncpg.Pool, conversation_id: uuid.UUID) -> ConversationState | None:
        if not self.owns(conversation_id):
            raise ValueError(f"conversation {conversation_id} belongs to shard "
                             f"{shard_of(conversation_id, self.shard_count)}, not {self.shard_index}")
        state = self._conversations.get(conversation_id)
        if state is None:
            row = await conn.fetchrow(sql("conversations", "get_conversation"), conversation_id)
            if row is None:
                return None
            state = ConversationState(**dict(row))
            self._conversations[conversation_id] = state
        return state

    async def refresh_many(self, conn: asyncpg.Connection | asyncpg.Pool, conversation_ids: list[uuid.UUID]) -> int:
        """Re-read several conversations in one query. Returns how many are open afterwards."""
        mine = [cid for cid in conversation_ids if self.owns(cid)]
        if len(mine) != len(conversation_ids):
            raise ValueError(f"{len(conversation_ids) - len(mine)} conversation(s) do not belong to shard {self.shard_index}")
        rows = {row["id"]: row for row in await conn.fetch(sql("conversations", "get_conversations"), mine)}
        open_count = 0
        for cid in mine:
            row = rows.get(cid)
            if row is None or row["status"] == "resolved":
                self._conversations.pop(cid, None)
            else:
                self._conversations[cid] = ConversationState(**dict(row))
                open_count += 1
        return open_count

    async def apply(self, conn: asyncpg.Connection | asyncpg.Pool,
                    changed: dict[uuid.UUID, dict[str, object] | None]) -> int:
        """Take conversations' state as a committed transaction returned it; re-read from PostgreSQL
        only those given without a state. Returns how many conversations were updated."""
        before = {cid: (s.last_inbound_at if (s := self._conversations.get(cid)) else None) for cid in changed}
        # Just after a (re)load, rows may be retries of calls made before a crash, older than what
        # was loaded: re-read them instead of trusting their order.
        distrust = self._trust_rows_at is not None and time.monotonic() < self._trust_rows_at
        unknown = []
        for cid, row in changed.items():
            if not self.owns(cid):
                raise ValueError(f"conversation {cid} does not belong to shard {self.shard_index}")
            if row is None or distrust:
                unknown.append(cid)
            elif row.get("status") == "resolved":
                self._conversations.pop(cid, None)
            else:
                self._conversations[cid] = ConversationState(**row)  # type: ignore[arg-type]
        if unknown:
            await self.refresh_many(conn, unknown)
        self.customer_wrote = [
            (state.tenant_id, cid) for cid in changed
            if (state := self._conversations.get(cid)) is not None and state.last_inbound_at is not None
            and (before[cid] is None or state.last_inbound_at > before[cid])]
        return len(changed)

    def lock(self, conversation_id: uuid.UUID) -> asyncio.Lock:
        """The lock that keeps one conversation's events in order inside an async actor."""
        return self._locks.setdefault(conversation_id, asyncio.Lock())

    def __len__(self) -> int:
        return len(self._conversations)

    def stats(self) -> dict[str, object]:
        return {
            "shard": self.shard_index,
            "shards": self.shard_count,
            "conversations": len(self._conversations),
            "loaded_at": self.loaded_at.isoformat() if self.loaded_at else None,
        }
