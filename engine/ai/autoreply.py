"""Auto-replies: what a ConversationShard does when a customer writes in a conversation whose AI
mode is ``auto``, for a business that turned them on (``tenants.settings.ai_auto_reply``; off by
default: a business with an empty knowledge base should not greet every customer with "I could not
find that").

It waits a short debounce (three messages in a burst get one answer), then runs the assistant's
pipeline, shows it live to agents watching (progress and the growing text on the tenant's stream),
and queues the answer in the outbox with its sources. A newer customer message cancels an answer
in progress (it closes the provider's stream) and starts the wait again. A person's reply pauses
the assistant in the conversation (``ai_state = 'paused'``, set by the send path); a customer who
asks for a person, or two failed answers in a row, hand the conversation over (``'handoff'``). When
the tenant's monthly AI budget is spent, auto-replies stop: drafts remain available to agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.ai.drafts import conversation_request, request_as_dict
from engine.ai.ledger import month_spend
from engine.errors import Conflict, InvalidInput, NotFound
from engine.whatsapp.outbound import ServiceWindowClosed, queue_text

log = logging.getLogger("parlo.ai.auto")

Run = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]
Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
Publish = Callable[[uuid.UUID, str, dict[str, Any]], Awaitable[Any]]


async def relay(events: AsyncIterator[dict[str, Any]], publish: Publish, tenant_id: uuid.UUID,
                conversation_id: uuid.UUID | str, *, every_s: float = 0.3) -> dict[str, Any] | None:
    """Consume a pipeline run, showing it to agents watching the conversation (progress stages
    and the growing text, at most every ``every_s``), and return its final or error event."""
    final: dict[str, Any] | None = None
    text, shown = "", time.monotonic()
    async with contextlib.aclosing(events) as stream:  # type: ignore[type-var]
        async for event in stream:
            kind = event.get("type")
            if kind == "progress":
                await publish(tenant_id, "ai.progress", {"conversation_id": str(conversation_id),
                                                         "stage": event.get("stage"), "run_id": event.get("run_id")})
            elif kind == "delta":
                text += event["text"]
                if time.monotonic() - shown >= every_s:
                    shown = time.monotonic()
                    await publish(tenant_id, "ai.draft", {"conversation_id": str(conversation_id), "text": text})
            elif kind in ("final", "error"):
                final = event
    return final


@dataclass(frozen=True)
class AutoReplyPolicy:
    debounce_s: float = 2.0
    live_every_s: float = 0.3  # how often the growing answer is shown to agents watching


class AutoReplier:
    def __init__(self, pool: asyncpg.Pool, answer: Answer, publish: Publish,
                 policy: AutoReplyPolicy = AutoReplyPolicy()) -> None:
        """``answer`` runs the pipeline for a request (as a dict) and returns its final or error
        event, relaying progress to agents on the way (see :func:`relay`); cancelling it must stop
        the run."""
        self.pool = pool
        self.answer = answer
        self.publish = publish
        self.policy = policy
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        # whether each tenant turned auto-replies on, as read at most every TENANT_FLAG_TTL_S: most
        # businesses have them off, and a query per customer message would cost more than the
        # message's own ingest
        self._tenant_on: dict[uuid.UUID, tuple[bool, float]] = {}
        self._tenant_lookups: dict[uuid.UUID, asyncio.Task[bool]] = {}
        self.replied = 0
        self.cancelled = 0
        self.flag_reads = 0

    TENANT_FLAG_TTL_S = 5.0  # a business that turns auto-replies on gets them within this

    def customer_wrote(self, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """A customer's message was stored: (re)start the wait for this conversation."""
        known = self._tenant_on.get(tenant_id)
        if known is not None and not known[0] and known[1] > time.monotonic():
            return  # auto-replies are off for this business
        running = self._tasks.get(conversation_id)
        if running is not None and not running.done():
            running.cancel()
            self.cancelled += 1
        task = asyncio.create_task(self._after_debounce(tenant_id, conversation_id))
        self._tasks[conversation_id] = task
        task.add_done_callback(lambda t, cid=conversation_id: self._forget(cid, t))

    def _forget(self, conversation_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        if self._tasks.get(conversation_id) is task:
            del self._tasks[conversation_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("auto-reply failed", exc_info=task.exception(), extra={"conversation": str(conversation_id)})

    async def drain(self) -> None:
        """Wait for every pending answer (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _after_debounce(self, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        if not await self.tenant_wants_replies(tenant_id):
            return
        await asyncio.sleep(self.policy.debounce_s)
        await self.reply(tenant_id, conversation_id)

    async def tenant_wants_replies(self, tenant_id: uuid.UUID) -> bool:
        """The tenant's ``ai_auto_reply`` setting, read once per TENANT_FLAG_TTL_S (concurrent
        callers share one query)."""
        known = self._tenant_on.get(tenant_id)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        lookup = self._tenant_lookups.get(tenant_id)
        if lookup is None:
            lookup = asyncio.create_task(self._read_tenant_flag(tenant_id))
            self._tenant_lookups[tenant_id] = lookup
            lookup.add_done_callback(lambda _t, tid=tenant_id: self._tenant_lookups.pop(tid, None))
        return await asyncio.shield(lookup)

    async def _read_tenant_flag(self, tenant_id: uuid.UUID) -> bool:
        self.flag_reads += 1
        settings = await self.pool.fetchval("SELECT settings FROM tenants WHERE id = $1", tenant_id)
        wanted = bool((settings or {}).get("ai_auto_reply", False))
        self._tenant_on[tenant_id] = (wanted, time.monotonic() + self.TENANT_FLAG_TTL_S)
        return wanted

    async def _allowed(self, conn: asyncpg.Connection, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> str | None:
        """Why the assistant must not answer now (None: it may)."""
        row = await conn.fetchrow("SELECT c.ai_mode, c.ai_state, c.status, t.settings FROM conversations c "
                                  "JOIN tenants t ON t.id = c.tenant_id WHERE c.id = $1 AND c.tenant_id = $2",
                                  conversation_id, tenant_id)
        if row is None or row["status"] == "resolved":
            return "closed"
        settings = row["settings"] or {}
        if not settings.get("ai_auto_reply", False):
            return "auto-replies are off for this business"
        if row["ai_mode"] != "auto":
            return f"ai mode {row['ai_mode']}"
        if row["ai_state"] != "active":
            return f"assistant {row['ai_state']}"
        budget = settings.get("ai_monthly_budget_usd")
        if budget is not None and await month_spend(conn, tenant_id) >= float(budget):
            return "budget spent"
        return None

    async def reply(self, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> dict[str, Any] | None:
        """Answer the conversation now if its mode allows. Returns the final event, if any."""
        async with self.pool.acquire() as conn:
            why_not = await self._allowed(conn, tenant_id, conversation_id)
            if why_not is None:
                try:
                    request = await conversation_request(conn, tenant_id, conversation_id, purpose="auto")
                except Conflict:
                    why_not = "nothing to answer"
        if why_not is not None:
            log.info("no auto-reply", extra={"conversation": str(conversation_id), "reason": why_not})
            if why_not == "budget spent":
                await self.publish(tenant_id, "ai.skipped", {"conversation_id": str(conversation_id), "reason": why_not})
            return None
        final = await self.answer(request_as_dict(request))
        if final is None:
            return None
        await self._deliver(tenant_id, conversation_id, final)
        return final

    async def _deliver(self, tenant_id: uuid.UUID, conversation_id: uuid.UUID, final: dict[str, Any]) -> None:
        failed = final["type"] == "error" or final.get("declined", False)
        handoff = final.get("handoff", False)
        sent_id: int | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            # a person may have answered while the assistant was writing: theirs wins
            state = await conn.fetchval("SELECT ai_state FROM conversations WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
                                        conversation_id, tenant_id)
            if state != "active":
                return
            if final["type"] == "final" and final.get("text"):
                annotations = {"ai": {"run_id": final.get("run_id"), "handler": final.get("handler"),
                                      "citations": [{k: c.get(k) for k in ("source", "title", "url")}
                                                    for c in final.get("citations", [])]}}
                try:
                    queued = await queue_text(conn, tenant_id, conversation_id, final["text"][:4096],
                                              annotations=annotations)
                except (ServiceWindowClosed, NotFound, InvalidInput, Conflict) as exc:
                    log.warning("auto-reply not sent", extra={"conversation": str(conversation_id), "error": str(exc)})
                    return
                sent_id = queued.message_id
                self.replied += 1
            failures = await conn.fetchval(
                "UPDATE conversations SET ai_failures = CASE WHEN $3 THEN ai_failures + 1 ELSE 0 END, "
                "ai_state = CASE WHEN $4 OR ($3 AND ai_failures + 1 >= 2) THEN 'handoff' ELSE ai_state END, "
                "updated_at = now() WHERE id = $1 AND tenant_id = $2 RETURNING ai_failures", conversation_id, tenant_id,
                failed, handoff)
            row = await conn.fetchrow("SELECT team_id, assignee_id, ai_state FROM conversations WHERE id = $1",
                                      conversation_id)
        if row is not None and sent_id is not None:
            await self.publish(tenant_id, "message.created", {
                "conversation_id": str(conversation_id), "message_id": sent_id, "direction": "outbound",
                "type": "text", "team_id": row["team_id"], "assignee_id": row["assignee_id"], "ai": True})
        if row is not None and (handoff or (failures or 0) >= 2):
            await self.publish(tenant_id, "conversation.updated", {
                "conversation_id": str(conversation_id), "team_id": row["team_id"], "assignee_id": row["assignee_id"],
                "ai_state": row["ai_state"]})
