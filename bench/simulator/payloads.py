"""Builders of Meta's webhook payloads: pure functions returning the dicts Meta POSTs.

Three levels, composable for batches::

    webhook(entry(WABA, messages_change(PHONE_ID, DISPLAY, [text_message("393331234567", "ciao")])))

* message builders (``text_message``, ``image_message`` …) return one element of ``value.messages``;
* status builders (``status``) return one element of ``value.statuses``;
* ``messages_change`` / ``statuses_change`` / ``template_status_change`` wrap them in a change,
  ``entry`` groups changes of one WhatsApp Business Account, ``webhook`` is the whole body.

``inbound`` and ``status_webhook`` are shortcuts for the common one-message case. A wamid or
timestamp left out is generated (unique wamid, current time); pass them to get fixed output.

Business-scoped user ids (BSUIDs, ``"US.13491208655302741918"``), as Meta sends them since 2026:
a message builder given a BSUID as sender makes the message of a user who hides their number
behind a username (``from_user_id`` and no ``from``); ``with_user_id`` adds the BSUID to a message
that keeps its phone number. ``messages_change`` lists each sender in ``contacts`` with whatever
identifies them (``wa_id``, ``user_id``, ``profile.username``). A status of a send addressed by
BSUID carries ``recipient_user_id`` and no ``recipient_id``.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bench.simulator.errors import webhook_error
from bench.simulator.state import is_bsuid, new_numeric_id, new_wamid

Json = dict[str, Any]


def _ts(timestamp: int | float | None) -> str:
    return str(int(time.time() if timestamp is None else timestamp))


def _base(from_: str, kind: str, wamid: str | None, timestamp: int | float | None, context: Json | None) -> Json:
    # A BSUID as sender: a user whose username hides their number, named by from_user_id alone.
    sender = "from_user_id" if is_bsuid(from_) else "from"
    message: Json = {sender: from_, "id": wamid or new_wamid(from_), "timestamp": _ts(timestamp), "type": kind}
    if context is not None:
        message["context"] = context
    return message


def with_user_id(message: Json, user_id: str, *, parent_user_id: str | None = None) -> Json:
    """The message with its sender's BSUID beside the phone number, as Meta sends every message since 2026."""
    message = {**message, "from_user_id": user_id}
    if parent_user_id is not None:
        message["from_parent_user_id"] = parent_user_id
    return message


def sender_of(message: Json) -> str:
    """The key that names a message's sender in ``profile_names``/``usernames``: the BSUID if any, else the phone."""
    return message.get("from_user_id") or message["from"]


def reply_context(business_number: str, wamid: str) -> Json:
    """``context`` of a message that replies to (or is a button press on) the business's message ``wamid``."""
    return {"from": business_number, "id": wamid}


def forwarded_context(*, frequently: bool = False) -> Json:
    return {"frequently_forwarded": True} if frequently else {"forwarded": True}


def _sha256_b64() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


# -- inbound messages ----------------------------------------------------------------------------


def text_message(
    from_: str,
    body: str,
    *,
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
    referral: Json | None = None,
) -> Json:
    message = _base(from_, "text", wamid, timestamp, context)
    message["text"] = {"body": body}
    if referral is not None:
        message["referral"] = referral
    return message


def _media_message(
    kind: str,
    from_: str,
    media_id: str,
    mime_type: str,
    wamid: str | None,
    timestamp: int | float | None,
    context: Json | None,
    sha256: str | None,
    **extra: Any,
) -> Json:
    message = _base(from_, kind, wamid, timestamp, context)
    media: Json = {k: v for k, v in extra.items() if v is not None}
    media.update({"mime_type": mime_type, "sha256": sha256 or _sha256_b64(), "id": media_id})
    message[kind] = media
    return message


def image_message(
    from_: str,
    media_id: str,
    *,
    mime_type: str = "image/jpeg",
    caption: str | None = None,
    sha256: str | None = None,
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
) -> Json:
    return _media_message("image", from_, media_id, mime_type, wamid, timestamp, context, sha256, caption=caption)


def audio_message(
    from_: str,
    media_id: str,
    *,
    voice: bool = True,
    mime_type: str = "audio/ogg; codecs=opus",
    sha256: str | None = None,
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
) -> Json:
    message = _media_message("audio", from_, media_id, mime_type, wamid, timestamp, context, sha256)
    message["audio"]["voice"] = voice
    return message


def video_message(
    from_: str,
    media_id: str,
    *,
    mime_type: str = "video/mp4",
    caption: str | None = None,
    sha256: str | None = None,
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
) -> Json:
    return _media_message("video", from_, media_id, mime_type, wamid, timestamp, context, sha256, caption=caption)


