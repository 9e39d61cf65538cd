"""The WhatsApp Cloud API simulator, driven with plain httpx as the engine's Graph client would."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bench.simulator import Simulator, encode, payloads, post_webhook, sign

pytestmark = pytest.mark.integration

PHONE, TOKEN, WABA = "106540352242922", "EAAG-sim-token", "102290129340398"
OTHER_PHONE, OTHER_TOKEN = "106540352242923", "EAAG-other-token"
CUSTOMER = "393331234567"
APP_SECRET = "app-secret-for-tests"
ROOT = Path(__file__).resolve().parents[2]


def text(to: str, body: str = "ciao", **extra: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "text", "text": {"body": body}, **extra}


def assert_meta_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and isinstance(error["fbtrace_id"], str)
    assert set(error) <= {"message", "type", "code", "error_subcode", "error_data", "fbtrace_id", "is_transient"}
    if "error_data" in error:
        assert error["error_data"]["messaging_product"] == "whatsapp" and error["error_data"]["details"]
    return dict(error)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=7) as simulator:
        simulator.register_phone(PHONE, TOKEN, WABA, display_phone_number="15550001111")
        simulator.register_phone(OTHER_PHONE, OTHER_TOKEN, "102290129340399")
        yield simulator
    assert not simulator.running


@pytest.fixture
async def graph(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.graph_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0) as client:
        yield client


@dataclass
class Receiver:
    """A tiny webhook endpoint that checks ``X-Hub-Signature-256`` itself, over the raw bytes."""

    url: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    rejected: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("X-Hub-Signature-256", "")
        expected = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(header, expected):
            self.rejected += 1
            return web.Response(status=401)
        self.raw.append(body)
        self.accepted.append(json.loads(body))
        return web.Response(text="EVENT_RECEIVED")

    def statuses(self) -> list[dict[str, Any]]:
        return [s for p in self.accepted for e in p["entry"] for c in e["changes"] for s in c["value"].get("statuses", [])]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", recv.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recv.url = f"http://127.0.0.1:{port}/webhook"
    try:
        yield recv
    finally:
        await runner.cleanup()


# -- sends ---------------------------------------------------------------------------------------


async def test_text_template_media_and_read_are_accepted_and_recorded(sim: Simulator, graph: httpx.AsyncClient) -> None:
    r = await graph.post(f"/{PHONE}/messages", json=text("+39 333 123 4567", "ciao"))
    assert r.status_code == 200
    body = r.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+39 333 123 4567", "wa_id": CUSTOMER}]
    wamid = body["messages"][0]["id"]
    assert wamid.startswith("wamid.")

    template = {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "template",
        "template": {"name": "order_update", "language": {"code": "it"}, "components": [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}]},
    }
    r = await graph.post(f"/{PHONE}/messages", json=template)
    assert r.status_code == 200 and r.json()["messages"][0]["message_status"] == "accepted"

    for kind, media in (("image", {"id": "1234567890", "caption": "x"}), ("document", {"link": "https://example.com/a.pdf", "filename": "a.pdf"})):
        r = await graph.post(f"/{PHONE}/messages", json={"messaging_product": "whatsapp", "to": CUSTOMER, "type": kind, kind: media})
        assert r.status_code == 200, r.text
    reaction = {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "reaction", "reaction": {"message_id": "wamid.in", "emoji": ""}}
    assert (await graph.post(f"/{PHONE}/messages", json=reaction)).status_code == 200

    read = await graph.post(f"/{PHONE}/messages", json={"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in"})
    assert read.status_code == 200 and read.json() == {"success": True}

    wamids = [s.wamid for s in sim.sent]
    assert len(wamids) == len(set(wamids)) == 5 and wamids[0] == wamid
    assert [s.type for s in sim.sent] == ["text", "template", "image", "document", "reaction"]
    assert sim.count_by_recipient() == {CUSTOMER: 5}
    assert sim.sent[0].text == "ciao" and sim.sent[0].phone_number_id == PHONE
    assert sim.read_marks == [(PHONE, "wamid.in")]
    assert [s.accepted_at for s in sim.sent] == sorted(s.accepted_at for s in sim.sent)


async def test_bad_or_missing_token_is_oauth_190(sim: Simulator, graph: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": "Bearer not-a-token"}, {"Authorization": ""}):
        r = await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER), headers=headers)
        error = assert_meta_error(r, 401, 190)
        assert error["type"] == "OAuthException"
        assert "invalid_token" in r.headers["WWW-Authenticate"]
    # a real token that does not own this phone number: the object "does not exist" for it
    r = await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER), headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert assert_meta_error(r, 400, 100)["error_subcode"] == 33
    assert sim.sent == [] and [a.error_code for a in sim.failed_attempts] == [190, 190, 100]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}, "to"),
        ({"messaging_product": "whatsapp", "to": CUSTOMER, "type": "carrier_pigeon"}, "carrier_pigeon"),
        ({"messaging_product": "whatsapp", "to": CUSTOMER, "type": "template", "template": {"language": {"code": "it"}}}, "template['name']"),
        ({"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text", "text": {"body": "x" * 4097}}, "4096"),
        ({"messaging_product": "whatsapp", "to": CUSTOMER, "type": "image", "image": {}}, "image['id']"),
        ({"to": CUSTOMER, "type": "text", "text": {"body": "x"}}, "messaging_product"),
    ],
)
async def test_invalid_payloads_are_error_100(sim: Simulator, graph: httpx.AsyncClient, payload: dict[str, Any], needle: str) -> None:
    r = await graph.post(f"/{PHONE}/messages", json=payload)
    error = assert_meta_error(r, 400, 100)
    assert needle in error["message"] + error["error_data"]["details"]
    assert sim.sent == []
    assert [(a.http_status, a.fault) for a in sim.attempts] == [(400, "validation")]


BSUID = "US.13491208655302741918"


async def test_a_send_may_name_a_bsuid_as_recipient_instead_of_a_phone(sim: Simulator, graph: httpx.AsyncClient) -> None:
    """Meta's BSUID rollout: "recipient" names a user by business-scoped user id; "to" wins when both are given."""
    by_bsuid = {k: v for k, v in text(CUSTOMER, "ciao").items() if k != "to"} | {"recipient": BSUID}
    r = await graph.post(f"/{PHONE}/messages", json=by_bsuid)
    assert r.status_code == 200, r.text
    assert r.json()["contacts"] == [{"input": BSUID, "user_id": BSUID}]  # no wa_id: Meta did not reveal a phone
    r = await graph.post(f"/{PHONE}/messages", json=text("+39 333 123 4567", "entrambi", recipient=BSUID))
    assert r.json()["contacts"] == [{"input": "+39 333 123 4567", "wa_id": CUSTOMER}]
    parent = "US.ENT.11815799212886844830"
    assert (await graph.post(f"/{PHONE}/messages", json=by_bsuid | {"recipient": parent})).status_code == 200

    assert [(s.addressed_by, s.to, s.wa_id, s.recipient) for s in sim.sent] == [
        ("recipient", None, None, BSUID), ("to", "+39 333 123 4567", CUSTOMER, BSUID), ("recipient", None, None, parent)]
    assert sim.count_by_recipient() == {BSUID: 1, CUSTOMER: 1, parent: 1}
    assert [s.text for s in sim.sends_to(BSUID)] == ["ciao"]
    assert [(a.to, a.recipient) for a in sim.attempts] == [(None, BSUID), ("+39 333 123 4567", BSUID), (None, parent)]


