"""Parsing recorded WhatsApp Cloud API webhook payloads (tests/data/whatsapp/*.json) into typed events,
and surviving hostile ones."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from engine.errors import InvalidInput
from engine.whatsapp.events import (
    ButtonReply,
    ContactsContent,
    EditContent,
    InboundMessage,
    InteractiveReply,
    LocationContent,
    MediaContent,
    MessageStatus,
    MessageType,
    OrderContent,
    Reaction,
    RevokeContent,
    StatusUpdate,
    SystemContent,
    TextContent,
    Unsupported,
    WebhookBatch,
)
from engine.whatsapp.parse import InvalidWebhook, parse_webhook

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "whatsapp"
PNID = "106540352242922"
USER = "16505551234"
BSUID = "US.13491208655302741918"  # the business-scoped user id of USER in the bsuid_* payloads
PARENT_BSUID = "US.ENT.11815799212886844830"
BSUID_SHAPE = re.compile(r"[A-Z]{2}(?:\.[A-Z]{1,8})?\.[A-Za-z0-9]{1,128}")


@cache
def _load_text(name: str) -> str:
    return (DATA / f"{name}.json").read_text()


def load(name: str) -> Any:
    return json.loads(_load_text(name))


def only_message(name: str) -> InboundMessage:
    batch = parse_webhook(load(name))
    assert batch.rejected == ()
    assert len(batch.messages) == 1
    return batch.messages[0]


def dig(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# --- messages, one recorded payload per type ----------------------------------------------------

MESSAGE_CASES: list[tuple[str, type, dict[str, object]]] = [
    ("message_text", TextContent, {
        "wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", "type": MessageType.TEXT,
        "raw_type": "text", "text": "Does it come in another color?", "content.body": "Does it come in another color?",
        "timestamp": ts(1749416383), "context_wamid": None, "forwarded": False, "referral": None}),
    ("message_text_reply_forwarded", TextContent, {
        "text": "Look at this", "context_wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI1QjZGOTA1QkM3NzBBRkVCMDQA",
        "forwarded": True}),
    ("message_image", MediaContent, {
        "type": MessageType.IMAGE, "text": "This is the one I mean", "content.kind": MessageType.IMAGE,
        "content.media_id": "1003383421387256", "content.mime_type": "image/jpeg",
        "content.sha256": "SfInY0gHZ6ZcqIQ3QH5gjAPC5/A1Y2Bmr1Tz2jK7ZP4=", "content.caption": "This is the one I mean",
        "content.voice": False}),
    ("message_audio_voice", MediaContent, {
        "type": MessageType.AUDIO, "text": None, "content.media_id": "1236350287490060",
        "content.mime_type": "audio/ogg; codecs=opus", "content.voice": True, "content.caption": None}),
    ("message_video", MediaContent, {
        "type": MessageType.VIDEO, "text": "Unboxing", "content.media_id": "1166846181421424",
        "content.mime_type": "video/mp4"}),
    ("message_document", MediaContent, {
        "type": MessageType.DOCUMENT, "text": "invoice-2025-04.pdf", "content.filename": "invoice-2025-04.pdf",
        "content.mime_type": "application/pdf", "content.media_id": "1037543291543636"}),
    ("message_sticker", MediaContent, {
        "type": MessageType.STICKER, "text": None, "content.animated": True, "content.mime_type": "image/webp"}),
    ("message_location", LocationContent, {
        "type": MessageType.LOCATION, "text": "📍 Meta Headquarters, 1 Hacker Way, Menlo Park, CA 94025",
        "content.latitude": 37.483307, "content.longitude": -122.148981, "content.name": "Meta Headquarters",
        "content.url": "https://www.facebook.com/Meta"}),
    ("message_contacts", ContactsContent, {
        "type": MessageType.CONTACTS, "text": "👤 Barbara J. Johnson, Chandler"}),
    ("message_interactive_button_reply", InteractiveReply, {
        "type": MessageType.INTERACTIVE, "text": "Yes, confirm", "content.kind": "button_reply",
        "content.reply_id": "confirm_order_8841", "content.title": "Yes, confirm",
        "context_wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJGMDFFNjM3QzU0RDZFMzMzNzcA"}),
    ("message_interactive_list_reply", InteractiveReply, {
        "text": "Express", "content.kind": "list_reply", "content.reply_id": "shipping_express",
        "content.description": "Next business day, 9.90 EUR"}),
    ("message_interactive_nfm_reply", InteractiveReply, {
        "text": "Sent", "content.kind": "nfm_reply", "content.name": "flow", "content.reply_id": None,
        "content.response_json": '{"flow_token": "7b2c1e0a-booking", "date": "2025-05-02", "party_size": "4"}'}),
    ("message_button", ButtonReply, {
        "type": MessageType.BUTTON, "text": "Stop promotions", "content.payload": "STOP_PROMOTIONS",
        "content.text": "Stop promotions",
        "context_wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDN0M1MjJBNUNDQ0U1OTFGRDQA"}),
    ("message_reaction", Reaction, {
        "type": MessageType.REACTION, "text": "👍", "content.emoji": "👍", "content.removed": False,
        "content.target_wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDN0M1MjJBNUNDQ0U1OTFGRDQA"}),
    ("message_reaction_removed", Reaction, {
        "type": MessageType.REACTION, "text": None, "content.emoji": None, "content.removed": True}),
    ("message_order", OrderContent, {
        "type": MessageType.ORDER, "text": "Delivery after 6pm please", "content.catalog_id": "194836987003835"}),
    ("message_referral", TextContent, {
        "text": "Can I get more info about this?", "referral.source_type": "ad",
        "referral.source_id": "120226305854810726", "referral.headline": "Rain jackets -20%",
        "referral.media_type": "image", "referral.source_url": "https://fb.me/3cr4Wqqkv"}),
    ("message_system", SystemContent, {
        "type": MessageType.SYSTEM, "profile_name": None, "content.kind": "user_changed_number",
        "content.new_wa_id": "16505559999",
        "text": "User Sheena Nelson changed from 16505551234 to 16505559999"}),
    ("message_unsupported", Unsupported, {
        "type": MessageType.UNSUPPORTED, "raw_type": "unsupported", "text": None, "content.kind": "poll"}),
    ("message_edit", EditContent, {
        "type": MessageType.EDIT, "text": "Does it come in another colour?",
        "content.target_wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        "content.new_type": MessageType.TEXT}),
    ("message_revoke", RevokeContent, {
        "type": MessageType.REVOKE, "text": None,
        "content.target_wamid": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="}),
    ("message_unknown_type", Unsupported, {
        "type": MessageType.UNKNOWN, "raw_type": "hologram", "text": None, "content.raw_type": "hologram"}),
]


@pytest.mark.parametrize(("name", "content_class", "expected"), MESSAGE_CASES, ids=[c[0] for c in MESSAGE_CASES])
def test_recorded_message(name: str, content_class: type, expected: dict[str, object]) -> None:
    message = only_message(name)
    assert isinstance(message.content, content_class)
    for path, value in expected.items():
        assert dig(message, path) == value, path
    # common to every recorded message
    assert message.phone_number_id == PNID
    assert message.display_phone_number == "15550783881"
    assert message.from_wa_id == USER
    assert message.timestamp.tzinfo is UTC
    assert message.raw == load(name)["entry"][0]["changes"][0]["value"]["messages"][0]
    if "profile_name" not in expected:
        assert message.profile_name == "Sheena Nelson"


def test_every_recorded_message_file_is_in_the_table() -> None:
    recorded = {p.stem for p in DATA.glob("message_*.json")}
    assert recorded == {c[0] for c in MESSAGE_CASES}


def test_contacts_and_order_keep_their_items() -> None:
    contacts = only_message("message_contacts").content
    assert isinstance(contacts, ContactsContent)
    assert len(contacts.contacts) == 2
    assert contacts.contacts[0]["phones"][0]["wa_id"] == USER
    order = only_message("message_order").content
    assert isinstance(order, OrderContent)
    assert [i["product_retailer_id"] for i in order.items] == ["di9ozbzfi4", "nqryix03ez"]


def test_unsupported_message_keeps_meta_errors() -> None:
    message = only_message("message_unsupported")
    assert isinstance(message.content, Unsupported)
    assert message.errors == message.content.errors
    (error,) = message.errors
    assert (error.code, error.title, error.details) == (131051, "Message type unknown",
                                                         "Message type is currently not supported.")


def test_edit_carries_the_new_content() -> None:
    content = only_message("message_edit").content
    assert isinstance(content, EditContent)
    assert content.content == TextContent("Does it come in another colour?")


def test_events_are_frozen_and_raw_is_read_only() -> None:
    message = only_message("message_text")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        message.raw["id"] = "changed"  # type: ignore[index]
    assert not hasattr(message, "__dict__")  # slotted


# --- statuses -----------------------------------------------------------------------------------

STATUS_CASES: list[tuple[str, dict[str, object]]] = [
    ("status_sent", {
        "status": MessageStatus.SENT, "raw_status": "sent", "timestamp": ts(1750263773), "recipient_id": USER,
        "conversation_id": "6ceb9d929c0fd1e2d1eb5e7d0b4b5bd1", "conversation_origin": "service",
        "conversation_expires_at": ts(1750350180), "errors": ()}),
    ("status_delivered", {
        "status": MessageStatus.DELIVERED, "conversation_origin": "service", "conversation_expires_at": None}),
    ("status_read", {
        "status": MessageStatus.READ, "pricing": None, "conversation_id": None, "conversation_origin": None}),
    ("status_failed", {"status": MessageStatus.FAILED, "raw_status": "failed", "pricing": None}),
    ("status_unknown", {"status": MessageStatus.UNKNOWN, "raw_status": "teleported"}),
]


@pytest.mark.parametrize(("name", "expected"), STATUS_CASES, ids=[c[0] for c in STATUS_CASES])
def test_recorded_status(name: str, expected: dict[str, object]) -> None:
    batch = parse_webhook(load(name))
    assert batch.rejected == () and batch.messages == ()
    (status,) = batch.statuses
    assert isinstance(status, StatusUpdate)
    for path, value in expected.items():
        assert dig(status, path) == value, path
    assert status.phone_number_id == PNID
    assert status.raw == load(name)["entry"][0]["changes"][0]["value"]["statuses"][0]


def test_sent_status_keeps_pricing() -> None:
    (status,) = parse_webhook(load("status_sent")).statuses
    assert status.pricing is not None
    assert dict(status.pricing) == {"billable": False, "pricing_model": "PMP", "category": "service",
                                    "type": "free_customer_service"}


def test_failed_status_errors() -> None:
    (status,) = parse_webhook(load("status_failed")).statuses
    (error,) = status.errors
    assert error.code == 131047
    assert error.title == "Re-engagement message"
    assert error.details is not None and error.details.startswith("Message failed to send")
    assert error.href == "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


# --- business-scoped user ids (BSUID) and usernames --------------------------------------------


def test_a_username_only_message_is_a_message_named_by_its_bsuid() -> None:
    """A user who adopted a username may write without a phone number: never dropped."""
    batch = parse_webhook(load("bsuid_message_username_only"))
    assert batch.rejected == ()
    (message,) = batch.messages
    assert (message.from_wa_id, message.from_user_id, message.from_parent_user_id) == (None, BSUID, None)
    assert (message.profile_name, message.username, message.sender) == ("Sheena Nelson", "sheena.nelson", BSUID)
    assert (message.type, message.text) == (MessageType.TEXT, "Hi, is my order ready?")
    (contact,) = batch.contacts
    assert (contact.wa_id, contact.user_id, contact.username, contact.profile_name) == (
        None, BSUID, "sheena.nelson", "Sheena Nelson")


def test_a_message_with_phone_and_bsuid_keeps_both_and_the_parent() -> None:
    (message,) = parse_webhook(load("bsuid_message_with_phone")).messages
    assert (message.from_wa_id, message.from_user_id, message.from_parent_user_id) == (USER, BSUID, PARENT_BSUID)
    assert (message.profile_name, message.username, message.sender) == ("Sheena Nelson", None, BSUID)
    (contact,) = parse_webhook(load("bsuid_message_with_phone")).contacts
    assert (contact.wa_id, contact.user_id, contact.parent_user_id) == (USER, BSUID, PARENT_BSUID)


def test_a_status_of_a_message_sent_to_a_bsuid_is_kept_without_recipient_id() -> None:
    batch = parse_webhook(load("bsuid_status_delivered"))
    assert batch.rejected == () and batch.messages == ()
    (status,) = batch.statuses
    assert (status.status, status.recipient_id, status.recipient_user_id) == (MessageStatus.DELIVERED, None, BSUID)
    assert status.timestamp == ts(1779000120)
    (contact,) = batch.contacts  # delivered and read carry the username
    assert (contact.wa_id, contact.user_id, contact.username, contact.profile_name) == (
        None, BSUID, "sheena.nelson", None)


def test_the_profile_of_a_username_only_sender_is_found_by_bsuid_among_several() -> None:
    other = "IT.8800000000000000001"
    payload = _with_message(**{"id": "wamid.a", "from_user_id": other, "timestamp": "1779000000", "type": "text",
                               "text": {"body": "a"}})
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"].append({"id": "wamid.b", "from": USER, "timestamp": "1779000001", "type": "text",
                              "text": {"body": "b"}})
    value["contacts"] = [{"profile": {"name": "Phone Person"}, "wa_id": USER},
                         {"profile": {"name": "Handle Person", "username": "handle"}, "user_id": other}]
    batch = parse_webhook(payload)
    assert batch.rejected == ()
    assert [(m.sender, m.profile_name, m.username) for m in batch.messages] == [
        (other, "Handle Person", "handle"), (USER, "Phone Person", None)]


MALFORMED_BSUIDS: list[object] = [
    "US." + "1" * 129,  # longer than Meta's 128 characters
    "x" * 100_000,
    "13491208655302741918",  # a phone-like string: no country code
    "us.13491208655302741918",
    "US.1349 1208",
    "US.١٢٣٤",  # digits, but not ASCII ones
    "US.",
    "",
    13491208655302741918,
    1.5,
    True,
    ["US.13491208655302741918"],
    {"id": "US.13491208655302741918"},
    {"a": [{"a": [{"a": ["US.13491208655302741918"]}]}]},  # nested objects
]


@pytest.mark.parametrize("bad", MALFORMED_BSUIDS, ids=[f"bsuid{i}" for i in range(len(MALFORMED_BSUIDS))])
def test_a_malformed_bsuid_alone_rejects_the_message_readably(bad: object) -> None:
    payload = load("bsuid_message_username_only")
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"][0]["from_user_id"] = bad
    value["contacts"][0]["user_id"] = bad
    batch = parse_webhook(payload)
    assert batch.messages == () and batch.contacts == ()
    assert [r.reason for r in batch.rejected] == [
        "contact without a valid 'wa_id' (phone number) or 'user_id' (business-scoped user id)",
        "message without a valid 'from' (phone number) or 'from_user_id' (business-scoped user id)"]


@pytest.mark.parametrize("bad", MALFORMED_BSUIDS, ids=[f"bsuid{i}" for i in range(len(MALFORMED_BSUIDS))])
def test_a_malformed_bsuid_beside_a_phone_is_ignored_and_noted(bad: object) -> None:
    """The phone still names the sender: the message is kept, the bad field is not, the receipt says why."""
    payload = load("bsuid_message_with_phone")
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"][0]["from_user_id"] = bad
    value["contacts"][0]["user_id"] = bad
    batch = parse_webhook(payload)
    (message,) = batch.messages
    assert (message.from_wa_id, message.from_user_id, message.sender) == (USER, None, USER)
    (contact,) = batch.contacts
    assert (contact.wa_id, contact.user_id) == (USER, None)
    assert [r.reason for r in batch.rejected] == ["contact with a malformed 'user_id'; the field was ignored",
                                                  "message with a malformed 'from_user_id'; the field was ignored"]


@pytest.mark.parametrize("bad", MALFORMED_BSUIDS, ids=[f"bsuid{i}" for i in range(len(MALFORMED_BSUIDS))])
def test_a_malformed_recipient_user_id_leaves_the_status_standing_on_its_wamid(bad: object) -> None:
    payload = load("bsuid_status_delivered")
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["recipient_user_id"] = bad
    batch = parse_webhook(payload)
    (status,) = batch.statuses
    assert (status.recipient_id, status.recipient_user_id, status.status) == (None, None, MessageStatus.DELIVERED)
    assert [r.reason for r in batch.rejected] == ["status with a malformed 'recipient_user_id'; the field was ignored"]


def test_a_username_that_is_not_a_short_string_is_ignored() -> None:
    for bad in ("u" * 129, {"name": "x"}, 42, ""):
        payload = load("bsuid_message_username_only")
        payload["entry"][0]["changes"][0]["value"]["contacts"][0]["profile"]["username"] = bad
        batch = parse_webhook(payload)
        (message,) = batch.messages
        assert (message.from_user_id, message.username, message.profile_name) == (BSUID, None, "Sheena Nelson")
        assert [r.reason for r in batch.rejected] == [
            "contact profile with a malformed 'username'; the field was ignored"]


def test_a_parent_bsuid_is_not_mistaken_for_a_malformed_one() -> None:
    payload = load("bsuid_message_username_only")
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"][0]["from_user_id"] = PARENT_BSUID  # a send to a parent BSUID works the same way
    value["contacts"][0]["user_id"] = PARENT_BSUID
    (message,) = parse_webhook(payload).messages
    assert message.from_user_id == PARENT_BSUID and message.username == "sheena.nelson"


# --- other changes ------------------------------------------------------------------------------


def test_template_status_update() -> None:
    batch = parse_webhook(load("template_status_update"))
    (update,) = batch.template_updates
    assert (update.waba_id, update.event, update.template_id, update.name, update.language, update.reason) == (
        "102290129340398", "REJECTED", "1689556908129832", "order_confirmation", "en_US", "INVALID_FORMAT")
    assert update.is_status_change
    assert update.category == "UTILITY"
    assert batch.phone_number_ids == frozenset()


def test_template_category_update_is_a_template_update_but_not_a_status_change() -> None:
    (update,) = parse_webhook(load("template_category_update")).template_updates
    assert update.field == "template_category_update"
    assert not update.is_status_change
    assert update.event == "template_category_update"
    assert update.category == "MARKETING"
    assert update.raw["previous_category"] == "UTILITY"
    assert update.name == "order_confirmation"


def test_value_level_errors() -> None:
    batch = parse_webhook(load("change_errors"))
    (change_error,) = batch.errors
    assert change_error.phone_number_id == PNID
    assert change_error.waba_id == "102290129340398"
    assert change_error.error.code == 131000
    assert change_error.error.details == "Unable to retrieve media for this message."
    assert batch.messages == () and batch.statuses == () and batch.rejected == ()
    assert batch.phone_number_ids == {PNID}


def test_unknown_field_is_kept_raw() -> None:
    batch = parse_webhook(load("unknown_field"))
    (change,) = batch.unknown_changes
    assert (change.waba_id, change.field) == ("102290129340398", "phone_number_quality_update")
    assert change.raw == {"phone_number": "15550783881", "event": "FLAGGED", "current_limit": "TIER_1K"}
    assert not batch.is_empty


def test_batch_of_two_entries_keeps_order_and_routes() -> None:
    batch = parse_webhook(load("batch_two_entries"))
    assert batch.rejected == ()
    assert [m.wamid for m in batch.messages] == ["wamid.batch.1", "wamid.batch.2", "wamid.batch.3", "wamid.batch.4"]
    assert [m.profile_name for m in batch.messages] == ["Sheena Nelson", "Marco Rossi", "Sheena Nelson", "Giulia"]
    assert [m.phone_number_id for m in batch.messages] == [PNID, PNID, PNID, "110200345501442"]
    assert [(s.wamid, s.status) for s in batch.statuses] == [
        ("wamid.out.1", MessageStatus.DELIVERED), ("wamid.out.2", MessageStatus.READ),
        ("wamid.out.3", MessageStatus.SENT)]
    assert [(c.wa_id, c.phone_number_id) for c in batch.contacts] == [
        (USER, PNID), ("393471234567", PNID), ("393339876543", "110200345501442")]
    (template,) = batch.template_updates
    assert (template.waba_id, template.event, template.template_id) == ("203311229004417", "APPROVED", "778899")
    (unknown,) = batch.unknown_changes
    assert unknown.field == "account_update"
    assert batch.phone_number_ids == {PNID, "110200345501442"}


def test_empty_entry_list_is_an_empty_batch() -> None:
    batch = parse_webhook({"object": "whatsapp_business_account", "entry": []})
    assert batch == WebhookBatch()
    assert batch.is_empty


def test_unknown_enum_values_become_unknown() -> None:
    assert MessageType("hologram") is MessageType.UNKNOWN
    assert MessageType("TEXT") is MessageType.TEXT
    assert MessageStatus("teleported") is MessageStatus.UNKNOWN
    assert MessageStatus("played") is MessageStatus.PLAYED
    assert MessageStatus(42) is MessageStatus.UNKNOWN  # type: ignore[arg-type]


# --- hostile input ------------------------------------------------------------------------------


def _deep(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = {"a": [value]}
    return value


def _with_message(**message: object) -> dict[str, Any]:
    payload = load("message_text")
    payload["entry"][0]["changes"][0]["value"]["messages"][0] = message
    return payload


def _with_status(**status: object) -> dict[str, Any]:
    payload = load("status_read")
    payload["entry"][0]["changes"][0]["value"]["statuses"][0] = status
    return payload


INVALID_TOP_LEVEL: list[object] = [
    None, "", "whatsapp", 42, 3.5, True, [], [{"object": "whatsapp_business_account"}],
    {}, {"entry": []}, {"object": "page", "entry": []}, {"object": None, "entry": []},
    {"object": "whatsapp_business_account"}, {"object": "whatsapp_business_account", "entry": None},
    {"object": "whatsapp_business_account", "entry": {"id": "1"}},
    {"object": "whatsapp_business_account", "entry": "[]"},
]


@pytest.mark.parametrize("payload", INVALID_TOP_LEVEL)
def test_unusable_top_level_raises_invalid_webhook(payload: object) -> None:
    with pytest.raises(InvalidWebhook) as info:
        parse_webhook(payload)
    assert isinstance(info.value, InvalidInput)


GOOD = {"id": "wamid.ok", "from": USER, "timestamp": "1749416383", "type": "text", "text": {"body": "ok"}}

REJECTED_CASES: list[tuple[str, object, str]] = [
    ("entry not an object", {"object": "whatsapp_business_account", "entry": ["x", 1, None]}, "entry is not"),
    ("entry without id", {"object": "whatsapp_business_account", "entry": [{"changes": []}]}, "entry without"),
    ("changes not a list", {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": "no"}]},
     "'changes'"),
    ("change a string", {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": ["messages"]}]},
     "change is not"),
    ("change value a string", {"object": "whatsapp_business_account", "entry": [
        {"id": "1", "changes": [{"field": "messages", "value": "hello"}]}]}, "without an object 'value'"),
    ("change without field", {"object": "whatsapp_business_account", "entry": [
        {"id": "1", "changes": [{"value": {}}]}]}, "'field'"),
    ("no phone_number_id", {"object": "whatsapp_business_account", "entry": [
        {"id": "1", "changes": [{"field": "messages", "value": {"messages": [GOOD]}}]}]}, "phone_number_id"),
    ("message not an object", _with_message(), "message without"),
    ("message without id", _with_message(**{k: v for k, v in GOOD.items() if k != "id"}), "'id'"),
    ("message with None id", _with_message(**{**GOOD, "id": None}), "'id'"),
    ("message with list id", _with_message(**{**GOOD, "id": ["wamid"]}), "'id'"),
    ("message with huge id", _with_message(**{**GOOD, "id": "w" * 100_000}), "'id'"),
    ("message without from", _with_message(**{k: v for k, v in GOOD.items() if k != "from"}), "'from'"),
    ("message without from, malformed BSUID", _with_message(
        **{k: v for k, v in GOOD.items() if k != "from"}, from_user_id="13491208655302741918"), "'from_user_id'"),
    ("message with from and BSUID both malformed", _with_message(
        **{**GOOD, "from": {"phone": USER}, "from_user_id": ["US.1"]}), "'from' (phone number) or 'from_user_id'"),
    ("garbage timestamp", _with_message(**{**GOOD, "timestamp": "yesterday"}), "timestamp"),
    ("negative timestamp", _with_message(**{**GOOD, "timestamp": -5}), "timestamp"),
    ("float timestamp", _with_message(**{**GOOD, "timestamp": 1.5}), "timestamp"),
    ("bool timestamp", _with_message(**{**GOOD, "timestamp": True}), "timestamp"),
    ("huge timestamp", _with_message(**{**GOOD, "timestamp": 10**30}), "timestamp"),
    ("huge digit string timestamp", _with_message(**{**GOOD, "timestamp": "9" * 5000}), "timestamp"),
    ("superscript timestamp", _with_message(**{**GOOD, "timestamp": "²³"}), "timestamp"),
    ("status without status", _with_status(id="wamid.x", timestamp="1750263800"), "'status'"),
    ("status without id", _with_status(status="read", timestamp="1750263800"), "'id'"),
    ("status bad timestamp", _with_status(id="wamid.x", status="read", timestamp={"t": 1}), "timestamp"),
]


@pytest.mark.parametrize(("case", "payload", "reason"), REJECTED_CASES, ids=[c[0] for c in REJECTED_CASES])
def test_malformed_items_are_rejected_not_raised(case: str, payload: object, reason: str) -> None:
    batch = parse_webhook(payload)
    assert batch.rejected, case
    assert all(reason in r.reason for r in batch.rejected), [r.reason for r in batch.rejected]
    assert batch.messages == () and batch.statuses == ()


def test_one_bad_message_does_not_cost_its_neighbours() -> None:
    payload = load("message_text")
    good = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    payload["entry"][0]["changes"][0]["value"]["messages"] = [None, good, {"id": 5}, "x", good]
    batch = parse_webhook(payload)
    assert len(batch.messages) == 2
    assert len(batch.rejected) == 3


def test_lenient_where_meta_might_send_numbers() -> None:
    batch = parse_webhook(_with_message(id="wamid.n", **{"from": 16505551234}, timestamp=1749416383, type="text",
                                        text={"body": 12}))
    (message,) = batch.messages
    assert message.from_wa_id == USER
    assert message.timestamp == ts(1749416383)
    assert message.text is None and message.content == TextContent(None)


def test_known_type_without_its_content_is_unsupported() -> None:
    (message,) = parse_webhook(_with_message(**{**GOOD, "text": None})).messages
    assert message.type is MessageType.TEXT
    assert isinstance(message.content, Unsupported)


HOSTILE_SHAPES: list[object] = [
    None, 0, -1, 1.5, float("nan"), True, "", "x" * 1_000_000, [], [None], {}, {"": None}, _deep(10_000),
    {"body": _deep(10_000)}, [[[[[[]]]]]],
]


@pytest.mark.parametrize("shape", HOSTILE_SHAPES, ids=[f"shape{i}" for i in range(len(HOSTILE_SHAPES))])
def test_any_value_anywhere_never_raises(shape: object) -> None:
    """Put the hostile value in every position of every recorded payload, one at a time."""
    for name in sorted(p.stem for p in DATA.glob("*.json")):
        original = load(name)
        for path in _paths(original):
            payload = copy.deepcopy(original)
            _set(payload, path, shape)
            _parse_never_raises_unexpected(payload)


def test_deep_nesting_at_the_top() -> None:
    _parse_never_raises_unexpected({"object": "whatsapp_business_account", "entry": [_deep(10_000)]})
    _parse_never_raises_unexpected({"object": "whatsapp_business_account", "entry": _deep(10_000)})


def test_none_values_everywhere() -> None:
    for name in sorted(p.stem for p in DATA.glob("*.json")):
        payload = load(name)
        _replace_leaves(payload, None)
        _parse_never_raises_unexpected(payload)


def test_seeded_random_mutations() -> None:
    """A deterministic fuzz that runs without Hypothesis."""
    rng = random.Random(20250611)
    names = sorted(p.stem for p in DATA.glob("*.json"))
    for _ in range(3000):
        payload = load(rng.choice(names))
        for _ in range(rng.randint(1, 4)):
            _mutate(payload, rng)
        _parse_never_raises_unexpected(payload)


def test_hypothesis_mutations() -> None:
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    names = sorted(p.stem for p in DATA.glob("*.json"))
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=50),
                       st.just("x" * 100_000), st.builds(_deep, st.integers(1, 2_000)))
    values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=10), inner, max_size=3)),
                          max_leaves=8)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(name=st.sampled_from(names), data=st.data())
    def run(name: str, data: st.DataObject) -> None:
        payload = load(name)
        paths = _paths(payload)
        for _ in range(data.draw(st.integers(1, 4))):
            path = data.draw(st.sampled_from(paths))
            action = data.draw(st.sampled_from(["drop", "replace", "inject"]))
            if action == "drop":
                _drop(payload, path)
            elif action == "replace":
                _set(payload, path, data.draw(values))
            else:
                _inject(payload, path, data.draw(st.text(max_size=20)), data.draw(values))
            paths = _paths(payload) or [()]
        _parse_never_raises_unexpected(payload)

    run()


# --- helpers for the hostile tests --------------------------------------------------------------

Path_ = tuple[object, ...]


def _parse_never_raises_unexpected(payload: object) -> None:
    try:
        batch = parse_webhook(payload)
    except InvalidWebhook:
        return
    assert isinstance(batch, WebhookBatch)
    # The parser's safety net must not be what saved us: that would be a bug hidden as a rejection.
    assert not [r.reason for r in batch.rejected if "could not be parsed" in r.reason]
    for message in batch.messages:
        assert isinstance(message.wamid, str)
        # a sender always: the phone, the BSUID or both, each of its own shape or absent
        assert message.from_wa_id is not None or message.from_user_id is not None
        assert message.from_wa_id is None or isinstance(message.from_wa_id, str)
        for user_id in (message.from_user_id, message.from_parent_user_id):
            assert user_id is None or BSUID_SHAPE.fullmatch(user_id)
        assert message.sender in (message.from_user_id, message.from_wa_id)
        assert message.timestamp.tzinfo is UTC
        assert message.text is None or isinstance(message.text, str)
    for status in batch.statuses:
        assert isinstance(status.wamid, str) and isinstance(status.raw_status, str)
        assert status.recipient_user_id is None or BSUID_SHAPE.fullmatch(status.recipient_user_id)
    for contact in batch.contacts:
        assert contact.wa_id is not None or contact.user_id is not None
        assert contact.username is None or isinstance(contact.username, str)


def _paths(value: object, prefix: Path_ = ()) -> list[Path_]:
    """Every position in a JSON value (not into the hostile deep values we inserted)."""
    found: list[Path_] = []
    if len(prefix) > 12:
        return found
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(child, (*prefix, index)))
    return found


def _parent(root: object, path: Path_) -> Any:
    node: Any = root
    for part in path[:-1]:
        node = node[part]
    return node


def _set(root: object, path: Path_, value: object) -> None:
    if path:
        _parent(root, path)[path[-1]] = value


def _drop(root: object, path: Path_) -> None:
    if path:
        parent = _parent(root, path)
        del parent[path[-1]]


def _inject(root: object, path: Path_, key: str, value: object) -> None:
    node = _parent(root, path)[path[-1]] if path else root
    if isinstance(node, dict):
        node[key] = value
    elif isinstance(node, list):
        node.append(value)


def _replace_leaves(value: object, leaf: object) -> None:
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in list(items):
        if isinstance(child, dict | list):
            _replace_leaves(child, leaf)
        else:
            value[key] = leaf  # type: ignore[index]


_RANDOM_VALUES: list[object] = [None, 0, -7, 2**70, 1.25, float("inf"), True, False, "", "wamid.x", "1749416383",
                                "x" * 5000, [], {}, [None], {"id": None}, {"type": "text"}, BSUID,
                                "US." + "1" * 129, {"user_id": BSUID}]


def _mutate(payload: object, rng: random.Random) -> None:
    paths = _paths(payload)
    if not paths:
        return
    path = rng.choice(paths)
    action = rng.randrange(4)
    if action == 0:
        _drop(payload, path)
    elif action == 1:
        _set(payload, path, copy.deepcopy(rng.choice(_RANDOM_VALUES)))
    elif action == 2:
        _inject(payload, path, rng.choice(["type", "id", "from", "from_user_id", "user_id", "recipient_user_id",
                                           "unknown_key", "errors", "x"]),
                copy.deepcopy(rng.choice(_RANDOM_VALUES)))
    else:
        _set(payload, path, _deep(rng.choice([1, 50, 3000])))


def test_safety_net_turns_an_unforeseen_error_into_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.whatsapp.parse as parse_module

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(parse_module, "_status", broken)
    batch = parse_webhook(load("batch_two_entries"))
    assert len(batch.messages) == 4
    assert [r.reason for r in batch.rejected] == ["status could not be parsed (RuntimeError)"] * 3
