"""The outbound path end to end: transactional outbox → Dispatcher → the Cloud API simulator.

Each test gets a fresh database and a fresh simulator (the network double); nothing of ours is
mocked. Assertions are on the exact rows in ``messages``/``outbox``/``message_statuses`` and on
what the simulator recorded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from bench.simulator import Simulator, encode, payloads, sign
from engine import tenants
from engine.config import Settings
from engine.crypto import SecretBox
from engine.db.pool import create_pool
from engine.db.queries import sql
from engine.errors import NotFound
from engine.pacing import Pacer
from engine.retry import Jitter, RetryStrategy
from engine.whatsapp import channels, outbound
from engine.whatsapp.channels import ChannelRoute
from engine.whatsapp.dispatcher import Dispatcher, Outcome
from engine.whatsapp.errors import ERROR_TABLE
from engine.whatsapp.graph import GraphClient
from engine.whatsapp.outbound import ServiceWindowClosed
from engine.whatsapp.webhook import RouteCache, WebhookReceiver

pytestmark = pytest.mark.integration

PHONE, TOKEN, WABA, DISPLAY = "106540352242922", "EAAG-sim-token", "102290129340398", "15550001111"
APP_SECRET = "app-secret-outbox"
CUSTOMER = "393331234567"
FAST_RETRY = RetryStrategy(max_attempts=30, base_delay_s=0.05, max_delay_s=0.2, jitter=Jitter.NONE)


def customer(i: int) -> str:
    return f"39333{i:07d}"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=11) as simulator:
        simulator.register_phone(PHONE, TOKEN, WABA, display_phone_number=DISPLAY)
        yield simulator


@dataclass
class World:
    """One tenant with one WhatsApp number registered both in Parlo and in the simulator."""

    pool: asyncpg.Pool
    box: SecretBox
    tenant_id: uuid.UUID
    sim: Simulator
    graphs: list[GraphClient] = field(default_factory=list)

    async def conversation(self, wa_id: str = CUSTOMER, *, wrote_ago: timedelta | None = timedelta(minutes=5)) -> uuid.UUID:
        """The conversation with ``wa_id``; the customer last wrote ``wrote_ago`` (None: never)."""
        async with self.pool.acquire() as conn:
            cid = await outbound.conversation_with(conn, self.tenant_id, wa_id)
            if wrote_ago is not None:
                await conn.execute("UPDATE conversations SET last_inbound_at = now() - $2::interval WHERE id = $1",
                                   cid, wrote_ago)
        return cid

    def graph(self, timeout: float = 5.0) -> GraphClient:
        client = GraphClient(TOKEN, base_url=self.sim.base_url, api_version=self.sim.api_version, timeout=timeout)
        self.graphs.append(client)
        return client

    def dispatcher(self, *, pool: asyncpg.Pool | None = None, timeout: float = 5.0, rate: float = 1000.0,
                   per_recipient: float = 1000.0, retry: RetryStrategy = FAST_RETRY, **kwargs: Any) -> Dispatcher:
        graph = self.graph(timeout)
        pool = pool or self.pool

        def graph_for(route: ChannelRoute) -> GraphClient:
            return graph

        return Dispatcher(pool, RouteCache(pool, self.box), graph_for,
                          pacer=Pacer(rate, per_recipient, per_recipient_burst=10), retry=retry, **kwargs)

    async def rows(self, query: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(query, *args)]

    async def outbox(self) -> list[dict[str, Any]]:
        return await self.rows("SELECT id, kind, message_id, state, attempts, last_error, payload FROM outbox ORDER BY id")

    async def messages(self) -> list[dict[str, Any]]:
        return await self.rows("SELECT id, conversation_id, direction, type, body, payload, status, wamid, error, "
                               "context_wamid, sent_at FROM messages ORDER BY id")

    async def drain(self, dispatcher: Dispatcher, timeout: float = 20.0) -> None:
        """run_once until no outbox row is pending or in flight."""
        deadline = time.monotonic() + timeout
        while await self.pool.fetchval("SELECT count(*) FROM outbox WHERE state IN ('pending', 'in_flight')"):
            assert time.monotonic() < deadline, f"outbox not drained: {await self.outbox()}"
            if not await dispatcher.run_once():
                await asyncio.sleep(0.02)

    async def wait_all_done(self, expected: int, timeout: float) -> float:
        started = time.monotonic()
        while await self.pool.fetchval("SELECT count(*) FROM outbox WHERE state = 'done'") < expected:
            assert time.monotonic() - started < timeout, f"not all {expected} outbox rows done in {timeout}s"
            await asyncio.sleep(0.05)
        return time.monotonic() - started


@pytest.fixture
async def world(database_url: str, sim: Simulator) -> AsyncIterator[World]:
    pool = await create_pool(database_url, min_size=1, max_size=20)
    box = SecretBox(Fernet.generate_key().decode())
    try:
        async with pool.acquire() as conn:
            tenant = await tenants.create(conn, "Acme")
            await channels.add(conn, box, tenant.id, phone_number_id=PHONE, waba_id=WABA, app_secret=APP_SECRET,
                               verify_token="verify-me", access_token=TOKEN, display_phone=DISPLAY)
        w = World(pool, box, tenant.id, sim)
        yield w
        for graph in w.graphs:
            await graph.aclose()
    finally:
        await pool.close()


async def queue_texts(w: World, count: int, recipients: int, prefix: str = "m") -> list[outbound.Queued]:
    conversations = [await w.conversation(customer(i)) for i in range(recipients)]
    queued = []
    async with w.pool.acquire() as conn:
        for i in range(count):
            queued.append(await outbound.queue_text(conn, w.tenant_id, conversations[i % recipients], f"{prefix}-{i}"))
    return queued


def assert_each_sent_once(w: World, bodies: list[str]) -> None:
    sent = Counter(s.text for s in w.sim.sent)
    assert sent == Counter(bodies), {b: n for b, n in sent.items() if n != 1}


async def assert_messages_match_simulator(w: World) -> None:
    """Every outbound message is 'sent' with the wamid the simulator gave for its text."""
    wamid_of = {s.text: s.wamid for s in w.sim.sent}
    for m in await w.messages():
        assert m["status"] == "sent" and m["error"] is None
        assert m["wamid"] == wamid_of[m["body"]]


# -- 1. each kind, queued then sent --------------------------------------------------------------


async def test_queue_text_writes_message_and_outbox_in_one_transaction_then_sends(world: World) -> None:
    w = world
    cid = await w.conversation()
    async with w.pool.acquire() as conn:
        # rolled back with the action that caused it: neither the message nor its outbox row remain
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await outbound.queue_text(conn, w.tenant_id, cid, "never sent")
                raise RuntimeError("the causing action failed")
        assert await w.messages() == [] and await w.outbox() == []

        queued = await outbound.queue_text(conn, w.tenant_id, cid, "  Ciao, il tuo ordine è pronto  ",
                                           reply_to="wamid.inbound-1")
    payload = {"to": CUSTOMER, "phone_number_id": PHONE, "kind": "text", "body": "Ciao, il tuo ordine è pronto",
               "reply_to": "wamid.inbound-1"}
    [message] = await w.messages()
    assert message == {"id": queued.message_id, "conversation_id": cid, "direction": "outbound", "type": "text",
                       "body": "Ciao, il tuo ordine è pronto", "payload": payload, "status": "queued", "wamid": None,
                       "error": None, "context_wamid": "wamid.inbound-1", "sent_at": None}
    assert await w.outbox() == [{"id": queued.outbox_id, "kind": "send", "message_id": queued.message_id,
                                 "state": "pending", "attempts": 0, "last_error": None, "payload": payload}]

    outcomes: list[Outcome] = []

    async def on_outcome(outcome: Outcome) -> None:
        outcomes.append(outcome)

    dispatcher = w.dispatcher(on_outcome=on_outcome)
    assert await dispatcher.run_once() == 1
    [send] = w.sim.sent
    assert send.phone_number_id == PHONE and send.to == CUSTOMER
    assert send.payload == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
                            "type": "text", "text": {"preview_url": False, "body": "Ciao, il tuo ordine è pronto"},
                            "context": {"message_id": "wamid.inbound-1"},
                            "biz_opaque_callback_data": f"parlo:outbox:{queued.outbox_id}"}
    [message] = await w.messages()
    assert message["status"] == "sent" and message["wamid"] == send.wamid and message["sent_at"] is not None
    assert [(o["state"], o["attempts"], o["last_error"]) for o in await w.outbox()] == [("done", 1, None)]
    assert outcomes == [Outcome(queued.outbox_id, w.tenant_id, queued.message_id, cid, "done", "sent", send.wamid)]
    assert await dispatcher.run_once() == 0 and len(w.sim.sent) == 1


async def test_media_template_reaction_and_mark_read_are_sent_as_meta_expects(world: World) -> None:
    w = world
    cid = await w.conversation()
    components = [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}]
    async with w.pool.acquire() as conn:
        image = await outbound.queue_media(conn, w.tenant_id, cid, "image", media_id="1234567890", caption="lo scontrino")
        doc = await outbound.queue_media(conn, w.tenant_id, cid, "document", link="https://example.com/fattura.pdf",
                                         filename="fattura.pdf", reply_to="wamid.inbound-2")
        template = await outbound.queue_template(conn, w.tenant_id, cid, "order_update", "it", components)
        reaction = await outbound.queue_reaction(conn, w.tenant_id, cid, "wamid.inbound-2", "👍")
        read = await outbound.queue_mark_read(conn, w.tenant_id, cid, "wamid.inbound-2")
    assert read.message_id is None
    assert [(o["kind"], o["message_id"], o["state"]) for o in await w.outbox()] == [
        ("send", image.message_id, "pending"), ("send", doc.message_id, "pending"),
        ("send", template.message_id, "pending"), ("send", reaction.message_id, "pending"),
        ("mark_read", None, "pending")]
    assert [(m["type"], m["body"], m["status"]) for m in await w.messages()] == [
        ("image", "lo scontrino", "queued"), ("document", None, "queued"),
        ("template", "[template order_update/it]", "queued"), ("reaction", "👍", "queued")]

    await w.drain(w.dispatcher())

    base = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER}
    by_type = {s.type: s for s in w.sim.sent}
    tags = {s.type: s.payload.pop("biz_opaque_callback_data") for s in w.sim.sent}
    outbox_ids = {"image": image.outbox_id, "document": doc.outbox_id, "template": template.outbox_id,
                  "reaction": reaction.outbox_id}
    assert tags == {t: f"parlo:outbox:{i}" for t, i in outbox_ids.items()}
    assert len(w.sim.sent) == 4 and set(by_type) == {"image", "document", "template", "reaction"}
    assert by_type["image"].payload == {**base, "type": "image", "image": {"id": "1234567890", "caption": "lo scontrino"}}
    assert by_type["document"].payload == {**base, "type": "document",
                                           "document": {"link": "https://example.com/fattura.pdf", "filename": "fattura.pdf"},
                                           "context": {"message_id": "wamid.inbound-2"}}
    assert by_type["template"].payload == {**base, "type": "template",
                                           "template": {"name": "order_update", "language": {"code": "it"},
                                                        "components": components}}
    assert by_type["reaction"].payload == {**base, "type": "reaction",
                                           "reaction": {"message_id": "wamid.inbound-2", "emoji": "👍"}}
    assert w.sim.read_marks == [(PHONE, "wamid.inbound-2")]
    wamid_by_type = {t: s.wamid for t, s in by_type.items()}
    assert [(m["type"], m["status"], m["wamid"]) for m in await w.messages()] == [
        (t, "sent", wamid_by_type[t]) for t in ("image", "document", "template", "reaction")]
    assert [(o["state"], o["attempts"]) for o in await w.outbox()] == [("done", 1)] * 5


# -- 1b. customers known only by their business-scoped user id (BSUID) --------------------------

BSUID_CUSTOMER = "IT.13491208655302741918"


async def _customer_writes(w: World, wamid: str, *, phone: str | None = None) -> uuid.UUID:
    """The customer writes in (by username alone unless ``phone``): the conversation Parlo answers in."""
    message = payloads.text_message(phone or BSUID_CUSTOMER, "È pronto il mio ordine?", wamid=wamid)
    if phone is not None:
        message = payloads.with_user_id(message, BSUID_CUSTOMER)
    body = encode(payloads.inbound(message, waba_id=WABA, phone_number_id=PHONE, display_phone_number=DISPLAY,
                                   profile_name="Giulia", username="giulia.b"))
    assert (await WebhookReceiver(w.pool, w.box, max_bytes=1_000_000).receive(body, sign(body, APP_SECRET))).status == 200
    return await w.pool.fetchval("SELECT v.id FROM conversations v JOIN contacts c ON c.id = v.contact_id "
                                 "WHERE c.bsuid = $1 AND v.status <> 'resolved'", BSUID_CUSTOMER)


async def test_a_reply_to_a_customer_known_only_by_username_goes_to_their_bsuid(world: World) -> None:
    """No phone number, no "to": the send names the BSUID as "recipient"; Meta's statuses, which
    then carry recipient_user_id and no recipient_id, still move the message (matched by wamid)."""
    w = world
    cid = await _customer_writes(w, "wamid.in.username")
    async with w.pool.acquire() as conn:
        queued = await outbound.queue_text(conn, w.tenant_id, cid, "Sì, è pronto!", reply_to="wamid.in.username")
    payload = {"recipient": BSUID_CUSTOMER, "phone_number_id": PHONE, "kind": "text", "body": "Sì, è pronto!",
               "reply_to": "wamid.in.username"}
    assert [(o["id"], o["payload"]) for o in await w.outbox()] == [(queued.outbox_id, payload)]

    dispatcher = w.dispatcher()
    assert await dispatcher.run_once() == 1
    [send] = w.sim.sent
    assert (send.addressed_by, send.to, send.wa_id, send.recipient) == ("recipient", None, None, BSUID_CUSTOMER)
    assert send.payload == {"messaging_product": "whatsapp", "recipient_type": "individual",
                            "recipient": BSUID_CUSTOMER, "type": "text",
                            "text": {"preview_url": False, "body": "Sì, è pronto!"},
                            "context": {"message_id": "wamid.in.username"},
                            "biz_opaque_callback_data": f"parlo:outbox:{queued.outbox_id}"}
    assert w.sim.count_by_recipient() == {BSUID_CUSTOMER: 1}
    message = next(m for m in await w.messages() if m["id"] == queued.message_id)
    assert (message["status"], message["wamid"]) == ("sent", send.wamid)

    statuses = payloads.status_sequence(send.wamid, None, recipient_user_id=BSUID_CUSTOMER,
                                        biz_opaque_callback_data=send.callback_data)
    assert all("recipient_id" not in s for s in statuses)
    body = encode(payloads.status_webhook(statuses, waba_id=WABA, phone_number_id=PHONE, display_phone_number=DISPLAY))
    assert (await WebhookReceiver(w.pool, w.box, max_bytes=1_000_000).receive(body, sign(body, APP_SECRET))).status == 200
    assert await w.pool.fetchval("SELECT status FROM messages WHERE id = $1", queued.message_id) == "read"
    async with w.pool.acquire() as conn:
        [row] = await outbound.list_outbox(conn)
        assert (row["recipient"], row["state"]) == (BSUID_CUSTOMER, "done")

    # the customer shows their number later: from then on Parlo writes to it, as Meta recommends
    assert await _customer_writes(w, "wamid.in.phone", phone=CUSTOMER) == cid
    async with w.pool.acquire() as conn:
        again = await outbound.queue_text(conn, w.tenant_id, cid, "Ti aspettiamo!")
    await w.drain(dispatcher)
    sent = w.sim.sends_to(CUSTOMER)
    assert [(s.addressed_by, s.to, s.recipient, s.text) for s in sent] == [("to", CUSTOMER, None, "Ti aspettiamo!")]
    assert "recipient" not in sent[0].payload
    assert next(m for m in await w.messages() if m["id"] == again.message_id)["payload"]["to"] == CUSTOMER


async def test_a_message_meta_cannot_send_to_a_bsuid_fails_with_a_readable_reason(world: World) -> None:
    """Some messages (one-time-code templates) still need a phone number: Meta answers 131062."""
    w = world
    cid = await _customer_writes(w, "wamid.in.otp")
    w.sim.fail_recipient(BSUID_CUSTOMER, 131062)
    async with w.pool.acquire() as conn:
        queued = await outbound.queue_template(conn, w.tenant_id, cid, "codice_accesso", "it")
    dispatcher = w.dispatcher()
    await w.drain(dispatcher)
    assert dispatcher.failed == 1 and w.sim.sent == []
    assert [(a.recipient, a.to, a.error_code) for a in w.sim.failed_attempts] == [(BSUID_CUSTOMER, None, 131062)]
    message = next(m for m in await w.messages() if m["id"] == queued.message_id)
    [error] = message["error"]
    assert message["status"] == "failed" and error["code"] == 131062
    assert error["reason_en"] == ERROR_TABLE[131062].reason_en and "username" in error["reason_en"]


# -- 2. the 24-hour customer service window ------------------------------------------------------


async def test_closed_service_window_refuses_free_form_but_not_templates(world: World) -> None:
    w = world
    stale = await w.conversation(customer(1), wrote_ago=timedelta(hours=25))
    never = await w.conversation(customer(2), wrote_ago=None)
    async with w.pool.acquire() as conn:
        with pytest.raises(ServiceWindowClosed, match="24-hour customer service window is closed .*last wrote at"):
            await outbound.queue_text(conn, w.tenant_id, stale, "ciao")
        with pytest.raises(ServiceWindowClosed, match="never wrote"):
            await outbound.queue_text(conn, w.tenant_id, never, "ciao")
        with pytest.raises(ServiceWindowClosed):
            await outbound.queue_media(conn, w.tenant_id, stale, "image", media_id="1")
        with pytest.raises(ServiceWindowClosed):
            await outbound.queue_reaction(conn, w.tenant_id, stale, "wamid.x", "👍")
        assert await w.messages() == [] and await w.outbox() == []

        queued = await outbound.queue_template(conn, w.tenant_id, stale, "riapertura", "it")
    assert [(m["type"], m["status"]) for m in await w.messages()] == [("template", "queued")]
    assert [(o["message_id"], o["state"]) for o in await w.outbox()] == [(queued.message_id, "pending")]
    await w.drain(w.dispatcher())
    assert [(s.type, s.to) for s in w.sim.sent] == [("template", customer(1))]

    open_ = await w.conversation(customer(3), wrote_ago=timedelta(hours=23, minutes=59))
    async with w.pool.acquire() as conn:
        await outbound.queue_text(conn, w.tenant_id, open_, "ancora in tempo")


# -- 3. outages ----------------------------------------------------------------------------------


async def _outage_run(w: World, mode: str, timeout: float) -> None:
    """Queue 5, start the loop into an outage, queue 5 more during it, wait for recovery."""
    conversations = [await w.conversation(customer(i)) for i in range(10)]
    async with w.pool.acquire() as conn:
        for i in range(5):
            await outbound.queue_text(conn, w.tenant_id, conversations[i], f"before-{i}")
    w.sim.inject_outage(seconds=1.0, mode=mode, hang_s=30)
    dispatcher = w.dispatcher(timeout=timeout, ambiguous_retry_s=0.0)  # no status can come from a hang
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(stop, idle_poll_s=0.05))
    try:
        await asyncio.sleep(0.3)
        async with w.pool.acquire() as conn:
            for i in range(5, 10):
                await outbound.queue_text(conn, w.tenant_id, conversations[i], f"during-{i}")
        await w.wait_all_done(10, timeout=20)
    finally:
        stop.set()
        dispatcher.wake()
        await loop
    assert_each_sent_once(w, [f"before-{i}" for i in range(5)] + [f"during-{i}" for i in range(5, 10)])
    assert w.sim.count_by_recipient() == {customer(i): 1 for i in range(10)}
    await assert_messages_match_simulator(w)
    outbox = await w.outbox()
    assert all(o["state"] == "done" and o["last_error"] is None for o in outbox)
    assert all(o["attempts"] > 1 for o in outbox[:5])  # every early message met the outage at least once
    assert dispatcher.sent == 10 and dispatcher.failed == 0 and dispatcher.retried >= 5
    # backoff: the gaps between one recipient's attempts grow (0.05 s, 0.1 s, 0.2 s, 0.2 s …)
    attempts = [a for a in w.sim.attempts if a.to == customer(0)]
    assert attempts[-1].accepted and not any(a.accepted for a in attempts[:-1])
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:])]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= FAST_RETRY.backoff(n) - 0.01, (n, gaps)


async def test_503_outage_is_retried_with_backoff_and_every_message_sent_once(world: World) -> None:
    await _outage_run(world, "unavailable", timeout=5.0)
    assert {a.fault for a in world.sim.failed_attempts} == {"outage:unavailable"}
    assert {a.error_code for a in world.sim.failed_attempts} == {2}


async def test_hanging_api_times_out_is_retried_and_every_message_sent_once(world: World) -> None:
    await _outage_run(world, "hang", timeout=0.3)
    assert {a.fault for a in world.sim.failed_attempts} == {"outage:hang"}


async def test_accepted_then_timed_out_send_is_recognised_by_its_status_and_not_sent_again(world: World) -> None:
    """Meta took the message but its answer came after our timeout. Each send carries
    biz_opaque_callback_data naming its outbox row; Meta echoes it in the status webhooks, so the
    retry, held back until a status could arrive, finds the first send and does not repeat it."""
    w = world
    cid = await w.conversation()
    async with w.pool.acquire() as conn:
        await outbound.queue_text(conn, w.tenant_id, cid, "una volta sola")
    w.sim.inject_outage(requests=1, mode="accept_then_hang", hang_s=30)
    dispatcher = w.dispatcher(timeout=0.3, ambiguous_retry_s=0.5)
    assert await dispatcher.run_once() == 1
    [first] = w.sim.sent
    [row] = await w.outbox()
    assert row["state"] == "pending" and row["attempts"] == 1  # ambiguous: held back, not resent at once
    assert first.callback_data == f"parlo:outbox:{row['id']}"

    status = payloads.status(first.wamid, "sent", CUSTOMER, biz_opaque_callback_data=first.callback_data)
    body = encode(payloads.webhook(payloads.entry(WABA, payloads.statuses_change(PHONE, DISPLAY, [status]))))
    assert (await WebhookReceiver(w.pool, w.box, max_bytes=1_000_000).receive(body, sign(body, APP_SECRET))).status == 200

    await w.drain(dispatcher)
    assert w.sim.count_by_recipient() == {CUSTOMER: 1}
    assert dispatcher.recognised == 1 and dispatcher.sent == 1
    [message] = await w.messages()
    assert message["status"] == "sent" and message["wamid"] == first.wamid
    assert [(o["state"], o["attempts"]) for o in await w.outbox()] == [("done", 2)]
    pending = await w.pool.fetchval("SELECT count(*) FROM message_statuses WHERE message_id IS NULL")
    assert pending == 0  # the early status now belongs to the message


async def test_accepted_then_timed_out_send_without_any_status_is_sent_twice(world: World) -> None:
    """If no status of the first send arrives before the retry, nothing can tell it happened: the
    Cloud API has no idempotency key, so the customer gets the message twice. Shown, not hidden."""
    w = world
    cid = await w.conversation()
    async with w.pool.acquire() as conn:
        await outbound.queue_text(conn, w.tenant_id, cid, "una volta sola?")
    w.sim.inject_outage(requests=1, mode="accept_then_hang", hang_s=30)
    await w.drain(w.dispatcher(timeout=0.3, ambiguous_retry_s=0.1))
    first, second = w.sim.sent
    assert first.text == second.text == "una volta sola?" and first.wamid != second.wamid
    assert w.sim.count_by_recipient() == {CUSTOMER: 2}
    [message] = await w.messages()
    assert message["status"] == "sent" and message["wamid"] == second.wamid


# -- 4. permanent errors: dead letters and manual retry ------------------------------------------


async def test_permanent_errors_fail_with_a_readable_reason_and_can_be_retried(world: World) -> None:
    w = world
    outside, unreachable, fine = customer(1), customer(2), customer(3)
    w.sim.fail_recipient(outside, 131047)
    w.sim.fail_recipient(unreachable, 131026)
    queued = {}
    for wa_id in (outside, unreachable, fine):
        cid = await w.conversation(wa_id)
        async with w.pool.acquire() as conn:
            queued[wa_id] = await outbound.queue_text(conn, w.tenant_id, cid, f"per {wa_id}")
    dispatcher = w.dispatcher()
    await w.drain(dispatcher)
    assert dispatcher.failed == 2 and dispatcher.sent == 1 and dispatcher.retried == 0

    assert [a.to for a in w.sim.failed_attempts] == [outside, unreachable]  # permanent: tried once, never again
    assert w.sim.count_by_recipient() == {fine: 1}
    messages = {m["id"]: m for m in await w.messages()}
    outbox = {o["id"]: o for o in await w.outbox()}
    for wa_id, code in ((outside, 131047), (unreachable, 131026)):
        message = messages[queued[wa_id].message_id]
        assert message["status"] == "failed" and message["wamid"] is None
        [error] = message["error"]
        spec = ERROR_TABLE[code]
        assert error["code"] == code and error["title"]
        assert error["reason_en"] == spec.reason_en and error["reason_it"] == spec.reason_it
        assert "permanent" in error["gave_up"]
        row = outbox[queued[wa_id].outbox_id]
        assert (row["state"], row["attempts"]) == ("dead", 1)
        assert row["last_error"] == f"{code} {spec.reason_en}"[:500]
    assert "24" in messages[queued[outside].message_id]["error"][0]["reason_en"]
    assert messages[queued[fine].message_id]["status"] == "sent"

    async with w.pool.acquire() as conn:
        dead = await outbound.list_outbox(conn, state="dead")
        assert [(d["id"], d["recipient"], d["message_status"], d["tenant"]) for d in dead] == [
            (queued[unreachable].outbox_id, unreachable, "failed", "acme"),
            (queued[outside].outbox_id, outside, "failed", "acme")]
        with pytest.raises(NotFound):
            await outbound.retry(conn, queued[fine].outbox_id)  # only dead rows come back

        w.sim.heal_recipient(outside)
        await outbound.retry(conn, queued[outside].outbox_id)
        row = await conn.fetchrow("SELECT state, attempts FROM outbox WHERE id = $1", queued[outside].outbox_id)
        assert tuple(row) == ("pending", 0)
        assert tuple(await conn.fetchrow("SELECT status, error FROM messages WHERE id = $1",
                                         queued[outside].message_id)) == ("queued", None)
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'outbox.retry' AND subject = $1",
                                   str(queued[outside].outbox_id)) == 1
    await w.drain(dispatcher)
    assert w.sim.count_by_recipient() == {fine: 1, outside: 1}
    message = next(m for m in await w.messages() if m["id"] == queued[outside].message_id)
    assert message["status"] == "sent" and message["error"] is None
    assert message["wamid"] == w.sim.sends_to(outside)[0].wamid
    async with w.pool.acquire() as conn:
        assert [d["recipient"] for d in await outbound.list_outbox(conn, state="dead")] == [unreachable]


# -- 5. Meta's throughput limit ------------------------------------------------------------------


async def test_rate_limited_sends_are_retried_until_all_go_once(world: World) -> None:
    w = world
    w.sim.set_rate_limit(per_second=10)
    await queue_texts(w, 30, recipients=30)
    # our pacer allows far more than the simulated limit, so Meta's 130429 does the pacing
    dispatcher = w.dispatcher(retry=RetryStrategy(max_attempts=50, base_delay_s=0.1, max_delay_s=0.5))
    await w.drain(dispatcher, timeout=30)
    assert_each_sent_once(w, [f"m-{i}" for i in range(30)])
    await assert_messages_match_simulator(w)
    limited = [a for a in w.sim.failed_attempts if a.error_code == 130429]
    assert limited and len(limited) == len(w.sim.failed_attempts)
    assert dispatcher.failed == 0 and dispatcher.retried == len(limited)
    assert all(o["state"] == "done" for o in await w.outbox())


# -- 6. statuses that arrive before the wamid is stored -----------------------------------------


async def test_statuses_arriving_before_the_wamid_is_recorded_are_adopted(world: World) -> None:
    """Meta's 'delivered' and 'read' can reach the webhook before the dispatcher has committed
    the wamid. Made deterministic by holding the message row locked while the send is answered."""
    w = world
    cid = await w.conversation()
    async with w.pool.acquire() as conn:
        queued = await outbound.queue_text(conn, w.tenant_id, cid, "letto presto")
    w.sim.set_latency(0.5)
    outcomes: list[Outcome] = []

    async def on_outcome(outcome: Outcome) -> None:
        outcomes.append(outcome)

    run = asyncio.create_task(w.dispatcher(on_outcome=on_outcome).run_once())
    lock = await w.pool.acquire()
    try:
        while await w.pool.fetchval("SELECT status FROM messages WHERE id = $1", queued.message_id) != "sending":
            await asyncio.sleep(0.01)
        tx = lock.transaction()
        await tx.start()
        await lock.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", queued.message_id)
        deadline = time.monotonic() + 5
        while not w.sim.sent:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        wamid = w.sim.sent[0].wamid

        statuses = payloads.status_sequence(wamid, CUSTOMER, states=("delivered", "read"))
        body = encode(payloads.status_webhook(statuses, waba_id=WABA, phone_number_id=PHONE, display_phone_number=DISPLAY))
        receiver = WebhookReceiver(w.pool, w.box, max_bytes=1_000_000)
        outcome = await receiver.receive(body, sign(body, APP_SECRET))
        assert outcome.status == 200 and outcome.result is not None and outcome.result.statuses_pending == 2
        assert await w.rows("SELECT status, message_id FROM message_statuses ORDER BY occurred_at") == [
            {"status": "delivered", "message_id": None}, {"status": "read", "message_id": None}]
        assert not run.done()  # the dispatcher waits on the row lock to record the wamid
        await tx.rollback()
    finally:
        await w.pool.release(lock)
    assert await run == 1

    [message] = await w.messages()
    assert (message["status"], message["wamid"]) == ("read", wamid)
    assert await w.rows("SELECT status, message_id FROM message_statuses ORDER BY occurred_at") == [
        {"status": "delivered", "message_id": queued.message_id}, {"status": "read", "message_id": queued.message_id}]
    assert [(o.state, o.message_status, o.wamid) for o in outcomes] == [("done", "read", wamid)]


# -- 7. a dispatcher that died holding a row ----------------------------------------------------


async def test_row_held_by_a_dead_dispatcher_is_reclaimed_after_its_lease(world: World) -> None:
    w = world
    cid = await w.conversation()
    async with w.pool.acquire() as conn:
        queued = await outbound.queue_text(conn, w.tenant_id, cid, "orfano")
    # the "dead" dispatcher claims with the real claim query and then never finishes
    [claimed] = await w.pool.fetch(sql("outbound", "claim_outbox"), 10, 0.5)
    assert claimed["id"] == queued.outbox_id and claimed["attempts"] == 1
    dispatcher = w.dispatcher(lease_s=0.5)
    assert await dispatcher.run_once() == 0  # still leased
    assert w.sim.sent == []
    await asyncio.sleep(0.6)
    assert await dispatcher.run_once() == 1
    assert [s.text for s in w.sim.sent] == ["orfano"]
    assert [(o["state"], o["attempts"]) for o in await w.outbox()] == [("done", 2)]
    await assert_messages_match_simulator(w)


# -- 8. two dispatchers, one outbox --------------------------------------------------------------


async def test_two_concurrent_dispatchers_never_send_a_row_twice(world: World, database_url: str) -> None:
    w = world
    await queue_texts(w, 300, recipients=100)
    w.sim.set_latency(0.002, max_seconds=0.01)
    other_pool = await create_pool(database_url, min_size=1, max_size=20)  # as if in another process
    try:
        first = w.dispatcher(batch_size=16)
        second = w.dispatcher(pool=other_pool, batch_size=16)
        stop = asyncio.Event()
        loops = [asyncio.create_task(d.run(stop, idle_poll_s=0.05)) for d in (first, second)]
        try:
            await w.wait_all_done(300, timeout=60)
        finally:
            stop.set()
            first.wake()
            second.wake()
            await asyncio.gather(*loops)
    finally:
        await other_pool.close()
    assert len(w.sim.sent) == 300
    assert_each_sent_once(w, [f"m-{i}" for i in range(300)])
    assert w.sim.count_by_recipient() == {customer(i): 3 for i in range(100)}
    assert first.sent + second.sent == 300 and first.sent > 0 and second.sent > 0
    assert [o["attempts"] for o in await w.outbox()] == [1] * 300
    await assert_messages_match_simulator(w)


# -- 9. LISTEN/NOTIFY ----------------------------------------------------------------------------


async def test_a_new_message_wakes_an_idle_dispatcher_at_once(world: World) -> None:
    w = world
    cid = await w.conversation()
    dispatcher = w.dispatcher()
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(stop, idle_poll_s=5.0))
    try:
        await asyncio.sleep(0.3)  # the loop found nothing and is waiting
        started = time.monotonic()
        async with w.pool.acquire() as conn:
            await outbound.queue_text(conn, w.tenant_id, cid, "svegliati")
        while not w.sim.sent:
            assert time.monotonic() - started < 2.0, "not woken by NOTIFY"
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        dispatcher.wake()
        await loop
    assert [s.text for s in w.sim.sent] == ["svegliati"]


# -- 10. the Ray actor, killed mid-stream -------------------------------------------------------


def _kill_dispatcher_actor() -> None:
    import ray

    from actors import NAMESPACE
    from actors.outbox_dispatcher import NAME

    try:
        ray.kill(ray.get_actor(NAME, namespace=NAMESPACE), no_restart=True)
    except ValueError:
        pass


async def test_dispatcher_actor_restarts_after_a_kill_and_finishes_the_stream(
        ray_cluster: None, settings: Settings, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    from actors.outbox_dispatcher import ensure_dispatcher
    from engine.crypto import secret_box

    w = world
    total = 200
    settings = settings.model_copy(update={"graph_base_url": w.sim.base_url, "graph_api_version": w.sim.api_version,
                                           "outbound_rate_per_number": 80.0, "outbound_rate_per_recipient": 5.0,
                                           "outbox_lease_s": 5.0, "outbox_base_delay_s": 0.2,
                                           "outbox_max_delay_s": 1.0})
    # the actor decrypts the channel with the settings' key: re-register the number under it
    async with w.pool.acquire() as conn:
        await conn.execute("DELETE FROM channels")
        await channels.add(conn, secret_box(settings), w.tenant_id, phone_number_id=PHONE, waba_id=WABA,
                           app_secret=APP_SECRET, verify_token="verify-me", access_token=TOKEN)
    await queue_texts(w, total, recipients=total)
    w.sim.set_latency(0.01, max_seconds=0.03)  # so that some sends are on the wire when the actor dies

    # Meta's side of the contract: a status webhook (echoing biz_opaque_callback_data) for every
    # accepted send, posted signed to our receiver within a few tens of milliseconds
    receiver = WebhookReceiver(w.pool, secret_box(settings), max_bytes=1_000_000)
    pumped = 0

    async def status_pump() -> None:
        nonlocal pumped
        while True:
            fresh = w.sim.sent[pumped:]
            pumped += len(fresh)
            if fresh:
                statuses = [payloads.status(s.wamid, "sent", s.wa_id, biz_opaque_callback_data=s.callback_data)
                            for s in fresh]
                body = encode(payloads.webhook(payloads.entry(WABA, payloads.statuses_change(PHONE, DISPLAY, statuses))))
                assert (await receiver.receive(body, sign(body, APP_SECRET))).status == 200
            await asyncio.sleep(0.02)

    _kill_dispatcher_actor()
    handle = ensure_dispatcher(settings)
    pump = asyncio.create_task(status_pump())
    try:
        deadline = time.monotonic() + 60
        while len(w.sim.sent) < 100:  # the second claimed batch (rows 65-128) is half sent
            assert time.monotonic() < deadline, "the actor sent nothing"
            await asyncio.sleep(0.01)
        before_kill = len(w.sim.sent)
        ray.kill(handle, no_restart=False)
        killed_at = time.monotonic()
        in_flight = await w.pool.fetchval("SELECT count(*) FROM outbox WHERE state = 'in_flight'")
        recovered_in = await w.wait_all_done(total, timeout=90)
        stats = await handle.stats.remote()  # the restarted instance answers
    finally:
        pump.cancel()
        _kill_dispatcher_actor()

    counts = w.sim.count_by_recipient()
    duplicates = {wa: n for wa, n in counts.items() if n > 1}
    assert set(counts) == {customer(i) for i in range(total)}  # none lost
    assert duplicates == {}  # none doubled: sends on the wire at the kill were recognised by their status
    assert len(w.sim.sent) == total + sum(n - 1 for n in duplicates.values())
    # rows the dead instance held came back after the lease (a second claim); a duplicate can
    # only be one of them: its send was on the wire when the actor died
    reclaimed = {r["to"] for r in await w.rows("SELECT payload->>'to' AS to FROM outbox WHERE attempts > 1")}
    assert set(duplicates) <= reclaimed
    assert all(o["state"] == "done" for o in await w.outbox())
    assert stats["running"] is True and stats["sent"] >= 1
    sends = {}
    for s in w.sim.sent:
        sends.setdefault(s.text, []).append(s.wamid)
    for m in await w.messages():
        assert m["status"] == "sent" and m["wamid"] in sends[m["body"]]
    with capsys.disabled():
        print(f"\n[outbox actor kill] sent before kill={before_kill}, rows in flight at kill={in_flight}, "
              f"reclaimed after the lease={len(reclaimed)}, "
              f"all done {recovered_in:.1f}s after the kill (lease {settings.outbox_lease_s:g}s), "
              f"duplicates={sum(n - 1 for n in duplicates.values())} {sorted(duplicates)}, "
              f"restarted actor sent {stats['sent']}, kill→done {time.monotonic() - killed_at:.1f}s")