@pytest.mark.parametrize(
    ("recipient", "status", "code"),
    [(None, 400, 100), ("", 400, 100), ("13491208655302741918", 400, 131009), ("US." + "1" * 129, 400, 131009),
     (12345, 400, 131009), ({"user_id": BSUID}, 400, 131009), ([BSUID], 400, 131009)],
)
async def test_a_send_without_a_usable_to_or_recipient_is_refused_as_meta_does(
        sim: Simulator, graph: httpx.AsyncClient, recipient: Any, status: int, code: int) -> None:
    payload = {k: v for k, v in text(CUSTOMER).items() if k != "to"}
    if recipient is not None:
        payload["recipient"] = recipient
    error = assert_meta_error(await graph.post(f"/{PHONE}/messages", json=payload), status, code)
    assert ("recipient" in error["error_data"]["details"]) and (code != 100 or "to" in error["message"])
    assert sim.sent == [] and [(a.fault, a.error_code) for a in sim.attempts] == [("validation", code)]


async def test_statuses_of_a_send_by_bsuid_name_the_recipient_user_id(sim: Simulator, graph: httpx.AsyncClient,
                                                                       receiver: Receiver) -> None:
    sim.set_webhook(receiver.url, APP_SECRET)
    sim.auto_statuses()
    sim.fail_recipient("IT.0000000000000000001", 131062, via="webhook")
    for recipient in (BSUID, "IT.0000000000000000001"):
        body = {k: v for k, v in text(CUSTOMER).items() if k != "to"} | {"recipient": recipient}
        assert (await graph.post(f"/{PHONE}/messages", json=body)).status_code == 200
    assert await sim.await_webhooks(5.0)
    statuses = receiver.statuses()
    assert sorted((s["recipient_user_id"], s["status"]) for s in statuses) == [
        ("IT.0000000000000000001", "failed"), (BSUID, "delivered"), (BSUID, "read"), (BSUID, "sent")]
    assert all("recipient_id" not in s for s in statuses)
    [failed] = [s for s in statuses if s["status"] == "failed"]
    assert failed["errors"][0]["code"] == 131062


