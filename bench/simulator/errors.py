"""Meta's Graph API error bodies, with the HTTP status Meta answers each code with.

Shape (Cloud API, v16.0+)::

    {"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException", "code": 131047,
               "error_data": {"messaging_product": "whatsapp", "details": "..."},
               "fbtrace_id": "A1b2..."}}

``error_subcode`` is deprecated for Cloud API codes and only appears on generic Graph errors
(e.g. 100/33 "object does not exist", 190/463 "session expired").
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any

_TRACE_ALPHABET = string.ascii_letters + string.digits


def fbtrace_id() -> str:
    return "A" + "".join(secrets.choice(_TRACE_ALPHABET) for _ in range(22))


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One entry of Meta's error catalogue: the code, its title, a default details text, the HTTP status."""

    code: int
    title: str
    details: str
    http_status: int = 400
    type: str = "OAuthException"
    retryable: bool = False


# Titles, details and statuses follow Meta's "Error codes" reference for the Cloud API.
CATALOG: dict[int, ErrorSpec] = {
    spec.code: spec
    for spec in (
        ErrorSpec(0, "AuthException", "We were unable to authenticate the app user.", 401),
        ErrorSpec(2, "Service temporarily unavailable", "Temporary due to downtime or due to being overloaded.", 503, retryable=True),
        ErrorSpec(4, "Application request limit reached", "The app has reached its API call rate limit.", 400, retryable=True),
        ErrorSpec(10, "Permission denied", "Permission is either not granted or has been removed.", 403),
        ErrorSpec(100, "Invalid parameter", "The request included one or more unsupported or misspelled parameters.", 400),
        ErrorSpec(190, "Invalid OAuth access token - Cannot parse access token", "The access token is invalid, expired or revoked.", 401),
        ErrorSpec(368, "Temporarily blocked for policies violations", "The WhatsApp Business Account has been restricted for violating a platform policy.", 403),
        ErrorSpec(130429, "Rate limit hit", "Cloud API message throughput has been reached.", 400, retryable=True),
        ErrorSpec(130472, "User's number is part of an experiment", "Failed to send message because this user's phone number is part of an experiment.", 400),
        ErrorSpec(131000, "Something went wrong", "Message failed to send due to an unknown error.", 500, retryable=True),
        ErrorSpec(131005, "Access denied", "Permission is either not granted or has been removed.", 403),
        ErrorSpec(131008, "Required parameter is missing", "The request is missing a required parameter.", 400),
        ErrorSpec(131009, "Parameter value is not valid", "One or more parameter values are invalid.", 400),
        ErrorSpec(131016, "Service unavailable", "A service is temporarily unavailable.", 503, retryable=True),
        ErrorSpec(131021, "Recipient cannot be sender", "Sender and recipient phone number is the same.", 400),
        ErrorSpec(131026, "Message Undeliverable", "Unable to deliver message. Reasons can include: the recipient phone number is not a WhatsApp phone number; the recipient has not accepted the new Terms of Service; the recipient is using an old WhatsApp version.", 400),
        ErrorSpec(131030, "Recipient phone number not in allowed list", "Recipient phone number not in allowed list. Add the recipient phone number to the recipient list and try again.", 400),
        ErrorSpec(131031, "Account has been locked", "The WhatsApp Business Account associated with the app has been restricted or disabled.", 403),
        ErrorSpec(131047, "Re-engagement message", "Message failed to send because more than 24 hours have passed since the customer last replied to this number.", 400),
        ErrorSpec(131048, "Spam rate limit hit", "Message failed to send because there are restrictions on how many messages can be sent from this phone number.", 400, retryable=True),
        ErrorSpec(131050, "User has stopped receipt of marketing messages", "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business.", 400),
        ErrorSpec(131051, "Unsupported message type", "Message type is currently not supported.", 400),
        ErrorSpec(131052, "Media download error", "Unable to download the media sent by the user.", 400),
        ErrorSpec(131053, "Media upload error", "Unable to upload the media used in the message.", 400),
        ErrorSpec(131062, "Business-scoped User ID (BSUID) recipients are not supported for this message", "Business-scoped User ID recipients are not supported for this message.", 400),
        ErrorSpec(131056, "(Business Account, Consumer Account) pair rate limit hit", "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.", 400, retryable=True),
        ErrorSpec(132000, "Number of parameters does not match the expected number of params", "The number of variable parameter values included in the request did not match the number of variable parameters defined in the template.", 400),
        ErrorSpec(132001, "Template name does not exist in the translation", "The template does not exist in the specified language or the template has not been approved.", 400),
        ErrorSpec(132015, "Template is Paused", "Template is paused due to low quality so it cannot be sent in a template message.", 400),
        ErrorSpec(132016, "Template is Disabled", "Template has been paused too many times due to low quality and is now permanently disabled.", 400),
    )
}


