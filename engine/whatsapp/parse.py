"""Turning a decoded WhatsApp Cloud API webhook body into a :class:`WebhookBatch`.

The signature has been checked before this runs, but the body is still treated as hostile:
only an unusable top level raises (:class:`InvalidWebhook`, answered 400). Anything deeper
that is malformed becomes a :class:`RejectedItem`; anything unknown is kept with its raw JSON.
No other exception leaves :func:`parse_webhook`.

Shape (https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference)::

    {"object": "whatsapp_business_account",
     "entry": [{"id": <WABA id>, "changes": [{"field": "messages", "value": {
         "metadata": {"phone_number_id", "display_phone_number"},
         "contacts": [...], "messages": [...], "statuses": [...], "errors": [...]}}]}]}

A customer is named by a phone number (``from``, ``contacts[].wa_id``, ``recipient_id``), by a
business-scoped user id (BSUID: ``from_user_id``, ``contacts[].user_id``, ``recipient_user_id``),
or by both. Meta sends the BSUID always since 2026 and withholds the phone of a user who adopted a
username, so either one alone is enough (https://developers.facebook.com/documentation/
business-messaging/whatsapp/business-scoped-user-ids).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from types import MappingProxyType
from typing import Any

from engine.errors import InvalidInput
from engine.whatsapp.events import (
    MEDIA_TYPES,
    ButtonReply,
    ChangeError,
    ContactProfile,
    ContactsContent,
    EditContent,
    InboundMessage,
    InteractiveReply,
    LocationContent,
    MediaContent,
    MessageContent,
    MessageStatus,
    MessageType,
    MetaError,
    OrderContent,
    Reaction,
    Referral,
    RejectedItem,
    RevokeContent,
    StatusUpdate,
    SystemContent,
    TemplateStatusUpdate,
    TextContent,
    UnknownChange,
    Unsupported,
    WebhookBatch,
)

log = logging.getLogger("parlo.whatsapp.parse")

OBJECT = "whatsapp_business_account"
MESSAGES_FIELD = "messages"
TEMPLATE_FIELD_PREFIXES = ("message_template_", "template_")

# Identifiers longer than this are hostile, not Meta's (wamids are ~60–100 chars, BSUIDs ≤ ~135):
# PostgreSQL cannot index a key beyond ~2.7 kB, and a failing insert would make Meta retry forever.
MAX_ID_LENGTH = 512
# Seconds since the epoch; twelve digits reach the year 33658, enough for any real timestamp.
MAX_TIMESTAMP_DIGITS = 12
# A BSUID is a two-letter country code, a dot and up to 128 letters and digits ("US.13491208655302741918");
# a parent BSUID, shared by linked business portfolios, carries a marker ("US.ENT.11815799212886844830").
# It is stored, indexed and sent back to Meta as the recipient, so nothing else is taken for one.
_BSUID = re.compile(r"[A-Z]{2}(?:\.[A-Z]{1,8})?\.[A-Za-z0-9]{1,128}")
# Usernames are short handles; a longer string is not Meta's, and the inbox shows this field.
MAX_USERNAME_LENGTH = 128


class InvalidWebhook(InvalidInput):
    """The body is not a WhatsApp Business Account webhook at all."""


def parse_webhook(payload: object) -> WebhookBatch:
    """Parse a decoded webhook body. Raises only :class:`InvalidWebhook`, for an unusable top level."""
    if not isinstance(payload, dict):
        raise InvalidWebhook("webhook body is not a JSON object")
    if payload.get("object") != OBJECT:
        raise InvalidWebhook(f"webhook object is not {OBJECT!r}")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise InvalidWebhook("webhook has no 'entry' list")
    builder = _Builder()
    for entry in entries:
        builder.guarded("entry", entry, partial(_parse_entry, builder, entry))
    return builder.build()


class _Builder:
    """Collects events in delivery order."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.statuses: list[StatusUpdate] = []
        self.contacts: list[ContactProfile] = []
        self.template_updates: list[TemplateStatusUpdate] = []
        self.errors: list[ChangeError] = []
        self.unknown_changes: list[UnknownChange] = []
        self.rejected: list[RejectedItem] = []
        self.phone_number_ids: set[str] = set()

    def reject(self, reason: str, raw: Any) -> None:
        self.rejected.append(RejectedItem(reason, raw))

    def guarded(self, what: str, raw: Any, parse: Callable[[], None]) -> None:
        # The last line of defence: a bug or an input nobody foresaw costs one item, not the
        # delivery, and never escapes as anything but a rejected item.
        try:
            parse()
        except Exception as exc:  # noqa: BLE001
            log.warning("webhook item could not be parsed", extra={"item": what, "error": type(exc).__name__})
            self.reject(f"{what} could not be parsed ({type(exc).__name__})", raw)

    def build(self) -> WebhookBatch:
        return WebhookBatch(
            messages=tuple(self.messages), statuses=tuple(self.statuses), contacts=tuple(self.contacts),
            template_updates=tuple(self.template_updates), errors=tuple(self.errors),
            unknown_changes=tuple(self.unknown_changes), rejected=tuple(self.rejected),
            phone_number_ids=frozenset(self.phone_number_ids))