def document_message(
    from_: str,
    media_id: str,
    *,
    filename: str = "document.pdf",
    mime_type: str = "application/pdf",
    caption: str | None = None,
    sha256: str | None = None,
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
) -> Json:
    return _media_message(
        "document", from_, media_id, mime_type, wamid, timestamp, context, sha256, caption=caption, filename=filename
    )


def sticker_message(
    from_: str,
    media_id: str,
    *,
    animated: bool = False,
    mime_type: str = "image/webp",
    sha256: str | None = None,
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
) -> Json:
    message = _media_message("sticker", from_, media_id, mime_type, wamid, timestamp, context, sha256)
    message["sticker"]["animated"] = animated
    return message


def location_message(
    from_: str,
    latitude: float,
    longitude: float,
    *,
    name: str | None = None,
    address: str | None = None,
    url: str | None = None,
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
) -> Json:
    message = _base(from_, "location", wamid, timestamp, context)
    location: Json = {"latitude": latitude, "longitude": longitude}
    location.update({k: v for k, v in (("name", name), ("address", address), ("url", url)) if v is not None})
    message["location"] = location
    return message


def contact_card(
    formatted_name: str,
    phone: str,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    wa_id: str | None = None,
    phone_type: str = "CELL",
) -> Json:
    """One element of a contacts message's ``contacts`` list."""
    name: Json = {"formatted_name": formatted_name, "first_name": first_name or formatted_name.split(" ")[0]}
    if last_name is not None:
        name["last_name"] = last_name
    entry: Json = {"phone": phone, "type": phone_type}
    if wa_id is not None:
        entry["wa_id"] = wa_id
    return {"name": name, "phones": [entry]}


def contacts_message(
    from_: str,
    contacts: Sequence[Json],
    *,
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
) -> Json:
    message = _base(from_, "contacts", wamid, timestamp, context)
    message["contacts"] = list(contacts)
    return message


def button_reply_message(
    from_: str,
    reply_id: str,
    title: str,
    *,
    context: Json,
    wamid: str | None = None,
    timestamp: int | float | None = None,
) -> Json:
    """A tap on a reply button of an interactive message (``interactive.type == "button_reply"``)."""
    message = _base(from_, "interactive", wamid, timestamp, context)
    message["interactive"] = {"type": "button_reply", "button_reply": {"id": reply_id, "title": title}}
    return message


def list_reply_message(
    from_: str,
    reply_id: str,
    title: str,
    *,
    context: Json,
    description: str | None = None,
    wamid: str | None = None,
    timestamp: int | float | None = None,
) -> Json:
    message = _base(from_, "interactive", wamid, timestamp, context)
    reply: Json = {"id": reply_id, "title": title}
    if description is not None:
        reply["description"] = description
    message["interactive"] = {"type": "list_reply", "list_reply": reply}
    return message


def button_message(
    from_: str,
    payload: str,
    text: str,
    *,
    context: Json | None = None,
    wamid: str | None = None,
    timestamp: int | float | None = None,
) -> Json:
    """A tap on a template's quick-reply button (``type == "button"``, not interactive)."""
    message = _base(from_, "button", wamid, timestamp, context)
    message["button"] = {"payload": payload, "text": text}
    return message


def reaction_message(
    from_: str,
    message_id: str,
    emoji: str | None,
    *,
    wamid: str | None = None,
    timestamp: int | float | None = None,
) -> Json:
    """A reaction to ``message_id``; ``emoji=""`` (or None: key absent) is a removed reaction."""
    message = _base(from_, "reaction", wamid, timestamp, None)
    reaction: Json = {"message_id": message_id}
    if emoji is not None:
        reaction["emoji"] = emoji
    message["reaction"] = reaction
    return message


def reaction_removed(from_: str, message_id: str, *, wamid: str | None = None, timestamp: int | float | None = None) -> Json:
    return reaction_message(from_, message_id, "", wamid=wamid, timestamp=timestamp)


def order_item(product_retailer_id: str, quantity: int, item_price: float, currency: str = "EUR") -> Json:
    return {"product_retailer_id": product_retailer_id, "quantity": quantity, "item_price": item_price, "currency": currency}


def order_message(
    from_: str,
    catalog_id: str,
    items: Sequence[Json],
    *,
    text: str = "",
    wamid: str | None = None,
    timestamp: int | float | None = None,
    context: Json | None = None,
) -> Json:
    message = _base(from_, "order", wamid, timestamp, context)
    message["order"] = {"catalog_id": catalog_id, "text": text, "product_items": list(items)}
    return message


