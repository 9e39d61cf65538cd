"""The OutboxDispatcher's logic: claim due outbox rows, pace them, send them, record the outcome.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` (several dispatchers never take the same row);
a claimed row that was never finished — its dispatcher died — is claimed again once its lease
ends. Pacing is per phone number and per recipient. Meta's answer decides the rest: success
records the wamid (and applies statuses that arrived before it), a retryable error puts the row
back with backoff and jitter, a permanent one marks the message ``failed`` with a readable reason.
"""

from __future__ import annotations

import asyncio
import time
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.db.queries import sql
from engine.logging import log_context
from engine.pacing import Pacer
from engine.retry import RetryStrategy
from engine.whatsapp.channels import ChannelRoute
from engine.whatsapp.errors import MetaApiError
from engine.whatsapp.graph import GraphClient, Recipient
from engine.whatsapp.ingest import adopt_orphans, adopt_pending_statuses
from engine.whatsapp.webhook import RouteCache

log = logging.getLogger("parlo.whatsapp.dispatcher")
CHANNEL = "parlo_outbox"
DEFER_AFTER_S = 0.25
# After a send whose outcome is unknown (timed out after the request went out), wait at least this
# long before trying again, so Meta's status webhook for it can arrive and be recognised first.
AMBIGUOUS_RETRY_S = 20.0


def callback_tag(outbox_id: int) -> str:
    return f"parlo:outbox:{outbox_id}"  # a recipient who must wait longer than this goes back to the queue


@dataclass(frozen=True, slots=True)
class Outcome:
    outbox_id: int
    tenant_id: uuid.UUID
    message_id: int | None
    conversation_id: uuid.UUID | None
    state: str  # done | retry | dead
    message_status: str | None = None
    wamid: str | None = None
    reason: str | None = None


OnOutcome = Callable[[Outcome], Awaitable[None]]


class ChannelGone(MetaApiError):
    retryable = False


def recipient_of(payload: dict[str, Any]) -> str | None:
    """The customer an outbox payload goes to: their phone (``to``), else their BSUID (``recipient``)."""
    return payload.get("to") or payload.get("recipient")


def _recipient(payload: dict[str, Any]) -> Recipient:
    if not recipient_of(payload):
        raise ChannelGone("the outbound message names no recipient",
                          reason_en="the message has no recipient (neither a phone number nor a WhatsApp user id)",
                          reason_it="il messaggio non ha un destinatario (né un numero né un id utente WhatsApp)")
    return Recipient(phone=payload.get("to"), user_id=payload.get("recipient"))