# --- small, total readers: they return None instead of raising ----------------------------------


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _text(value: object) -> str | None:
    """A human-readable string; empty counts as nothing."""
    return value if isinstance(value, str) and value else None


def _ident(value: object) -> str | None:
    """An identifier: a non-empty string, or an integer (Meta sends some ids as numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
        return value
    return None


def _bsuid(value: object) -> str | None:
    """A business-scoped user id, or None for anything that is not shaped like one."""
    return value if isinstance(value, str) and _BSUID.fullmatch(value) else None


def _username(value: object) -> str | None:
    text = _text(value)
    return text if text is not None and len(text) <= MAX_USERNAME_LENGTH else None


def _dict(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            result = float(value)
        except ValueError:
            return None
    else:
        return None
    return result if result == result and abs(result) != float("inf") else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.lstrip("-").isdigit():
        return int(value)
    return None


def _timestamp(value: object) -> datetime | None:
    """Meta sends seconds since the epoch as a string ("1749416383"), sometimes as a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not (0 < len(value) <= MAX_TIMESTAMP_DIGITS and value.isascii() and value.isdigit()):
            return None
        seconds = int(value)
    elif isinstance(value, int):
        seconds = value
    else:
        return None
    if seconds < 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _identifier(builder: _Builder, item: dict[str, Any], key: str, what: str,
                read: Callable[[object], str | None] = _bsuid) -> str | None:
    """An optional identifier field of an item that is kept anyway. One that is present but
    malformed reads as absent and is noted among the rejected parts, so the receipt says why it
    was ignored; the item stands on its other identifier."""
    value = item.get(key)
    ident = read(value)
    if ident is None and value is not None:
        builder.reject(f"{what} with a malformed {key!r}; the field was ignored", value)
    return ident


def _frozen(value: dict[str, Any]) -> Mapping[str, Any]:
    # A read-only view, not a deep copy: deep copies of hostile nesting would recurse without end.
    return MappingProxyType(value)


def _meta_errors(value: object) -> tuple[MetaError, ...]:
    errors = []
    for item in _list(value):
        error = _dict(item)
        if error is None:
            continue
        data = _dict(error.get("error_data")) or {}
        errors.append(MetaError(code=_int(error.get("code")), title=_str(error.get("title")),
                                message=_str(error.get("message")), details=_str(data.get("details")),
                                href=_str(error.get("href"))))
    return tuple(errors)


# --- entries and changes ------------------------------------------------------------------------


def _parse_entry(builder: _Builder, entry: object) -> None:
    item = _dict(entry)
    if item is None:
        builder.reject("entry is not an object", entry)
        return
    waba_id = _ident(item.get("id"))
    changes = item.get("changes")
    if waba_id is None:
        builder.reject("entry without a valid 'id'", entry)
        return
    if not isinstance(changes, list):
        builder.reject("entry without a 'changes' list", entry)
        return
    for change in changes:
        builder.guarded("change", change, partial(_parse_change, builder, waba_id, change))


def _parse_change(builder: _Builder, waba_id: str, change: object) -> None:
    item = _dict(change)
    if item is None:
        builder.reject("change is not an object", change)
        return
    field = _str(item.get("field"))
    value = _dict(item.get("value"))
    if not field or len(field) > MAX_ID_LENGTH:
        builder.reject("change without a valid 'field'", change)
        return
    if value is None:
        builder.reject(f"change {field!r} without an object 'value'", change)
        return
    if field == MESSAGES_FIELD:
        _parse_messages_value(builder, waba_id, value, change)
    elif field.startswith(TEMPLATE_FIELD_PREFIXES):
        _parse_template_change(builder, waba_id, field, value)
    else:
        builder.unknown_changes.append(UnknownChange(waba_id, field, _frozen(value)))