def referral(
    *,
    source_url: str = "https://fb.me/ad",
    source_id: str = "120200000000000000",
    source_type: str = "ad",
    headline: str = "Ad headline",
    body: str = "Ad body",
    media_type: str = "image",
    image_url: str | None = "https://scontent.example/ad.jpg",
    ctwa_clid: str | None = None,
) -> Json:
    """The ``referral`` of a first message sent from a click-to-WhatsApp ad or post (pass to ``text_message``)."""
    value: Json = {
        "source_url": source_url,
        "source_id": source_id,
        "source_type": source_type,
        "headline": headline,
        "body": body,
        "media_type": media_type,
    }
    if image_url is not None:
        value["image_url"] = image_url
    value["ctwa_clid"] = ctwa_clid or secrets.token_urlsafe(24)
    return value


def system_message(
    from_: str,
    body: str,
    *,
    new_wa_id: str | None = None,
    system_type: str = "user_changed_number",
    wamid: str | None = None,
    timestamp: int | float | None = None,
) -> Json:
    message = _base(from_, "system", wamid, timestamp, None)
    system: Json = {"body": body, "type": system_type}
    if new_wa_id is not None:
        system["wa_id"] = new_wa_id
    message["system"] = system
    return message


def unsupported_message(
    from_: str,
    *,
    unsupported_type: str | None = "poll",
    wamid: str | None = None,
    timestamp: int | float | None = None,
) -> Json:
    message = _base(from_, "unsupported", wamid, timestamp, None)
    message["errors"] = [webhook_error(131051)]
    if unsupported_type is not None:
        message["unsupported"] = {"type": unsupported_type}
    return message


# -- statuses of outbound messages ---------------------------------------------------------------


def status(
    wamid: str,
    state: str,
    recipient_id: str | None,
    *,
    timestamp: int | float | None = None,
    conversation_id: str | None = None,
    category: str = "service",
    expiration_timestamp: int | None = None,
    pricing_model: str = "CBP",
    error_code: int | None = None,
    error_details: str | None = None,
    biz_opaque_callback_data: str | None = None,
    recipient_user_id: str | None = None,
    recipient_parent_user_id: str | None = None,
) -> Json:
    """One element of ``value.statuses``: ``state`` is sent, delivered, read, played or failed.

    ``sent`` carries the conversation's expiration; ``failed`` carries ``errors`` and no
    conversation/pricing (Meta bills nothing for it). A message sent to a BSUID has
    ``recipient_id=None`` (the phone is left out) and its ``recipient_user_id``.
    """
    item: Json = {"id": wamid, "status": state, "timestamp": _ts(timestamp)}
    if recipient_id is not None:
        item["recipient_id"] = recipient_id
    if recipient_user_id is not None:
        item["recipient_user_id"] = recipient_user_id
    if recipient_parent_user_id is not None:
        item["recipient_parent_user_id"] = recipient_parent_user_id
    if biz_opaque_callback_data is not None:
        item["biz_opaque_callback_data"] = biz_opaque_callback_data
    if state == "failed":
        item["errors"] = [webhook_error(error_code or 131000, error_details)]
        return item
    conversation: Json = {"id": conversation_id or secrets.token_hex(16), "origin": {"type": category}}
    if state == "sent":
        conversation["expiration_timestamp"] = _ts(expiration_timestamp or int(time.time()) + 24 * 3600)
    item["conversation"] = conversation
    pricing: Json = {"billable": category != "service", "pricing_model": pricing_model, "category": category}
    if pricing_model == "PMP":
        pricing["type"] = "free_customer_service" if category == "service" else "regular"
    item["pricing"] = pricing
    return item


# -- changes, entries, the body ------------------------------------------------------------------


def metadata(phone_number_id: str, display_phone_number: str) -> Json:
    return {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id}


def contact(
    *,
    wa_id: str | None = None,
    user_id: str | None = None,
    name: str | None = None,
    username: str | None = None,
    parent_user_id: str | None = None,
) -> Json:
    """One element of a change's ``contacts``: the phone (``wa_id``) is left out for a user whose
    username hides it, the BSUID (``user_id``) names them then."""
    profile: Json = {}
    if name is not None:
        profile["name"] = name
    if username is not None:
        profile["username"] = username
    item: Json = {"profile": profile}
    for key, value in (("wa_id", wa_id), ("user_id", user_id), ("parent_user_id", parent_user_id)):
        if value is not None:
            item[key] = value
    return item


