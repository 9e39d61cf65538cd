"""Meta's error codes → exception class, retryable flag and readable reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.errors import ParloError
from engine.whatsapp import errors as e
from engine.whatsapp.errors import ERROR_TABLE, error_from_payload, error_from_response, network_error

pytestmark = pytest.mark.unit

# What each code must mean, written out independently of the module's table.
EXPECTED: dict[int, tuple[type[e.MetaApiError], bool]] = {
    1: (e.TemporarilyUnavailable, True),
    2: (e.TemporarilyUnavailable, True),
    131000: (e.TemporarilyUnavailable, True),
    131016: (e.TemporarilyUnavailable, True),
    133004: (e.TemporarilyUnavailable, True),
    131057: (e.TemporarilyUnavailable, True),
    4: (e.RateLimited, True),
    80007: (e.RateLimited, True),
    130429: (e.RateLimited, True),
    131056: (e.RateLimited, True),
    131047: (e.OutsideServiceWindow, False),
    470: (e.OutsideServiceWindow, False),
    131026: (e.Undeliverable, False),
    131049: (e.Undeliverable, False),
    131050: (e.Undeliverable, False),
    130472: (e.Undeliverable, False),
    131030: (e.Undeliverable, False),
    132000: (e.TemplateError, False),
    132001: (e.TemplateError, False),
    132005: (e.TemplateError, False),
    132007: (e.TemplateError, False),
    132008: (e.TemplateError, False),
    132012: (e.TemplateError, False),
    132015: (e.TemplateError, False),
    132016: (e.TemplateError, False),
    132068: (e.TemplateError, False),
    132069: (e.TemplateError, False),
    131052: (e.MediaError, False),
    131053: (e.MediaError, False),
    0: (e.AuthError, False),
    190: (e.AuthError, False),
    3: (e.AccessDenied, False),
    10: (e.AccessDenied, False),
    131005: (e.AccessDenied, False),
    **{code: (e.AccessDenied, False) for code in range(200, 300)},
    100: (e.InvalidRequest, False),
    131008: (e.InvalidRequest, False),
    131009: (e.InvalidRequest, False),
    131021: (e.InvalidRequest, False),
    131051: (e.InvalidRequest, False),
    131062: (e.InvalidRequest, False),
    135000: (e.InvalidRequest, False),
    368: (e.PolicyBlocked, False),
    131031: (e.PolicyBlocked, False),
    130497: (e.PolicyBlocked, False),
    131048: (e.PolicyBlocked, False),
    131042: (e.AccountError, False),
    131045: (e.AccountError, False),
    131037: (e.AccountError, False),
    133000: (e.AccountError, False),
    133005: (e.AccountError, False),
    133006: (e.AccountError, False),
    133008: (e.AccountError, False),
    133009: (e.AccountError, False),
    133010: (e.AccountError, False),
    133015: (e.AccountError, False),
    133016: (e.AccountError, False),
}

# A recorded Cloud API answer to a free-form send outside the 24-hour window.
RE_ENGAGEMENT = {
    "error": {
        "message": "(#131047) Re-engagement message",
        "type": "OAuthException",
        "code": 131047,
        "error_subcode": 2494010,
        "error_data": {
            "messaging_product": "whatsapp",
            "details": "Message failed to send because more than 24 hours have passed since the customer last "
                       "replied to this number.",
        },
        "fbtrace_id": "AbCdEfGh123_-xyz",
    }
}


def _body(code: int, message: str = "(#{code}) Something", http_details: str = "details") -> bytes:
    return json.dumps({"error": {"message": message.format(code=code), "type": "OAuthException", "code": code,
                                 "error_data": {"messaging_product": "whatsapp", "details": http_details},
                                 "fbtrace_id": "trace"}}).encode()


def test_the_table_and_the_expectations_list_the_same_codes() -> None:
    assert set(ERROR_TABLE) == set(EXPECTED)


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_every_code_maps_to_its_class_and_retryable_flag(code: int) -> None:
    cls, retryable = EXPECTED[code]
    err = error_from_response(400, _body(code))
    assert type(err) is cls
    assert isinstance(err, ParloError)
    assert err.retryable is retryable
    assert err.code == code
    assert err.reason_en and err.reason_it and err.reason_en != err.reason_it
    assert err.fbtrace_id == "trace"


def test_the_class_default_agrees_with_every_row() -> None:
    # the group's class-level flag is what callers see on a bare class; no row contradicts it
    for code, spec in ERROR_TABLE.items():
        assert spec.cls.retryable is spec.retryable, code


def test_a_recorded_re_engagement_answer_is_read_in_full() -> None:
    err = error_from_response(400, json.dumps(RE_ENGAGEMENT).encode())
    assert isinstance(err, e.OutsideServiceWindow)
    assert not err.retryable
    assert (err.code, err.subcode, err.http_status) == (131047, 2494010, 400)
    assert err.title == "Re-engagement message"
    assert err.details is not None and "24 hours" in err.details
    assert err.fbtrace_id == "AbCdEfGh123_-xyz"
    assert err.error_type == "OAuthException"
    assert "24 ore" in err.reason_it and "24 hours" in err.reason_en
    assert err.reason("it") == err.reason_it and err.reason("en") == err.reason_en
    assert "131047" in str(err)
    assert "OutsideServiceWindow" in repr(err) and "131047" in repr(err)


def test_a_mapping_body_and_a_string_code_are_accepted() -> None:
    err = error_from_response(429, {"error": {"code": "130429", "message": "(#130429) Rate limit hit"}})
    assert isinstance(err, e.RateLimited) and err.retryable and err.code == 130429


def test_the_webhook_error_shape_is_classified_too() -> None:
    err = error_from_payload({"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                              "error_data": {"details": "Message Undeliverable."}})
    assert isinstance(err, e.Undeliverable)
    assert err.title == "Message undeliverable" and err.http_status is None


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (500, e.TemporarilyUnavailable, True),
        (502, e.TemporarilyUnavailable, True),
        (503, e.TemporarilyUnavailable, True),
        (504, e.TemporarilyUnavailable, True),
        (429, e.RateLimited, True),
        (408, e.TemporarilyUnavailable, True),
        (401, e.AuthError, False),
        (403, e.AccessDenied, False),
        (400, e.MetaApiError, False),
        (404, e.MetaApiError, False),
    ],
)
def test_unknown_codes_fall_back_by_http_status_and_keep_the_body(
        status: int, cls: type[e.MetaApiError], retryable: bool) -> None:
    body = _body(987654, "(#987654) Brand new error")
    err = error_from_response(status, body)
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.code == 987654 and err.title == "Brand new error"
    assert err.raw_body == body.decode()


def test_an_unknown_code_meta_calls_transient_is_retryable() -> None:
    err = error_from_response(400, {"error": {"code": 987654, "message": "hm", "is_transient": True}})
    assert err.retryable


GARBAGE: list[Any] = [
    None,
    b"",
    b"<html><body>502 Bad Gateway</body></html>",
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'"just a string"',
    b'{"error": "not an object"}',
    b'{"error": {"code": {"nested": true}, "message": 12, "error_data": [1]}}',
    b'{"error": {"code": true}}',
    b"{truncated json",
    "plain text",
    {"unexpected": "shape"},
]


@pytest.mark.parametrize("body", GARBAGE)
@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (400, False)])
def test_garbage_bodies_never_raise_and_fall_back_by_status(body: Any, status: int, retryable: bool) -> None:
    err = error_from_response(status, body)
    assert isinstance(err, e.MetaApiError)
    assert err.retryable is retryable
    assert err.http_status == status
    assert err.reason_en and err.reason_it
    str(err), repr(err)


def test_a_huge_body_is_kept_truncated() -> None:
    err = error_from_response(500, b"x" * 100_000)
    assert err.raw_body is not None and len(err.raw_body) <= e.RAW_BODY_LIMIT + 1


def test_secrets_are_cut_out_of_the_kept_body_and_the_message() -> None:
    token = "EAAGsecretTOKEN123"
    body = json.dumps({"error": {"code": 190, "message": f"Invalid OAuth access token - Cannot parse {token}",
                                 "error_data": {"details": token}}}).encode()
    err = error_from_response(401, body, secrets=[token])
    assert isinstance(err, e.AuthError)
    for text in (str(err), repr(err), err.raw_body or "", err.title or "", err.details or "", err.reason_en):
        assert token not in text
    garbage = error_from_response(502, f"proxy echo: Bearer {token}".encode(), secrets=[token])
    assert token not in (garbage.raw_body or "")


def test_retry_after_is_carried() -> None:
    err = error_from_response(429, _body(130429), retry_after=12.0)
    assert err.retry_after == 12.0


def test_network_errors_are_retryable() -> None:
    err = network_error("POST https://graph.facebook.com/v21.0/1/messages timed out")
    assert isinstance(err, e.MetaNetworkError) and err.retryable
    assert err.code is None and "Impossibile raggiungere WhatsApp" in err.reason_it