def test_payload_builders_make_username_only_messages_and_bsuid_statuses() -> None:
    message = payloads.text_message(BSUID, "ciao", wamid="wamid.u", timestamp=1779000000)
    assert message == {"from_user_id": BSUID, "id": "wamid.u", "timestamp": "1779000000", "type": "text",
                       "text": {"body": "ciao"}}
    both = payloads.with_user_id(payloads.text_message(CUSTOMER, "ciao", wamid="wamid.b"), BSUID,
                                 parent_user_id="US.ENT.1")
    assert (both["from"], both["from_user_id"], both["from_parent_user_id"]) == (CUSTOMER, BSUID, "US.ENT.1")
    change = payloads.messages_change(PHONE, "1555", [message, both, payloads.text_message("393330000009", "x")],
                                      profile_names={BSUID: "Giulia"}, usernames={BSUID: "giulia.b"})
    assert change["value"]["contacts"] == [
        {"profile": {"name": "Giulia", "username": "giulia.b"}, "user_id": BSUID},
        {"profile": {"name": "User 0009"}, "wa_id": "393330000009"}]
    one = payloads.inbound(message, waba_id=WABA, phone_number_id=PHONE, display_phone_number="1555",
                           profile_name="Giulia", username="giulia.b")
    assert one["entry"][0]["changes"][0]["value"]["contacts"] == [
        {"profile": {"name": "Giulia", "username": "giulia.b"}, "user_id": BSUID}]
    status = payloads.status("wamid.s", "delivered", None, recipient_user_id=BSUID, recipient_parent_user_id="US.ENT.1")
    assert "recipient_id" not in status
    assert (status["recipient_user_id"], status["recipient_parent_user_id"]) == (BSUID, "US.ENT.1")
    hook = payloads.status_webhook(status, waba_id=WABA, phone_number_id=PHONE, display_phone_number="1555",
                                   contacts=[payloads.contact(user_id=BSUID, username="giulia.b")])
    assert hook["entry"][0]["changes"][0]["value"]["contacts"] == [{"profile": {"username": "giulia.b"},
                                                                    "user_id": BSUID}]


# -- faults --------------------------------------------------------------------------------------