def _sender_contact(message: Json, names: dict[str, str], usernames: dict[str, str]) -> Json:
    key = sender_of(message)
    phone = message.get("from")
    name = names.get(key) or (names.get(phone) if phone else None) or f"User {key[-4:]}"
    username = usernames.get(key) or (usernames.get(phone) if phone else None)
    return contact(wa_id=phone, user_id=message.get("from_user_id"), name=name, username=username,
                   parent_user_id=message.get("from_parent_user_id"))


def messages_change(
    phone_number_id: str,
    display_phone_number: str,
    messages: Sequence[Json],
    *,
    profile_names: dict[str, str] | None = None,
    usernames: dict[str, str] | None = None,
    errors: Sequence[Json] | None = None,
) -> Json:
    """A ``messages`` change with inbound messages; ``contacts`` lists each distinct sender once.
    ``profile_names`` and ``usernames`` are keyed by the sender's phone or BSUID."""
    first_of_each = {sender_of(m): m for m in reversed(messages)}
    senders = [first_of_each[key] for key in dict.fromkeys(sender_of(m) for m in messages)]
    value: Json = {
        "messaging_product": "whatsapp",
        "metadata": metadata(phone_number_id, display_phone_number),
        "contacts": [_sender_contact(m, profile_names or {}, usernames or {}) for m in senders],
        "messages": list(messages),
    }
    if errors:
        value["errors"] = list(errors)
    return {"value": value, "field": "messages"}


def statuses_change(
    phone_number_id: str, display_phone_number: str, statuses: Sequence[Json], *, contacts: Sequence[Json] | None = None
) -> Json:
    """A ``messages`` change with statuses; ``contacts`` (see :func:`contact`) as Meta adds them to
    sent/delivered/read statuses since the BSUID rollout, with the username on delivered and read."""
    value: Json = {
        "messaging_product": "whatsapp",
        "metadata": metadata(phone_number_id, display_phone_number),
    }
    if contacts is not None:
        value["contacts"] = list(contacts)
    value["statuses"] = list(statuses)
    return {"value": value, "field": "messages"}


def template_status_change(
    template_id: str,
    name: str,
    language: str,
    event: str = "APPROVED",
    *,
    reason: str = "NONE",
    category: str | None = None,
) -> Json:
    """``message_template_status_update``: event is APPROVED, REJECTED, PAUSED, DISABLED, PENDING_DELETION …"""
    value: Json = {
        "event": event,
        "message_template_id": int(template_id) if template_id.isdigit() else template_id,
        "message_template_name": name,
        "message_template_language": language,
        "reason": reason,
    }
    if category is not None:
        value["message_template_category"] = category
    return {"value": value, "field": "message_template_status_update"}


def entry(waba_id: str, *changes: Json) -> Json:
    return {"id": waba_id, "changes": list(changes)}


def webhook(*entries: Json) -> Json:
    return {"object": "whatsapp_business_account", "entry": list(entries)}


# -- one-liners for the common single-item case --------------------------------------------------


def inbound(
    message: Json,
    *,
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    profile_name: str | None = None,
    username: str | None = None,
) -> Json:
    names = {sender_of(message): profile_name} if profile_name else None
    handles = {sender_of(message): username} if username else None
    change = messages_change(phone_number_id, display_phone_number, [message], profile_names=names, usernames=handles)
    return webhook(entry(waba_id, change))


def status_webhook(
    statuses: Iterable[Json] | Json,
    *,
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    contacts: Sequence[Json] | None = None,
) -> Json:
    items = [statuses] if isinstance(statuses, dict) else list(statuses)
    return webhook(entry(waba_id, statuses_change(phone_number_id, display_phone_number, items, contacts=contacts)))


def template_status_webhook(waba_id: str, template_id: str, name: str, language: str, event: str = "APPROVED", **kwargs: Any) -> Json:
    return webhook(entry(waba_id, template_status_change(template_id, name, language, event, **kwargs)))


def status_sequence(
    wamid: str,
    recipient_id: str | None,
    *,
    states: Sequence[str] = ("sent", "delivered", "read"),
    start: int | None = None,
    conversation_id: str | None = None,
    category: str = "service",
    biz_opaque_callback_data: str | None = None,
    recipient_user_id: str | None = None,
) -> list[Json]:
    """The statuses one outbound message goes through, one second apart, sharing one conversation id."""
    t0 = int(time.time()) if start is None else start
    conversation = conversation_id or secrets.token_hex(16)
    return [
        status(
            wamid,
            state,
            recipient_id,
            timestamp=t0 + i,
            conversation_id=conversation,
            category=category,
            biz_opaque_callback_data=biz_opaque_callback_data,
            recipient_user_id=recipient_user_id,
        )
        for i, state in enumerate(states)
    ]


def new_media_id() -> str:
    return new_numeric_id()
