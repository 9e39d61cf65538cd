"""Checks a ``POST /{phone_number_id}/messages`` body the way the Cloud API does before accepting it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.simulator.errors import GraphError, invalid_parameter, missing_parameter, missing_recipient
from bench.simulator.state import is_bsuid, recipient_key

MESSAGE_TYPES = frozenset(
    {"text", "image", "audio", "video", "document", "sticker", "template", "reaction", "interactive", "location", "contacts"}
)
MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})
INTERACTIVE_TYPES = frozenset(
    {"button", "list", "product", "product_list", "catalog_message", "cta_url", "flow", "location_request_message", "address_message", "call_permission_request"}
)
TEXT_MAX = 4096


def _obj(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise missing_parameter(key)
    return value


def _require(obj: dict[str, Any], path: str, key: str) -> Any:
    value = obj.get(key)
    if value is None or value == "":
        raise missing_parameter(f"{path}['{key}']")
    return value


@dataclass(frozen=True, slots=True)
class Address:
    """Whom a send goes to. Meta delivers by ``to`` (a phone number) when given, else by
    ``recipient`` (a business-scoped user id, for a user whose number is hidden behind a username)."""

    to: str | None
    recipient: str | None

    @property
    def key(self) -> str:
        return recipient_key(self.to if self.to is not None else self.recipient or "")


def is_mark_as_read(payload: dict[str, Any]) -> bool:
    return payload.get("status") == "read" and "to" not in payload and "recipient" not in payload


def validate_read(payload: dict[str, Any]) -> str:
    if payload.get("messaging_product") != "whatsapp":
        raise missing_parameter("messaging_product")
    message_id = payload.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise missing_parameter("message_id")
    return message_id


def _address(payload: dict[str, Any]) -> Address:
    to, recipient = payload.get("to"), payload.get("recipient")
    if isinstance(to, str) and to.strip():
        if not any(ch.isdigit() for ch in to):
            raise GraphError(131009, details=f"Parameter 'to' is not a valid phone number: {to!r}."[:500])
        return Address(to, recipient if isinstance(recipient, str) else None)
    if recipient is None or recipient == "":
        raise missing_recipient()
    if not is_bsuid(recipient):
        raise GraphError(131009, details=f"Parameter 'recipient' is not a valid business-scoped user ID: {recipient!r}."[:500])
    return Address(None, recipient)


def validate_send(payload: dict[str, Any]) -> tuple[Address, str]:
    """``(address, type)`` of a valid message, or raises the error Meta answers with."""
    product = payload.get("messaging_product")
    if product is None:
        raise missing_parameter("messaging_product")
    if product != "whatsapp":
        raise invalid_parameter(f"Param messaging_product must be one of {{WHATSAPP}} - got \"{product}\".")
    address = _address(payload)
    recipient_type = payload.get("recipient_type", "individual")
    if recipient_type not in ("individual", "group"):
        raise invalid_parameter(f"Param recipient_type must be one of {{INDIVIDUAL, GROUP}} - got \"{recipient_type}\".")
    kind = payload.get("type", "text")  # Meta defaults a missing type to text
    if kind not in MESSAGE_TYPES:
        allowed = ", ".join(sorted(t.upper() for t in MESSAGE_TYPES))
        raise invalid_parameter(f"Param type must be one of {{{allowed}}} - got \"{kind}\".")
    context = payload.get("context")
    if context is not None and (not isinstance(context, dict) or not context.get("message_id")):
        raise missing_parameter("context['message_id']")
    _validate_body(kind, payload)
    return address, kind


def _validate_body(kind: str, payload: dict[str, Any]) -> None:
    if kind == "text":
        body = _require(_obj(payload, "text"), "text", "body")
        if not isinstance(body, str):
            raise invalid_parameter("Param text['body'] must be a string.")
        if len(body) > TEXT_MAX:
            raise invalid_parameter(f"Param text['body'] must be at most {TEXT_MAX} characters long.")
    elif kind in MEDIA_TYPES:
        media = _obj(payload, kind)
        has_id, has_link = bool(media.get("id")), bool(media.get("link"))
        if has_id == has_link:
            raise invalid_parameter(f"Please specify exactly one of {kind}['id'] or {kind}['link'].")
        if kind == "sticker" and media.get("caption"):
            raise invalid_parameter("Param sticker['caption'] is not supported for sticker messages.")
    elif kind == "template":
        template = _obj(payload, "template")
        _require(template, "template", "name")
        language = template.get("language")
        if not isinstance(language, dict) or not language.get("code"):
            raise missing_parameter("template['language']['code']")
        components = template.get("components", [])
        if not isinstance(components, list):
            raise invalid_parameter("Param template['components'] must be an array.")
    elif kind == "reaction":
        reaction = _obj(payload, "reaction")
        _require(reaction, "reaction", "message_id")
        if "emoji" not in reaction:  # "" removes a reaction, so only absence is an error
            raise missing_parameter("reaction['emoji']")
    elif kind == "interactive":
        interactive = _obj(payload, "interactive")
        itype = _require(interactive, "interactive", "type")
        if itype not in INTERACTIVE_TYPES:
            raise invalid_parameter(f"Param interactive['type'] must be one of {{{', '.join(sorted(INTERACTIVE_TYPES))}}} - got \"{itype}\".")
        if not isinstance(interactive.get("action"), dict):
            raise missing_parameter("interactive['action']")
        if itype in ("button", "list") and not isinstance(interactive.get("body"), dict):
            raise missing_parameter("interactive['body']")
    elif kind == "location":
        location = _obj(payload, "location")
        for key in ("latitude", "longitude"):
            value = location.get(key)
            if value is None:
                raise missing_parameter(f"location['{key}']")
            try:
                float(value)
            except (TypeError, ValueError):
                raise invalid_parameter(f"Param location['{key}'] must be a number.") from None
    elif kind == "contacts":
        contacts = payload.get("contacts")
        if not isinstance(contacts, list) or not contacts:
            raise missing_parameter("contacts")
