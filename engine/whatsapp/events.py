"""Typed, immutable events parsed from a WhatsApp Cloud API webhook delivery.

A delivery (:class:`WebhookBatch`) holds what Meta batched into one POST: inbound messages,
status updates of messages we sent, contact profiles, template updates, value-level errors,
changes of fields we do not model yet, and the items that were too malformed to use.
Every event keeps the JSON it was made from in ``raw``: Meta adds fields without notice and
the receipt is the truth, the typed view only a convenience.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

log = logging.getLogger("parlo.whatsapp.events")

# Values already logged as unknown; bounded so that hostile input cannot grow it without end.
_LOGGED_UNKNOWN: set[tuple[str, str]] = set()
_LOGGED_UNKNOWN_MAX = 512


def _log_unknown_once(enum_name: str, value: object) -> None:
    shown = repr(value)[:80]
    key = (enum_name, shown)
    if key in _LOGGED_UNKNOWN or len(_LOGGED_UNKNOWN) >= _LOGGED_UNKNOWN_MAX:
        return
    _LOGGED_UNKNOWN.add(key)
    log.info("unknown WhatsApp value kept as UNKNOWN", extra={"enum": enum_name, "value": shown})


class _TolerantStrEnum(StrEnum):
    """Meta adds values without notice: an unknown one becomes ``UNKNOWN`` (logged once), never an error."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            member = cls._value2member_map_.get(value.lower())
            if member is not None:
                return member
        _log_unknown_once(cls.__name__, value)
        return cls._value2member_map_["unknown"]