class Dispatcher:
    def __init__(self, pool: Any, routes: RouteCache, graph_for: Callable[[ChannelRoute], GraphClient], *,
                 pacer: Pacer, retry: RetryStrategy, batch_size: int = 64, concurrency: int = 16,
                 lease_s: float = 120.0, on_outcome: OnOutcome | None = None,
                 ambiguous_retry_s: float = AMBIGUOUS_RETRY_S, orphan_sweep_s: float = 10.0) -> None:
        self.pool = pool
        self.routes = routes
        self.graph_for = graph_for
        self.pacer = pacer
        self.retry = retry
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.on_outcome = on_outcome
        self.ambiguous_retry_s = ambiguous_retry_s
        self.orphan_sweep_s = orphan_sweep_s
        self.concurrency = concurrency
        self._semaphore = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.deferred = 0
        self.recognised = 0

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch of due rows and process them all. Returns how many were claimed."""
        rows = await self.pool.fetch(sql("outbound", "claim_outbox"), self.batch_size, self.lease_s)
        if rows:
            await asyncio.gather(*(self._process(row) for row in rows))
        return len(rows)

    async def run(self, stop: asyncio.Event, idle_poll_s: float = 1.0) -> None:
        """Process until ``stop`` is set; woken by NOTIFY on ``parlo_outbox``, polling for due retries.

        Rows are claimed as slots free up (never a whole batch at a time), so one slow send or
        recipient does not hold the others back."""
        listener = await self.pool.acquire()
        in_flight: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self._wake.set()  # a free slot: claim more

        next_sweep = 0.0
        try:
            await listener.add_listener(CHANNEL, self.wake)
            while not stop.is_set():
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.orphan_sweep_s
                    await self._sweep_orphans()
                # cleared before claiming, not after: a NOTIFY that lands while the claim query runs
                # (its row not yet visible to that query) must still cut the idle wait short
                self._wake.clear()
                free = self.concurrency - len(in_flight)
                claimed = 0
                if free > 0:
                    try:
                        rows = await self.pool.fetch(sql("outbound", "claim_outbox"), free, self.lease_s)
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                        log.warning("outbox claim failed; retrying", extra={"error": type(exc).__name__})
                        rows = []
                        await asyncio.sleep(idle_poll_s)
                    for row in rows:
                        task = asyncio.create_task(self._process(row))
                        in_flight.add(task)
                        task.add_done_callback(finished)
                    claimed = len(rows)
                if claimed and claimed == free:
                    continue  # there may be more due right now
                try:
                    await asyncio.wait_for(self._wake.wait(), idle_poll_s)
                except asyncio.TimeoutError:
                    pass
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            try:
                await listener.remove_listener(CHANNEL, self.wake)
            finally:
                await self.pool.release(listener)

    async def _sweep_orphans(self) -> None:
        try:
            async with self.pool.acquire() as conn:
                adopted = await adopt_orphans(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("orphan status sweep failed", extra={"error": type(exc).__name__})
            return
        if adopted:
            log.info("statuses adopted late", extra={"count": adopted})

    async def _pace(self, phone_number_id: str, recipient: str | None) -> None:
        while (wait := self.pacer.try_acquire(phone_number_id, recipient)) > 0:
            await asyncio.sleep(wait)

    async def _send(self, route: ChannelRoute, payload: dict[str, Any], outbox_id: int) -> str | None:
        graph = self.graph_for(route)
        kind = payload.get("kind")
        pnid, tag = route.phone_number_id, callback_tag(outbox_id)
        if kind == "mark_read":
            await graph.mark_read(pnid, payload["wamid"])
            return None
        to = _recipient(payload)
        if kind == "text":
            result = await graph.send_text(pnid, to, payload["body"], reply_to=payload.get("reply_to"), callback_data=tag)
        elif kind in ("image", "audio", "video", "document", "sticker"):
            result = await graph.send_media(pnid, to, kind, media_id=payload.get("media_id"), link=payload.get("link"),
                                            caption=payload.get("caption"), filename=payload.get("filename"),
                                            reply_to=payload.get("reply_to"), callback_data=tag)
        elif kind == "template":
            result = await graph.send_template(pnid, to, payload["name"], payload["language"],
                                               components=payload.get("components") or None, callback_data=tag)
        elif kind == "reaction":
            result = await graph.send_reaction(pnid, to, payload["target_wamid"], payload.get("emoji", ""),
                                               callback_data=tag)
        else:
            raise ChannelGone(f"unknown outbound kind {kind!r}", reason_en=f"unknown outbound kind {kind!r}",
                              reason_it=f"tipo di invio sconosciuto {kind!r}")
        return result.wamid

    async def _process(self, row: asyncpg.Record) -> None:
        payload: dict[str, Any] = dict(row["payload"])
        tenant_id: uuid.UUID = row["tenant_id"]
        message_id: int | None = row["message_id"]
        with log_context(tenant=tenant_id):
            async with self._semaphore:
                routes = await self.routes.get()
                route = routes.get(payload.get("phone_number_id", ""))
                if route is None:
                    routes = await self.routes.get(refresh=True, wait=True)  # a number added moments ago
                    route = routes.get(payload.get("phone_number_id", ""))
                try:
                    if route is None or route.tenant_id != tenant_id:
                        raise ChannelGone("the WhatsApp number of this message is no longer active",
                                          reason_en="the WhatsApp number was removed",
                                          reason_it="il numero WhatsApp è stato rimosso")
                    recipient = recipient_of(payload)
                    if recipient:
                        delay = self.pacer.recipient_delay(route.phone_number_id, recipient)
                        if delay > DEFER_AFTER_S:
                            # give the slot back instead of sleeping in it; not an attempt
                            await self.pool.execute(sql("outbound", "outbox_defer"), row["id"], delay)
                            self.deferred += 1
                            return
                    if message_id is not None:
                        await self.pool.execute(sql("outbound", "message_sending"), tenant_id, message_id)
                    await self._pace(route.phone_number_id, recipient)
                    wamid = None
                    if row["attempts"] > 1 and message_id is not None:
                        # tried before: if Meta took that attempt (its answer lost to a timeout or a
                        # crash), its status webhooks name this row; do not send a second copy
                        wamid = await self.pool.fetchval(sql("outbound", "wamid_seen_for_outbox"), tenant_id,
                                                         callback_tag(row["id"]))
                        if wamid is not None:
                            self.recognised += 1
                    if wamid is None:
                        wamid = await self._send(route, payload, row["id"])
                except MetaApiError as exc:
                    await self._failed(row, exc)
                    return
                except Exception as exc:  # a bug or an unexpected answer: keep the row, try again later
                    log.exception("outbound send crashed")
                    await self._failed(row, MetaApiError(f"internal error: {type(exc).__name__}", retryable=True,
                                                         reason_en="internal error", reason_it="errore interno"))
                    return
                await self._succeeded(row, wamid)

    async def _succeeded(self, row: asyncpg.Record, wamid: str | None) -> None:
        tenant_id, message_id = row["tenant_id"], row["message_id"]
        conversation_id = status = None
        async with self.pool.acquire() as conn, conn.transaction():
            if message_id is not None and wamid is not None:
                sent = await conn.fetchrow(sql("outbound", "message_sent"), tenant_id, message_id, wamid)
                conversation_id, status = sent["conversation_id"], sent["status"]
                status = await adopt_pending_statuses(conn, tenant_id, wamid, message_id) or status
            await conn.execute(sql("outbound", "outbox_done"), row["id"])
        self.sent += 1
        log.info("outbound sent", extra={"wamid": wamid, "outbox_id": row["id"]})
        await self._notify(Outcome(row["id"], tenant_id, message_id, conversation_id, "done", status, wamid))

    async def _failed(self, row: asyncpg.Record, error: MetaApiError) -> None:
        tenant_id, message_id = row["tenant_id"], row["message_id"]
        decision = self.retry.decide(row["attempts"], error)
        reason = f"{error.code or ''} {error.reason_en}".strip()
        if decision.retry:
            self.retried += 1
            delay = decision.delay_s or 0.0
            if getattr(error, "ambiguous", False):
                delay = max(delay, self.ambiguous_retry_s)
            await self.pool.execute(sql("outbound", "outbox_retry"), row["id"], delay, reason[:500])
            log.info("outbound will retry", extra={"outbox_id": row["id"], "delay_s": decision.delay_s, "code": error.code})
            await self._notify(Outcome(row["id"], tenant_id, message_id, None, "retry", None, None, reason))
            return
        self.failed += 1
        detail = {"code": error.code, "title": error.title, "reason_en": error.reason_en, "reason_it": error.reason_it,
                  "details": error.details, "gave_up": decision.reason}
        conversation_id = None
        async with self.pool.acquire() as conn, conn.transaction():
            if message_id is not None:
                conversation_id = await conn.fetchval(sql("outbound", "message_failed"), tenant_id, message_id, [detail])
            await conn.execute(sql("outbound", "outbox_dead"), row["id"], reason[:500])
        log.warning("outbound failed", extra={"outbox_id": row["id"], "code": error.code})
        await self._notify(Outcome(row["id"], tenant_id, message_id, conversation_id, "dead", "failed", None, reason))

    async def _notify(self, outcome: Outcome) -> None:
        if self.on_outcome is None:
            return
        try:
            await self.on_outcome(outcome)
        except Exception:
            log.exception("outcome callback failed")