async def test_outage_by_requests_and_by_time_then_recovery(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.inject_outage(requests=2)
    for _ in range(2):
        r = await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER))
        assert assert_meta_error(r, 503, 2)["is_transient"] is True
    assert (await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER))).status_code == 200

    sim.inject_outage(seconds=0.3, mode="error")
    assert_meta_error(await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER)), 500, 131000)
    await asyncio.sleep(0.35)
    assert (await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER))).status_code == 200

    sim.inject_outage(requests=1, mode="hang", hang_s=30)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER), timeout=0.3)
    assert time.monotonic() - started < 2
    assert (await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER))).status_code == 200

    assert len(sim.sent) == 3
    assert [a.fault for a in sim.failed_attempts] == ["outage:unavailable"] * 2 + ["outage:error", "outage:hang"]


async def test_accepted_but_unanswered_send_is_recorded_once(sim: Simulator, graph: httpx.AsyncClient) -> None:
    """The ambiguous timeout: Meta took the message but the client never saw the wamid."""
    sim.inject_outage(requests=1, mode="accept_then_hang", hang_s=30)
    with pytest.raises(httpx.ReadTimeout):
        await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER, "once", biz_opaque_callback_data="msg-1"), timeout=0.3)
    assert [s.callback_data for s in sim.sent] == ["msg-1"]


async def test_throughput_limit_130429_and_pair_limit_131056(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.set_rate_limit(per_second=5)
    replies = await asyncio.gather(*(graph.post(f"/{PHONE}/messages", json=text(f"39333000{i:04d}")) for i in range(8)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [200] * 5 + [400] * 3
    for r in replies:
        if r.status_code == 400:
            error = assert_meta_error(r, 400, 130429)
            assert error["message"] == "(#130429) Rate limit hit"
    # the limit is per phone number: the other number still sends
    other = await graph.post(f"/{OTHER_PHONE}/messages", json=text(CUSTOMER), headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert other.status_code == 200
    await asyncio.sleep(1.05)
    assert (await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER))).status_code == 200

    sim.reset()
    sim.set_rate_limit(per_recipient=2, recipient_window_s=0.5)
    results = [(await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER))).status_code for _ in range(3)]
    assert results == [200, 200, 400]
    assert (await graph.post(f"/{PHONE}/messages", json=text("393339999999"))).status_code == 200
    assert sim.failed_attempts[-1].error_code == 131056 and sim.failed_attempts[-1].fault == "pair_rate_limit"
    await asyncio.sleep(0.55)
    assert (await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER))).status_code == 200


async def test_permanent_and_transient_recipient_errors(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.fail_recipient(CUSTOMER, 131047)
    for _ in range(2):
        error = assert_meta_error(await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER)), 400, 131047)
        assert "24 hours" in error["error_data"]["details"]
    assert (await graph.post(f"/{PHONE}/messages", json=text("393330000001"))).status_code == 200

    sim.fail_recipient("393330000002", 131026, times=1)
    assert_meta_error(await graph.post(f"/{PHONE}/messages", json=text("393330000002")), 400, 131026)
    assert (await graph.post(f"/{PHONE}/messages", json=text("393330000002"))).status_code == 200

    assert sim.count_by_recipient() == {"393330000001": 1, "393330000002": 1}
    assert [(a.to, a.error_code) for a in sim.failed_attempts] == [(CUSTOMER, 131047)] * 2 + [("393330000002", 131026)]


async def test_recipient_error_delivered_as_failed_status(sim: Simulator, graph: httpx.AsyncClient, receiver: Receiver) -> None:
    sim.set_webhook(receiver.url, APP_SECRET)
    sim.fail_recipient(CUSTOMER, 131047, via="webhook")
    r = await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER, biz_opaque_callback_data="out-9"))
    assert r.status_code == 200
    assert await sim.await_webhooks(5.0)
    [failed] = receiver.statuses()
    assert failed["status"] == "failed" and failed["id"] == r.json()["messages"][0]["id"]
    assert failed["errors"][0]["code"] == 131047 and failed["biz_opaque_callback_data"] == "out-9"
    assert receiver.accepted[0]["entry"][0]["id"] == WABA