def spec_for(code: int) -> ErrorSpec:
    """The catalogue entry, or a generic 400 for a code the catalogue does not know."""
    return CATALOG.get(code) or ErrorSpec(code, "Unknown error", f"Error {code}.", 400)


@dataclass(slots=True)
class GraphError(Exception):
    """An error the simulator answers with; ``body()`` is the exact JSON Meta sends."""

    code: int
    message: str | None = None
    details: str | None = None
    http_status: int | None = None
    error_subcode: int | None = None
    type: str | None = None
    is_transient: bool | None = None
    with_error_data: bool = True
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.code, self.message)

    @property
    def spec(self) -> ErrorSpec:
        return spec_for(self.code)

    @property
    def status(self) -> int:
        return self.http_status if self.http_status is not None else self.spec.http_status

    def body(self) -> dict[str, Any]:
        spec = self.spec
        error: dict[str, Any] = {
            "message": self.message if self.message is not None else f"(#{self.code}) {spec.title}",
            "type": self.type or spec.type,
            "code": self.code,
        }
        if self.error_subcode is not None:
            error["error_subcode"] = self.error_subcode
        if self.is_transient is not None:
            error["is_transient"] = self.is_transient
        if self.with_error_data:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details or spec.details}
        error["fbtrace_id"] = fbtrace_id()
        return {"error": error}


def webhook_error(code: int, details: str | None = None) -> dict[str, Any]:
    """The error object as it appears in webhooks (``statuses[].errors[]``, ``value.errors[]``)."""
    spec = spec_for(code)
    return {
        "code": code,
        "title": spec.title,
        "message": spec.title,
        "error_data": {"details": details or spec.details},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }


# Constructors for the errors the server raises, so their wording lives in one place.

def invalid_token() -> GraphError:
    return GraphError(
        190,
        message="Invalid OAuth access token - Cannot parse access token",
        details="The access token could not be decrypted or is not valid.",
        extra_headers={"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token - Cannot parse access token"'},
    )


def missing_parameter(name: str) -> GraphError:
    return GraphError(100, message=f"(#100) The parameter {name} is required.", details=f"The parameter {name} is required.")


def missing_recipient() -> GraphError:
    """A send with neither ``to`` (phone number) nor ``recipient`` (business-scoped user ID)."""
    return GraphError(100, message="(#100) The parameter to is required.",
                      details="The parameter to is required, or recipient for a business-scoped user ID.")


def invalid_parameter(details: str) -> GraphError:
    return GraphError(100, message="(#100) Invalid parameter", details=details)


def no_such_object(object_id: str, method: str) -> GraphError:
    return GraphError(
        100,
        message=(
            f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, cannot be loaded due to "
            "missing permissions, or does not support this operation. Please read the Graph API documentation at "
            "https://developers.facebook.com/docs/graph-api"
        ),
        type="GraphMethodException",
        error_subcode=33,
        with_error_data=False,
    )


def unknown_path(path: str) -> GraphError:
    return GraphError(2500, message=f"Unknown path components: {path}", http_status=400, with_error_data=False)


def service_unavailable() -> GraphError:
    return GraphError(
        2,
        message="(#2) Service temporarily unavailable",
        is_transient=True,
        details="Temporary due to downtime or due to being overloaded. Retry later.",
    )


def internal_error() -> GraphError:
    return GraphError(131000, is_transient=True)