class MessageType(_TolerantStrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACTS = "contacts"
    INTERACTIVE = "interactive"
    BUTTON = "button"
    REACTION = "reaction"
    ORDER = "order"
    SYSTEM = "system"
    EDIT = "edit"
    REVOKE = "revoke"
    UNSUPPORTED = "unsupported"  # Meta's own type for what the Cloud API cannot deliver (polls, …)
    UNKNOWN = "unknown"  # a type string this code does not know yet


MEDIA_TYPES = frozenset({MessageType.IMAGE, MessageType.AUDIO, MessageType.VIDEO, MessageType.DOCUMENT,
                         MessageType.STICKER})


class MessageStatus(_TolerantStrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"  # a voice message was played for the first time
    FAILED = "failed"
    DELETED = "deleted"  # listed by older Cloud API references; kept so it is not logged as unknown
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class MetaError:
    """One item of an ``errors`` array (message, status or change level)."""

    code: int | None
    title: str | None
    message: str | None
    details: str | None  # error_data.details
    href: str | None


@dataclass(frozen=True, slots=True)
class Referral:
    """A click-to-WhatsApp ad or post that started the message."""

    source_url: str | None
    source_id: str | None
    source_type: str | None
    headline: str | None
    body: str | None
    media_type: str | None
    image_url: str | None
    video_url: str | None
    thumbnail_url: str | None
    ctwa_clid: str | None
    raw: Mapping[str, Any]


# --- message contents ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextContent:
    body: str | None


@dataclass(frozen=True, slots=True)
class MediaContent:
    """Image, audio, video, document or sticker. The bytes are fetched later with ``media_id``."""

    kind: MessageType
    media_id: str | None
    mime_type: str | None
    sha256: str | None
    caption: str | None = None
    filename: str | None = None
    voice: bool = False  # audio recorded as a voice note
    animated: bool = False  # animated sticker
    url: str | None = None  # Meta's download URL when the webhook carries one


@dataclass(frozen=True, slots=True)
class LocationContent:
    latitude: float | None
    longitude: float | None
    name: str | None = None
    address: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ContactsContent:
    """Contact cards as Meta sends them (name, phones, emails, org, …); their shape varies by device."""

    contacts: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class InteractiveReply:
    """The user's answer to an interactive message we sent.

    ``kind`` is ``button_reply``, ``list_reply`` or ``nfm_reply`` (a Flow or address form, whose
    answer is the JSON string ``response_json``), or whatever new kind Meta sends.
    """

    kind: str | None
    reply_id: str | None
    title: str | None
    description: str | None = None
    response_json: str | None = None
    name: str | None = None  # nfm_reply: "flow", "address_message", …
    body: str | None = None  # nfm_reply: the text shown in the chat ("Sent")


@dataclass(frozen=True, slots=True)
class ButtonReply:
    """A tap on a template's quick-reply button (message type ``button``)."""

    payload: str | None
    text: str | None


@dataclass(frozen=True, slots=True)
class Reaction:
    target_wamid: str | None
    emoji: str | None  # None (or absent) means the user removed their reaction

    @property
    def removed(self) -> bool:
        return not self.emoji


@dataclass(frozen=True, slots=True)
class OrderContent:
    catalog_id: str | None
    items: tuple[Mapping[str, Any], ...]  # product_retailer_id, quantity, item_price, currency
    text: str | None


@dataclass(frozen=True, slots=True)
class SystemContent:
    """A change on the user's side, e.g. ``user_changed_number`` (``new_wa_id`` holds the new number)."""

    body: str | None
    kind: str | None
    new_wa_id: str | None
    new_user_id: str | None = None  # the user's new business-scoped user id (BSUID), when sent


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A message the Cloud API cannot deliver, or a type this code does not know."""

    raw_type: str
    errors: tuple[MetaError, ...] = ()
    kind: str | None = None  # Meta's hint of what it was (``unsupported.type``, e.g. "poll")


@dataclass(frozen=True, slots=True)
class EditContent:
    """The user edited an earlier message; ``content`` is the new version when Meta sends it."""

    target_wamid: str | None
    new_type: MessageType | None
    content: MessageContent | None


@dataclass(frozen=True, slots=True)
class RevokeContent:
    """The user deleted an earlier message for everyone."""

    target_wamid: str | None


MessageContent: TypeAlias = (
    TextContent | MediaContent | LocationContent | ContactsContent | InteractiveReply | ButtonReply | Reaction
    | OrderContent | SystemContent | EditContent | RevokeContent | Unsupported
)


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a customer sent. The sender is named by ``from_wa_id`` (the phone number), by
    ``from_user_id`` (the business-scoped user id, BSUID), or by both: since 2026 Meta sends the
    BSUID always and withholds the phone number of a user who adopted a username. The parser
    keeps no message that has neither."""

    wamid: str
    from_wa_id: str | None
    phone_number_id: str
    display_phone_number: str | None
    timestamp: datetime
    type: MessageType
    raw_type: str  # the type string as sent, also when ``type`` is UNKNOWN
    text: str | None  # what an agent's inbox shows for it; None when there is nothing to show
    profile_name: str | None
    context_wamid: str | None  # the message this one replies to
    forwarded: bool
    referral: Referral | None
    content: MessageContent
    errors: tuple[MetaError, ...]
    raw: Mapping[str, Any]
    from_user_id: str | None = None  # business-scoped user id (BSUID), rolled out by Meta in 2026
    from_parent_user_id: str | None = None  # the BSUID shared by linked business portfolios, when enabled
    username: str | None = None  # the sender's WhatsApp username, from the change's contacts

    @property
    def sender(self) -> str:
        """The sender's key within a delivery: the BSUID when sent (Meta always sends it now, so all
        of one user's messages share it), else the phone number."""
        return self.from_user_id or self.from_wa_id or ""


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    wamid: str
    status: MessageStatus
    raw_status: str
    timestamp: datetime
    recipient_id: str | None
    phone_number_id: str
    errors: tuple[MetaError, ...]
    conversation_id: str | None
    conversation_origin: str | None
    conversation_expires_at: datetime | None
    pricing: Mapping[str, Any] | None
    raw: Mapping[str, Any]
    # The BSUID the message went to; ``recipient_id`` (the phone) is absent when it was sent to a BSUID.
    recipient_user_id: str | None = None
    recipient_parent_user_id: str | None = None


TEMPLATE_STATUS_FIELD = "message_template_status_update"


@dataclass(frozen=True, slots=True)
class TemplateStatusUpdate:
    """A change to a message template.

    ``field`` tells which webhook field it came on. Only ``message_template_status_update``
    carries a review ``event`` (APPROVED, REJECTED, PAUSED, …); for the other template fields
    (category, quality, components) ``event`` is the field name and the news is in ``raw``
    (and in ``category`` for ``template_category_update``).
    """

    waba_id: str
    event: str
    template_id: str | None
    name: str | None
    language: str | None
    reason: str | None
    raw: Mapping[str, Any]
    field: str = TEMPLATE_STATUS_FIELD
    category: str | None = None

    @property
    def is_status_change(self) -> bool:
        return self.field == TEMPLATE_STATUS_FIELD


@dataclass(frozen=True, slots=True)
class ContactProfile:
    """An item of a change's ``contacts``: who sent its messages (or received its statuses).
    ``wa_id`` (the phone) is withheld for a user with a username; ``user_id`` (BSUID) then names them."""

    wa_id: str | None
    profile_name: str | None
    phone_number_id: str
    user_id: str | None = None  # BSUID
    username: str | None = None
    parent_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeError:
    """An error Meta reports for a whole change (value-level ``errors``), not for one message."""

    error: MetaError
    phone_number_id: str | None
    waba_id: str


@dataclass(frozen=True, slots=True)
class UnknownChange:
    waba_id: str
    field: str
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """Part of a delivery too malformed to use; kept so that the receipt and the log can say why."""

    reason: str
    raw: Any


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    messages: tuple[InboundMessage, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()
    contacts: tuple[ContactProfile, ...] = ()
    template_updates: tuple[TemplateStatusUpdate, ...] = ()
    errors: tuple[ChangeError, ...] = ()
    unknown_changes: tuple[UnknownChange, ...] = ()
    rejected: tuple[RejectedItem, ...] = ()
    phone_number_ids: frozenset[str] = frozenset()

    @property
    def is_empty(self) -> bool:
        return not (self.messages or self.statuses or self.contacts or self.template_updates or self.errors
                    or self.unknown_changes or self.rejected)