def _parse_template_change(builder: _Builder, waba_id: str, field: str, value: dict[str, Any]) -> None:
    event = _text(value.get("event"))
    if event is None or len(event) > MAX_ID_LENGTH:
        event = field
    builder.template_updates.append(TemplateStatusUpdate(
        waba_id=waba_id, event=event, template_id=_ident(value.get("message_template_id")),
        name=_ident(value.get("message_template_name")), language=_ident(value.get("message_template_language")),
        reason=_str(value.get("reason")), raw=_frozen(value), field=field,
        category=_str(value.get("new_category")) or _str(value.get("message_template_category"))))


def _parse_messages_value(builder: _Builder, waba_id: str, value: dict[str, Any], change: object) -> None:
    metadata = _dict(value.get("metadata")) or {}
    phone_number_id = _ident(metadata.get("phone_number_id"))
    if phone_number_id is None:
        builder.reject("messages change without metadata.phone_number_id", change)
        return
    builder.phone_number_ids.add(phone_number_id)
    display = _str(metadata.get("display_phone_number"))

    by_wa_id: dict[str, ContactProfile] = {}
    by_user_id: dict[str, ContactProfile] = {}
    for raw_contact in _list(value.get("contacts")):
        contact = _contact(builder, phone_number_id, raw_contact)
        if contact is not None:
            builder.contacts.append(contact)
            if contact.wa_id:
                by_wa_id.setdefault(contact.wa_id, contact)
            if contact.user_id:
                by_user_id.setdefault(contact.user_id, contact)

    def profile(wa_id: str | None, user_id: str | None) -> ContactProfile | None:
        found = by_wa_id.get(wa_id) if wa_id is not None else None
        if found is None and user_id is not None:
            found = by_user_id.get(user_id)
        return found

    for raw_message in _list(value.get("messages")):
        builder.guarded("message", raw_message,
                        partial(_message, builder, phone_number_id, display, profile, raw_message))
    for raw_status in _list(value.get("statuses")):
        builder.guarded("status", raw_status, partial(_status, builder, phone_number_id, raw_status))
    for error in _meta_errors(value.get("errors")):
        builder.errors.append(ChangeError(error=error, phone_number_id=phone_number_id, waba_id=waba_id))
    for kind in ("messages", "statuses", "contacts", "errors"):
        if kind in value and not isinstance(value[kind], list):
            builder.reject(f"messages change whose {kind!r} is not a list", value[kind])


def _contact(builder: _Builder, phone_number_id: str, raw: object) -> ContactProfile | None:
    contact = _dict(raw)
    if contact is None:
        builder.reject("contact is not an object", raw)
        return None
    if _ident(contact.get("wa_id")) is None and _bsuid(contact.get("user_id")) is None:
        builder.reject("contact without a valid 'wa_id' (phone number) or 'user_id' (business-scoped user id)", raw)
        return None
    profile = _dict(contact.get("profile")) or {}
    return ContactProfile(
        wa_id=_identifier(builder, contact, "wa_id", "contact", _ident), profile_name=_text(profile.get("name")),
        phone_number_id=phone_number_id, user_id=_identifier(builder, contact, "user_id", "contact"),
        username=_identifier(builder, profile, "username", "contact profile", _username),
        parent_user_id=_identifier(builder, contact, "parent_user_id", "contact"))


# --- messages -----------------------------------------------------------------------------------