async def test_latency_is_applied(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.set_latency(0.05, max_seconds=0.08)
    started = time.monotonic()
    assert (await graph.post(f"/{PHONE}/messages", json=text(CUSTOMER))).status_code == 200
    assert time.monotonic() - started >= 0.05


# -- templates and media -------------------------------------------------------------------------


async def test_templates_are_paged_with_cursors(sim: Simulator, graph: httpx.AsyncClient) -> None:
    names = [f"tpl_{i}" for i in range(5)]
    for name in names:
        sim.add_template(WABA, name, "it", category="MARKETING", components=[{"type": "BODY", "text": "Ciao {{1}}"}])
    sim.add_template("999", "elsewhere")

    seen: list[str] = []
    pages = 0
    url: str | None = f"/{WABA}/message_templates?limit=2"
    while url is not None:
        r = await graph.get(url)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        for t in page["data"]:
            assert set(t) >= {"name", "language", "status", "category", "id", "components"}
            assert t["status"] == "APPROVED" and t["language"] == "it"
        seen += [t["name"] for t in page["data"]]
        assert set(page["paging"]["cursors"]) == {"before", "after"}
        url = page["paging"].get("next")
        if pages > 1:
            assert "previous" in page["paging"]
    assert seen == names and pages == 3

    r = await graph.get(f"/{WABA}/message_templates", params={"limit": 10, "name": "tpl_3", "fields": "name,status"})
    assert r.json()["data"] == [{"name": "tpl_3", "status": "APPROVED", "id": sim.state.templates_of(WABA)[3].id}]
    assert_meta_error(await graph.get("/424242/message_templates"), 400, 100)
    assert_meta_error(await graph.get(f"/{WABA}/message_templates", headers={"Authorization": "Bearer nope"}), 401, 190)


async def test_strict_templates_refuse_unknown_names() -> None:
    with Simulator(strict_templates=True) as sim:
        sim.register_phone(PHONE, TOKEN, WABA)
        sim.add_template(WABA, "known", "it")
        async with httpx.AsyncClient(base_url=sim.graph_url, headers={"Authorization": f"Bearer {TOKEN}"}) as graph:
            def tpl(name: str) -> dict[str, Any]:
                return {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "template", "template": {"name": name, "language": {"code": "it"}}}

            assert (await graph.post(f"/{PHONE}/messages", json=tpl("known"))).status_code == 200
            assert_meta_error(await graph.post(f"/{PHONE}/messages", json=tpl("unknown")), 400, 132001)


async def test_media_upload_url_download_delete(sim: Simulator, graph: httpx.AsyncClient) -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
    r = await graph.post(
        f"/{PHONE}/media",
        data={"messaging_product": "whatsapp", "type": "image/png"},
        files={"file": ("photo.png", data, "image/png")},
    )
    assert r.status_code == 200, r.text
    media_id = r.json()["id"]
    assert media_id.isdigit()

    info = (await graph.get(f"/{media_id}")).json()
    assert info["messaging_product"] == "whatsapp" and info["id"] == media_id
    assert info["mime_type"] == "image/png" and info["file_size"] == len(data)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()

    async with httpx.AsyncClient() as plain:
        assert (await plain.get(info["url"])).status_code == 401  # the URL alone is not enough
        download = await plain.get(info["url"], headers={"Authorization": f"Bearer {TOKEN}"})
    assert download.status_code == 200 and download.content == data
    assert download.headers["content-type"].startswith("image/png")

    assert (await graph.delete(f"/{media_id}")).json() == {"success": True}
    assert assert_meta_error(await graph.get(f"/{media_id}"), 400, 100)["error_subcode"] == 33

    missing = await graph.post(f"/{PHONE}/media", data={"messaging_product": "whatsapp"}, files={"file": ("a.bin", b"x", "application/octet-stream")})
    assert "type" in assert_meta_error(missing, 400, 100)["message"]

    # inbound media a test pre-loads, as if a customer had sent it
    voice_id = sim.add_media(b"OggS-voice", "audio/ogg; codecs=opus")
    info = (await graph.get(f"/{voice_id}")).json()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as plain:
        assert (await plain.get(info["url"])).content == b"OggS-voice"


# -- webhooks ------------------------------------------------------------------------------------


def every_kind_of_inbound() -> list[dict[str, Any]]:
    who = CUSTOMER
    ctx = payloads.reply_context("15550001111", "wamid.out-1")
    return [
        payloads.text_message(who, "ciao / è tutto ok? https://example.com"),
        payloads.image_message(who, "111", caption="foto"),
        payloads.audio_message(who, "222", voice=True),
        payloads.video_message(who, "333"),
        payloads.document_message(who, "444", filename="fattura.pdf"),
        payloads.sticker_message(who, "555", animated=True),
        payloads.location_message(who, 45.46, 9.19, name="Duomo", address="Piazza del Duomo, Milano"),
        payloads.contacts_message(who, [payloads.contact_card("Mario Rossi", "+39 333 000 0000", last_name="Rossi", wa_id="393330000000")]),
        payloads.button_reply_message(who, "yes", "Sì", context=ctx),
        payloads.list_reply_message(who, "slot-2", "Martedì", description="10:00", context=ctx),
        payloads.button_message(who, "STOP", "Stop promotions", context=ctx),
        payloads.reaction_message(who, "wamid.out-1", "👍"),
        payloads.reaction_removed(who, "wamid.out-1"),
        payloads.order_message(who, "cat-1", [payloads.order_item("SKU-1", 2, 9.5)]),
        payloads.text_message(who, "Vorrei info", referral=payloads.referral()),
        payloads.system_message(who, "User changed number", new_wa_id="393339999999"),
        payloads.unsupported_message(who),
    ]


async def test_signed_webhooks_reach_a_verifying_receiver(sim: Simulator, receiver: Receiver) -> None:
    inbound = every_kind_of_inbound()
    async with httpx.AsyncClient() as client:
        for message in inbound:
            body = payloads.inbound(message, waba_id=WABA, phone_number_id=PHONE, display_phone_number="15550001111", profile_name="Mario")
            r = await post_webhook(receiver.url, body, APP_SECRET, client=client)
            assert r.status_code == 200

        # a batch: two entries, a messages change and a statuses change, a template status update
        batch = payloads.webhook(
            payloads.entry(
                WABA,
                payloads.messages_change(PHONE, "15550001111", [payloads.text_message(CUSTOMER, "1"), payloads.text_message("393330000009", "2")]),
                payloads.statuses_change(PHONE, "15550001111", payloads.status_sequence("wamid.out-1", CUSTOMER)
                                         + [payloads.status("wamid.out-2", "failed", CUSTOMER, error_code=131026)]),
            ),
            payloads.entry(WABA, payloads.template_status_change("1689556908129832", "order_update", "it", "REJECTED", reason="INVALID_FORMAT")),
        )
        assert (await post_webhook(receiver.url, batch, APP_SECRET, client=client)).status_code == 200

        # a wrong secret or altered bytes never pass
        assert (await post_webhook(receiver.url, batch, "other-secret", client=client)).status_code == 401
        raw = encode(batch)
        tampered = await client.post(receiver.url, content=raw.replace(b'"1"', b'"3"'), headers={"X-Hub-Signature-256": sign(raw, APP_SECRET)})
        assert tampered.status_code == 401

    assert receiver.rejected == 2 and len(receiver.accepted) == len(inbound) + 1
    kinds = [p["entry"][0]["changes"][0]["value"]["messages"][0]["type"] for p in receiver.accepted[:-1]]
    assert kinds == ["text", "image", "audio", "video", "document", "sticker", "location", "contacts", "interactive",
                     "interactive", "button", "reaction", "reaction", "order", "text", "system", "unsupported"]
    first = receiver.accepted[0]["entry"][0]["changes"][0]["value"]
    assert first["contacts"] == [{"profile": {"name": "Mario"}, "wa_id": CUSTOMER}]
    assert first["metadata"] == {"display_phone_number": "15550001111", "phone_number_id": PHONE}
    # Meta's bytes: escaped slashes and non-ASCII as \\u escapes, so re-serialising breaks the signature
    assert b"https:\\/\\/example.com" in receiver.raw[0] and b"\\u00e8" in receiver.raw[0]
    statuses = receiver.statuses()
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read", "failed"]
    assert "expiration_timestamp" in statuses[0]["conversation"] and "conversation" not in statuses[3]
    assert receiver.accepted[-1]["entry"][1]["changes"][0]["field"] == "message_template_status_update"


async def test_auto_statuses_shuffled_and_duplicated(sim: Simulator, graph: httpx.AsyncClient, receiver: Receiver) -> None:
    sim.set_webhook(receiver.url, APP_SECRET)
    sim.auto_statuses(shuffle=True, duplicate=1.0)
    wamids = []
    for to in (CUSTOMER, "393330000001"):
        r = await graph.post(f"/{PHONE}/messages", json=text(to, biz_opaque_callback_data=f"cb-{to}"))
        wamids.append(r.json()["messages"][0]["id"])
    assert await sim.await_webhooks(5.0)

    statuses = receiver.statuses()
    assert len(statuses) == 2 * 3 * 2 and receiver.rejected == 0
    for wamid, to in zip(wamids, (CUSTOMER, "393330000001"), strict=True):
        mine = [s for s in statuses if s["id"] == wamid]
        assert sorted(s["status"] for s in mine) == sorted(["sent", "delivered", "read"] * 2)
        assert {s["recipient_id"] for s in mine} == {to} and {s["biz_opaque_callback_data"] for s in mine} == {f"cb-{to}"}
    assert all(d.status == 200 for d in sim.webhook_deliveries)

    # posting through the simulator itself (same signing, recorded as a delivery)
    delivery = await sim.apost_webhook(payloads.inbound(payloads.text_message(CUSTOMER, "hi"), waba_id=WABA, phone_number_id=PHONE, display_phone_number="1"))
    assert delivery.status == 200


# -- the process ---------------------------------------------------------------------------------


def test_cli_process_is_controlled_through_the_admin_api() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.simulator", "--port", str(port), "--phone", f"{PHONE}:{TOKEN}:{WABA}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5.0) as client:
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.get("/_sim/stats")
                    break
                except httpx.ConnectError:
                    assert proc.poll() is None and time.monotonic() < deadline, "simulator did not start"
                    time.sleep(0.05)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert client.post("/_sim/fail_recipient", json={"to": "393330000002", "code": 131026}).status_code == 200
            assert client.post("/_sim/outage", json={"requests": 1}).status_code == 200
            assert client.post(f"/v21.0/{PHONE}/messages", json=text(CUSTOMER), headers=auth).status_code == 503
            assert client.post(f"/v21.0/{PHONE}/messages", json=text(CUSTOMER), headers=auth).status_code == 200
            assert client.post(f"/v21.0/{PHONE}/messages", json=text("393330000002"), headers=auth).json()["error"]["code"] == 131026
            media_id = client.post("/_sim/media", content=b"pdf-bytes", headers={"Content-Type": "application/pdf"}).json()["id"]
            assert client.get(f"/v21.0/{media_id}", headers=auth).json()["mime_type"] == "application/pdf"
            stats = client.get("/_sim/stats").json()
            assert stats["accepted"] == 1 and stats["by_recipient"] == {CUSTOMER: 1}
            assert stats["failures_by_code"] == {"2": 1, "131026": 1}
            assert [r["to"] for r in client.get("/_sim/sent").json()["data"]] == [CUSTOMER]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{port}/v21.0" in out
