"""What the simulator knows (phones, templates, media) and what it saw (attempts, accepted sends).

Shared between the server's event-loop thread and the test's thread, so every access goes
through one lock; readers get copies.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Phone:
    phone_number_id: str
    token: str
    waba_id: str
    display_phone_number: str


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    waba_id: str
    name: str
    language: str
    status: str
    category: str
    components: list[dict[str, Any]]

    def as_graph(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameter_format": "POSITIONAL",
            "components": self.components,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "id": self.id,
        }


@dataclass(frozen=True, slots=True)
class Media:
    id: str
    data: bytes
    mime_type: str
    sha256: str
    phone_number_id: str | None
    filename: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST to ``/messages`` as the simulator answered it (accepted or not)."""

    phone_number_id: str
    to: str | None
    type: str | None
    payload: dict[str, Any] | None
    at: float  # time.monotonic()
    http_status: int
    error_code: int | None = None
    wamid: str | None = None
    fault: str | None = None  # "outage:<mode>", "rate_limit", "pair_rate_limit", "recipient", "auth", "validation"
    recipient: str | None = None  # the body's "recipient" (a BSUID), when it was a string

    @property
    def accepted(self) -> bool:
        return self.wamid is not None


@dataclass(frozen=True, slots=True)
class SendRecord:
    """An accepted outbound message, addressed by phone number (``to``) or by business-scoped user
    id (``recipient``). Meta takes ``to`` when a send carries both: ``addressed_by`` says which was used."""

    phone_number_id: str
    to: str | None  # the phone number as sent; None for a send by BSUID alone
    wa_id: str | None  # its digits, as Meta resolves them
    type: str
    payload: dict[str, Any]
    wamid: str
    accepted_at: float  # time.monotonic()
    recipient: str | None = None  # the BSUID as sent, if the body carried one

    @property
    def addressed_by(self) -> str:
        """``"to"`` or ``"recipient"``: which field Meta delivered by."""
        return "to" if self.to is not None else "recipient"

    @property
    def recipient_key(self) -> str:
        """Who got it: the phone's digits, or the BSUID."""
        return self.wa_id if self.wa_id is not None else self.recipient or ""

    @property
    def text(self) -> str | None:
        body = self.payload.get("text", {})
        return body.get("body") if isinstance(body, dict) else None

    @property
    def callback_data(self) -> str | None:
        value = self.payload.get("biz_opaque_callback_data")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A webhook POST the simulator made (auto statuses, failed-status callbacks, admin deliveries)."""

    url: str
    payload: dict[str, Any]
    status: int | None  # None when the POST raised
    error: str | None
    at: float


def wa_id_of(to: str) -> str:
    """Meta answers with the digits of the number it resolved (``+39 333-1234`` → ``393331234``)."""
    return "".join(ch for ch in to if ch.isdigit())


# A business-scoped user id: country code, dot, up to 128 letters and digits ("US.13491208655302741918");
# a parent BSUID has a marker segment ("US.ENT.11815799212886844830").
BSUID = re.compile(r"[A-Z]{2}(?:\.[A-Z]{1,8})?\.[A-Za-z0-9]{1,128}")


def is_bsuid(value: object) -> bool:
    return isinstance(value, str) and BSUID.fullmatch(value) is not None


def recipient_key(to_or_bsuid: str) -> str:
    """One key per recipient, whichever way they were addressed: a BSUID as is, a phone by its digits."""
    return to_or_bsuid if is_bsuid(to_or_bsuid) else wa_id_of(to_or_bsuid)


_wamid_counter = itertools.count(1)


def new_wamid(to: str) -> str:
    # Real wamids are base64 of an opaque structure that embeds the recipient; only uniqueness matters.
    raw = b"\x15\x02\x00\x11\x18" + recipient_key(to).encode() + b"\x15\x02" + next(_wamid_counter).to_bytes(6, "big") + secrets.token_bytes(6)
    return "wamid.HBgM" + base64.b64encode(raw).decode()


def new_numeric_id() -> str:
    return str(secrets.randbelow(9 * 10**15) + 10**15)


@dataclass
class SimState:
    lock: threading.RLock = field(default_factory=threading.RLock)
    phones: dict[str, Phone] = field(default_factory=dict)
    templates: list[Template] = field(default_factory=list)
    media: dict[str, Media] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    sends: list[SendRecord] = field(default_factory=list)
    read_marks: list[tuple[str, str]] = field(default_factory=list)  # (phone_number_id, message_id)
    deliveries: list[WebhookDelivery] = field(default_factory=list)

    # -- registry ---------------------------------------------------------------------------------

    def register_phone(self, phone: Phone) -> None:
        with self.lock:
            self.phones[phone.phone_number_id] = phone

    def phone(self, phone_number_id: str) -> Phone | None:
        with self.lock:
            return self.phones.get(phone_number_id)

    def token_known(self, token: str) -> bool:
        with self.lock:
            return any(secrets.compare_digest(p.token, token) for p in self.phones.values())

    def add_template(self, template: Template) -> None:
        with self.lock:
            self.templates.append(template)

    def templates_of(self, waba_id: str) -> list[Template]:
        with self.lock:
            return [t for t in self.templates if t.waba_id == waba_id]

    def waba_known(self, waba_id: str) -> bool:
        with self.lock:
            return any(p.waba_id == waba_id for p in self.phones.values()) or any(t.waba_id == waba_id for t in self.templates)

    def add_media(self, data: bytes, mime_type: str, *, phone_number_id: str | None = None, filename: str | None = None) -> Media:
        media = Media(
            id=new_numeric_id(),
            data=data,
            mime_type=mime_type,
            sha256=hashlib.sha256(data).hexdigest(),
            phone_number_id=phone_number_id,
            filename=filename,
            created_at=time.time(),
        )
        with self.lock:
            self.media[media.id] = media
        return media

    def get_media(self, media_id: str) -> Media | None:
        with self.lock:
            return self.media.get(media_id)

    def delete_media(self, media_id: str) -> bool:
        with self.lock:
            return self.media.pop(media_id, None) is not None

    # -- records ----------------------------------------------------------------------------------

    def record_attempt(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def record_send(self, send: SendRecord) -> None:
        with self.lock:
            self.sends.append(send)

    def record_read(self, phone_number_id: str, message_id: str) -> None:
        with self.lock:
            self.read_marks.append((phone_number_id, message_id))

    def record_delivery(self, delivery: WebhookDelivery) -> None:
        with self.lock:
            self.deliveries.append(delivery)

    def sends_matching(self, predicate: Callable[[SendRecord], bool] | None = None) -> list[SendRecord]:
        with self.lock:
            return [s for s in self.sends if predicate is None or predicate(s)]

    def count_by_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(s.recipient_key for s in self.sends)

    def clear_records(self) -> None:
        with self.lock:
            self.attempts.clear()
            self.sends.clear()
            self.read_marks.clear()
            self.deliveries.clear()

    def clear_all(self) -> None:
        with self.lock:
            self.clear_records()
            self.phones.clear()
            self.templates.clear()
            self.media.clear()