def _message(builder: _Builder, phone_number_id: str, display: str | None,
             profile: Callable[[str | None, str | None], ContactProfile | None], raw: object) -> None:
    message = _dict(raw)
    if message is None:
        builder.reject("message is not an object", raw)
        return
    wamid = _ident(message.get("id"))
    if wamid is None:
        builder.reject("message without a valid 'id'", raw)
        return
    # A user with a username may come without a phone number: the BSUID alone names them.
    if _ident(message.get("from")) is None and _bsuid(message.get("from_user_id")) is None:
        builder.reject("message without a valid 'from' (phone number) or 'from_user_id' (business-scoped user id)",
                       raw)
        return
    timestamp = _timestamp(message.get("timestamp"))
    if timestamp is None:
        builder.reject("message with an invalid 'timestamp'", raw)
        return
    raw_type = _str(message.get("type")) or ""
    if len(raw_type) > MAX_ID_LENGTH:
        raw_type = raw_type[:MAX_ID_LENGTH]
    type_ = MessageType(raw_type)
    errors = _meta_errors(message.get("errors"))
    content, text = _content(type_, raw_type, message, errors, allow_edit=True)
    context = _dict(message.get("context")) or {}
    phone = _identifier(builder, message, "from", "message", _ident)
    user_id = _identifier(builder, message, "from_user_id", "message")
    sender = profile(phone, user_id)
    builder.messages.append(InboundMessage(
        wamid=wamid, from_wa_id=phone, phone_number_id=phone_number_id, display_phone_number=display,
        timestamp=timestamp, type=type_, raw_type=raw_type, text=text,
        profile_name=sender.profile_name if sender else None, context_wamid=_ident(context.get("id")),
        forwarded=context.get("forwarded") is True or context.get("frequently_forwarded") is True,
        referral=_referral(message.get("referral")), content=content, errors=errors, raw=_frozen(message),
        from_user_id=user_id, from_parent_user_id=_identifier(builder, message, "from_parent_user_id", "message"),
        username=sender.username if sender else None))


def _referral(value: object) -> Referral | None:
    referral = _dict(value)
    if referral is None:
        return None
    return Referral(
        source_url=_str(referral.get("source_url")), source_id=_ident(referral.get("source_id")),
        source_type=_str(referral.get("source_type")), headline=_str(referral.get("headline")),
        body=_str(referral.get("body")), media_type=_str(referral.get("media_type")),
        image_url=_str(referral.get("image_url")), video_url=_str(referral.get("video_url")),
        thumbnail_url=_str(referral.get("thumbnail_url")), ctwa_clid=_str(referral.get("ctwa_clid")),
        raw=_frozen(referral))


_Parsed = tuple[MessageContent, str | None]


def _content(type_: MessageType, raw_type: str, message: dict[str, Any], errors: tuple[MetaError, ...],
             *, allow_edit: bool) -> _Parsed:
    """The typed content of a message and the text an inbox shows for it.

    A known type whose content object is missing (Meta does this for some failed interactive
    messages, which then carry ``errors``) is kept as :class:`Unsupported` rather than half-filled.
    """
    body = _dict(message.get(raw_type)) if raw_type else None
    if type_ in MEDIA_TYPES and body is not None:
        return _media(type_, body)
    parser = _PARSERS.get(type_)
    if parser is not None and body is not None:
        return parser(body)
    if type_ is MessageType.CONTACTS and isinstance(message.get("contacts"), list):
        return _contacts(message["contacts"])
    if type_ is MessageType.EDIT and allow_edit and body is not None:
        return _edit(body, errors)
    if type_ is MessageType.REVOKE and body is not None:
        return RevokeContent(_ident(body.get("original_message_id"))), None
    unsupported = _dict(message.get("unsupported")) or {}
    return Unsupported(raw_type=raw_type, errors=errors, kind=_str(unsupported.get("type"))), None


def _text_content(body: dict[str, Any]) -> _Parsed:
    text = _str(body.get("body"))
    return TextContent(text), text or None


def _media(kind: MessageType, body: dict[str, Any]) -> _Parsed:
    content = MediaContent(
        kind=kind, media_id=_ident(body.get("id")), mime_type=_str(body.get("mime_type")),
        sha256=_str(body.get("sha256")), caption=_str(body.get("caption")), filename=_str(body.get("filename")),
        voice=body.get("voice") is True, animated=body.get("animated") is True, url=_str(body.get("url")))
    return content, _text(content.caption) or _text(content.filename)


def _location(body: dict[str, Any]) -> _Parsed:
    content = LocationContent(latitude=_float(body.get("latitude")), longitude=_float(body.get("longitude")),
                              name=_str(body.get("name")), address=_str(body.get("address")),
                              url=_str(body.get("url")))
    label = ", ".join(part for part in (_text(content.name), _text(content.address)) if part)
    if not label and content.latitude is not None and content.longitude is not None:
        label = f"{content.latitude}, {content.longitude}"
    return content, f"📍 {label}" if label else "📍"


def _contacts(cards: list[Any]) -> _Parsed:
    kept = tuple(_frozen(card) for card in cards if isinstance(card, dict))
    names = []
    for card in kept:
        name = _dict(card.get("name")) or {}
        formatted = _text(name.get("formatted_name")) or _text(name.get("first_name"))
        if formatted:
            names.append(formatted)
    return ContactsContent(kept), "👤 " + ", ".join(names) if names else "👤"


def _interactive(body: dict[str, Any]) -> _Parsed:
    kind = _str(body.get("type"))
    reply = (_dict(body.get(kind)) if kind else None) or {}
    content = InteractiveReply(
        kind=kind, reply_id=_ident(reply.get("id")), title=_str(reply.get("title")),
        description=_str(reply.get("description")), response_json=_str(reply.get("response_json")),
        name=_str(reply.get("name")), body=_str(reply.get("body")))
    return content, _text(content.title) or _text(content.body)


def _button(body: dict[str, Any]) -> _Parsed:
    content = ButtonReply(payload=_str(body.get("payload")), text=_str(body.get("text")))
    return content, _text(content.text) or _text(content.payload)


def _reaction(body: dict[str, Any]) -> _Parsed:
    content = Reaction(target_wamid=_ident(body.get("message_id")), emoji=_text(body.get("emoji")))
    return content, content.emoji


def _order(body: dict[str, Any]) -> _Parsed:
    items = tuple(_frozen(item) for item in _list(body.get("product_items")) if isinstance(item, dict))
    content = OrderContent(catalog_id=_ident(body.get("catalog_id")), items=items, text=_str(body.get("text")))
    if _text(content.text):
        return content, content.text
    return content, f"🛒 {len(items)} item{'s' if len(items) != 1 else ''}"


def _system(body: dict[str, Any]) -> _Parsed:
    content = SystemContent(body=_str(body.get("body")), kind=_str(body.get("type")),
                            new_wa_id=_ident(body.get("wa_id")), new_user_id=_ident(body.get("user_id")))
    return content, _text(content.body)


def _edit(body: dict[str, Any], errors: tuple[MetaError, ...]) -> _Parsed:
    target = _ident(body.get("original_message_id"))
    inner = _dict(body.get("message"))
    if inner is None:
        return EditContent(target_wamid=target, new_type=None, content=None), None
    inner_raw_type = _str(inner.get("type")) or ""
    inner_type = MessageType(inner_raw_type[:MAX_ID_LENGTH])
    # An edit of an edit is not a thing Meta sends; refusing it also bounds the recursion.
    content, text = _content(inner_type, inner_raw_type, inner, errors, allow_edit=False)
    return EditContent(target_wamid=target, new_type=inner_type, content=content), text


_PARSERS: dict[MessageType, Callable[[dict[str, Any]], _Parsed]] = {
    MessageType.TEXT: _text_content,
    MessageType.LOCATION: _location,
    MessageType.INTERACTIVE: _interactive,
    MessageType.BUTTON: _button,
    MessageType.REACTION: _reaction,
    MessageType.ORDER: _order,
    MessageType.SYSTEM: _system,
}


# --- statuses -----------------------------------------------------------------------------------


def _status(builder: _Builder, phone_number_id: str, raw: object) -> None:
    status = _dict(raw)
    if status is None:
        builder.reject("status is not an object", raw)
        return
    wamid = _ident(status.get("id"))
    raw_status = _ident(status.get("status"))
    if wamid is None or raw_status is None:
        builder.reject("status without a valid 'id' and 'status'", raw)
        return
    timestamp = _timestamp(status.get("timestamp"))
    if timestamp is None:
        builder.reject("status with an invalid 'timestamp'", raw)
        return
    conversation = _dict(status.get("conversation")) or {}
    origin = _dict(conversation.get("origin")) or {}
    pricing = _dict(status.get("pricing"))
    builder.statuses.append(StatusUpdate(
        wamid=wamid, status=MessageStatus(raw_status), raw_status=raw_status, timestamp=timestamp,
        recipient_id=_ident(status.get("recipient_id")), phone_number_id=phone_number_id,
        errors=_meta_errors(status.get("errors")), conversation_id=_ident(conversation.get("id")),
        conversation_origin=_str(origin.get("type")),
        conversation_expires_at=_timestamp(conversation.get("expiration_timestamp")),
        pricing=_frozen(pricing) if pricing is not None else None, raw=_frozen(status),
        recipient_user_id=_identifier(builder, status, "recipient_user_id", "status"),
        recipient_parent_user_id=_identifier(builder, status, "recipient_parent_user_id", "status")))
