"""GraphClient against a mock wire: the exact requests Meta expects, and its recorded answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from engine.whatsapp import errors as e
from engine.whatsapp.graph import GraphClient, MediaInfo, MessageTemplate, Recipient, SendResult

pytestmark = pytest.mark.unit

TOKEN = "EAAG-test-token-0123456789abcdef"
PNID = "106540352242922"
WABA = "102290129340398"
TO = "393331234567"
WAMID = "wamid.HBgMMzkzMzMxMjM0NTY3FQIAERgSQjlEQzE4QjI1QkQ0RkEyRTNFAA=="

# Recorded Cloud API answers.
SENT = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": TO, "wa_id": TO}],
    "messages": [{"id": WAMID, "message_status": "accepted"}],
}
RE_ENGAGEMENT = {
    "error": {
        "message": "(#131047) Re-engagement message",
        "type": "OAuthException",
        "code": 131047,
        "error_subcode": 2494010,
        "error_data": {"messaging_product": "whatsapp",
                       "details": "Message failed to send because more than 24 hours have passed since the "
                                  "customer last replied to this number."},
        "fbtrace_id": "A1b2C3d4E5",
    }
}
RATE_LIMIT = {
    "error": {
        "message": "(#130429) Rate limit hit",
        "type": "OAuthException",
        "code": 130429,
        "error_data": {"messaging_product": "whatsapp",
                       "details": "Cloud API message throughput has been reached."},
        "fbtrace_id": "Rr1",
    }
}
EXPIRED_TOKEN = {
    "error": {
        "message": "Error validating access token: Session has expired on Friday, 01-Mar-24 10:00:00 PST.",
        "type": "OAuthException",
        "code": 190,
        "error_subcode": 463,
        "fbtrace_id": "Tt1",
    }
}

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, **kwargs: Any) -> GraphClient:
    return GraphClient(TOKEN, transport=httpx.MockTransport(handler), **kwargs)


def expect_json(method: str, path: str, body: dict[str, Any], answer: dict[str, Any] | None = None,
                seen: list[httpx.Request] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == method
        assert request.url.scheme == "https" and request.url.host == "graph.facebook.com"
        assert request.url.path == path
        assert request.url.query == b""
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == body
        if seen is not None:
            seen.append(request)
        return httpx.Response(200, json=answer if answer is not None else SENT)
    return handler


async def test_send_text_posts_the_documented_payload() -> None:
    seen: list[httpx.Request] = []
    handler = expect_json("POST", f"/v21.0/{PNID}/messages", {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "text",
        "text": {"preview_url": False, "body": "Ciao! Come posso aiutarti?"},
    }, seen=seen)
    async with client_for(handler) as graph:
        result = await graph.send_text(PNID, TO, "Ciao! Come posso aiutarti?")
    assert result == SendResult(wamid=WAMID, wa_id=TO)
    with pytest.raises(AttributeError):
        result.wamid = "x"  # type: ignore[misc]
    # the configured timeouts travel with the request
    assert seen[0].extensions["timeout"] == {"connect": 5.0, "read": 15.0, "write": 15.0, "pool": 15.0}


async def test_a_customer_known_only_by_bsuid_is_sent_to_as_recipient() -> None:
    """A user whose username hides their number: "recipient" carries the BSUID, and no "to" is sent."""
    bsuid = "US.13491208655302741918"
    answer = {"messaging_product": "whatsapp", "contacts": [{"input": bsuid, "user_id": bsuid}],
              "messages": [{"id": WAMID}]}
    handler = expect_json("POST", f"/v21.0/{PNID}/messages", {
        "messaging_product": "whatsapp", "recipient_type": "individual", "recipient": bsuid, "type": "text",
        "text": {"preview_url": False, "body": "Ciao!"}}, answer)
    async with client_for(handler) as graph:
        result = await graph.send_text(PNID, Recipient(user_id=bsuid), "Ciao!")
    assert result == SendResult(wamid=WAMID, wa_id=None, user_id=bsuid)


async def test_a_phone_wins_over_a_bsuid_and_one_of_them_is_needed() -> None:
    handler = expect_json("POST", f"/v21.0/{PNID}/messages", {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "reaction",
        "reaction": {"message_id": WAMID, "emoji": "👍"}})
    async with client_for(handler) as graph:
        assert (await graph.send_reaction(PNID, Recipient(phone=TO, user_id="US.1"), WAMID, "👍")).wa_id == TO

    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may reach Meta")

    async with client_for(never) as graph:
        with pytest.raises(ValueError, match="phone number or a business-scoped user id"):
            await graph.send_text(PNID, Recipient(), "x")


async def test_send_text_as_a_reply_with_a_link_preview() -> None:
    handler = expect_json("POST", f"/v21.0/{PNID}/messages", {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "text",
        "context": {"message_id": WAMID},
        "text": {"preview_url": True, "body": "Guarda https://example.com"},
    })
    async with client_for(handler) as graph:
        await graph.send_text(PNID, TO, "Guarda https://example.com", preview_url=True, reply_to=WAMID)


async def test_base_url_and_api_version_are_configurable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == f"http://127.0.0.1:9/v22.0/{PNID}/messages"
        return httpx.Response(200, json=SENT)
    async with client_for(handler, base_url="http://127.0.0.1:9/", api_version="v22.0") as graph:
        await graph.send_text(PNID, TO, "x")


async def test_an_injected_client_is_used_and_left_open() -> None:
    shared = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=SENT)))
    graph = GraphClient(TOKEN, client=shared)
    await graph.send_text(PNID, TO, "x")
    await graph.aclose()
    assert not shared.is_closed
    await shared.aclose()


@pytest.mark.parametrize(
    ("kwargs", "media"),
    [
        ({"kind": "image", "media_id": "1234", "caption": "La ricevuta"}, {"id": "1234", "caption": "La ricevuta"}),
        ({"kind": "audio", "media_id": "99"}, {"id": "99"}),
        ({"kind": "video", "link": "https://cdn.example.com/v.mp4"}, {"link": "https://cdn.example.com/v.mp4"}),
        ({"kind": "sticker", "media_id": "5"}, {"id": "5"}),
        ({"kind": "document", "media_id": "77", "caption": "Fattura", "filename": "fattura.pdf"},
         {"id": "77", "caption": "Fattura", "filename": "fattura.pdf"}),
    ],
)
async def test_send_media_payloads(kwargs: dict[str, Any], media: dict[str, Any]) -> None:
    kind = kwargs["kind"]
    handler = expect_json("POST", f"/v21.0/{PNID}/messages", {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": kind, kind: media,
    })
    async with client_for(handler) as graph:
        assert (await graph.send_media(PNID, TO, **kwargs)).wamid == WAMID


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "image"},
        {"kind": "image", "media_id": "1", "link": "https://x.example/a.png"},
        {"kind": "audio", "media_id": "1", "caption": "no"},
        {"kind": "image", "media_id": "1", "filename": "a.png"},
        {"kind": "location", "media_id": "1"},
    ],
)
async def test_send_media_refuses_impossible_combinations_without_calling_meta(kwargs: dict[str, Any]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")
    async with client_for(handler) as graph:
        with pytest.raises(ValueError):
            await graph.send_media(PNID, TO, **kwargs)


async def test_send_template_with_components() -> None:
    components = [{"type": "body", "parameters": [{"type": "text", "text": "Mario"}]}]
    handler = expect_json("POST", f"/v21.0/{PNID}/messages", {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "template",
        "template": {"name": "conferma_ordine", "language": {"code": "it"}, "components": components},
    })
    async with client_for(handler) as graph:
        await graph.send_template(PNID, TO, "conferma_ordine", "it", components=components)


async def test_send_template_without_components() -> None:
    handler = expect_json("POST", f"/v21.0/{PNID}/messages", {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}},
    })
    async with client_for(handler) as graph:
        await graph.send_template(PNID, TO, "hello_world", "en_US")


@pytest.mark.parametrize("emoji", ["\U0001F44D", ""])
async def test_send_reaction_and_its_removal(emoji: str) -> None:
    handler = expect_json("POST", f"/v21.0/{PNID}/messages", {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": TO, "type": "reaction",
        "reaction": {"message_id": WAMID, "emoji": emoji},
    })
    async with client_for(handler) as graph:
        await graph.send_reaction(PNID, TO, WAMID, emoji)


async def test_mark_read() -> None:
    handler = expect_json("POST", f"/v21.0/{PNID}/messages",
                          {"messaging_product": "whatsapp", "status": "read", "message_id": WAMID},
                          answer={"success": True})
    async with client_for(handler) as graph:
        await graph.mark_read(PNID, WAMID)


async def test_upload_media_sends_multipart_and_returns_the_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == f"/v21.0/{PNID}/media"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
        body = request.content
        assert b'name="messaging_product"\r\n\r\nwhatsapp' in body
        assert b'name="type"\r\n\r\napplication/pdf' in body
        assert b'name="file"; filename="menu.pdf"' in body
        assert b"Content-Type: application/pdf" in body
        assert b"%PDF-1.7 fake" in body
        # uploads get the longer media timeout
        assert request.extensions["timeout"]["read"] == 60.0
        return httpx.Response(200, json={"id": "1037543291543636"})
    async with client_for(handler) as graph:
        assert await graph.upload_media(PNID, b"%PDF-1.7 fake", "application/pdf", "menu.pdf") == "1037543291543636"


async def test_get_media_returns_its_info() -> None:
    answer = {"messaging_product": "whatsapp", "url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1",
              "mime_type": "image/jpeg", "sha256": "ab" * 32, "file_size": "303833", "id": "1037543291543636"}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and request.url.path == "/v21.0/1037543291543636"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        return httpx.Response(200, json=answer)
    async with client_for(handler) as graph:
        info = await graph.get_media("1037543291543636")
    assert info == MediaInfo(id="1037543291543636", url=answer["url"], mime_type="image/jpeg", sha256="ab" * 32,
                             file_size=303833)


MEDIA_URL = "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1037543291543636&ext=1&hash=ATs"


class Chunks(httpx.AsyncByteStream):
    """A body with no Content-Length, delivered in chunks; optionally broken after the first one."""

    def __init__(self, chunks: list[bytes], fail_after_first: bool = False) -> None:
        self.chunks = chunks
        self.fail_after_first = fail_after_first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == 1 and self.fail_after_first:
                raise httpx.ReadError("connection reset")
            yield chunk


async def test_download_media_streams_with_the_bearer_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and str(request.url) == MEDIA_URL
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        return httpx.Response(200, stream=Chunks([b"\xff\xd8", b"jpeg", b"\xff\xd9"]))
    async with client_for(handler) as graph:
        assert await graph.download_media(MEDIA_URL, max_bytes=100) == b"\xff\xd8jpeg\xff\xd9"


async def test_download_media_refuses_a_declared_size_over_the_cap() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 2_000_001)
    async with client_for(handler) as graph:
        with pytest.raises(e.MediaTooLarge) as info:
            await graph.download_media(MEDIA_URL, max_bytes=2_000_000)
    assert not info.value.retryable
    assert "2 MB" in info.value.reason_en and "2 MB" in info.value.reason_it


async def test_download_media_stops_a_stream_that_runs_past_the_cap() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks([b"a" * 60, b"b" * 60, b"c" * 60]))
    async with client_for(handler) as graph:
        with pytest.raises(e.MediaTooLarge):
            await graph.download_media(MEDIA_URL, max_bytes=100)
        assert await graph.download_media(MEDIA_URL, max_bytes=180) == b"a" * 60 + b"b" * 60 + b"c" * 60


async def test_download_media_broken_mid_stream_is_a_network_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks([b"a", b"b"], fail_after_first=True))
    async with client_for(handler) as graph:
        with pytest.raises(e.MetaNetworkError) as info:
            await graph.download_media(MEDIA_URL, max_bytes=100)
    assert info.value.retryable


async def test_download_media_errors_are_classified() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, stream=Chunks([b"<html>", b"not found</html>"]))
    async with client_for(handler) as graph:
        with pytest.raises(e.MetaApiError) as info:
            await graph.download_media(MEDIA_URL, max_bytes=100)
    assert info.value.http_status == 404 and not info.value.retryable
    assert info.value.raw_body == "<html>not found</html>"


@pytest.mark.parametrize("url", ["https://evil.example.com/steal?mid=1", "http://lookaside.fbsbx.com/x",
                                 "https://fbsbx.com.evil.example/x", "file:///etc/passwd"])
async def test_download_media_never_sends_the_token_elsewhere(url: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")
    async with client_for(handler) as graph:
        with pytest.raises(ValueError):
            await graph.download_media(url, max_bytes=100)


async def test_redirects_are_not_followed_even_by_an_injected_client() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://evil.example.com/collect"})
    shared = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=True)
    graph = GraphClient(TOKEN, client=shared)
    with pytest.raises(e.MetaApiError) as info:
        await graph.download_media(MEDIA_URL, max_bytes=100)
    assert calls == [MEDIA_URL] and info.value.http_status == 302 and not info.value.retryable
    await shared.aclose()


def template(n: int) -> dict[str, Any]:
    return {"name": f"t{n}", "language": "it", "status": "APPROVED", "category": "UTILITY", "id": str(n),
            "components": [{"type": "BODY", "text": f"Template {n}"}]}


async def test_list_templates_follows_every_page() -> None:
    pages = {
        None: {"data": [template(1), template(2)],
               "paging": {"cursors": {"before": "B1", "after": "A1"},
                          "next": f"https://graph.facebook.com/v21.0/{WABA}/message_templates?limit=2&after=A1"}},
        "A1": {"data": [template(3), template(4)],
               "paging": {"cursors": {"before": "B2", "after": "A2"},
                          "next": f"https://graph.facebook.com/v21.0/{WABA}/message_templates?limit=2&after=A2"}},
        "A2": {"data": [template(5)], "paging": {"cursors": {"before": "B3", "after": "A3"}}},
    }
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and request.url.path == f"/v21.0/{WABA}/message_templates"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.url.params["limit"] == "2"
        assert "access_token" not in request.url.params
        after = request.url.params.get("after")
        asked.append(after)
        return httpx.Response(200, json=pages[after])
    async with client_for(handler) as graph:
        found = [t async for t in graph.list_templates(WABA, limit=2)]
    assert asked == [None, "A1", "A2"]
    assert [t.name for t in found] == ["t1", "t2", "t3", "t4", "t5"]
    assert found[0] == MessageTemplate(id="1", name="t1", language="it", status="APPROVED", category="UTILITY",
                                       components=({"type": "BODY", "text": "Template 1"},))


async def test_list_templates_stops_on_a_repeated_cursor() -> None:
    page = {"data": [template(1)], "paging": {"cursors": {"after": "SAME"}, "next": "https://graph.facebook.com/x"}}
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json=page)
    async with client_for(handler) as graph:
        found = [t async for t in graph.list_templates(WABA)]
    assert calls == 2 and len(found) == 2


async def test_list_templates_of_an_empty_account() -> None:
    async with client_for(lambda r: httpx.Response(200, json={"data": []})) as graph:
        assert [t async for t in graph.list_templates(WABA)] == []


# --- errors --------------------------------------------------------------------------------

async def test_a_recorded_re_engagement_error_is_raised_classified() -> None:
    async with client_for(lambda r: httpx.Response(400, json=RE_ENGAGEMENT)) as graph:
        with pytest.raises(e.OutsideServiceWindow) as info:
            await graph.send_text(PNID, TO, "ciao")
    err = info.value
    assert (err.code, err.subcode, err.http_status, err.fbtrace_id) == (131047, 2494010, 400, "A1b2C3d4E5")
    assert not err.retryable and "24" in err.reason_it


async def test_a_rate_limit_carries_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=RATE_LIMIT, headers={"Retry-After": "30"})
    async with client_for(handler) as graph:
        with pytest.raises(e.RateLimited) as info:
            await graph.send_text(PNID, TO, "ciao")
    assert info.value.retryable and info.value.retry_after == 30.0


async def test_meta_usage_header_becomes_a_retry_after() -> None:
    usage = json.dumps({WABA: [{"type": "whatsapp", "call_count": 100, "total_cputime": 10, "total_time": 10,
                                "estimated_time_to_regain_access": 2}]})

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"code": 80007, "message": "(#80007) Rate limit issues"}},
                              headers={"X-Business-Use-Case-Usage": usage})
    async with client_for(handler) as graph:
        with pytest.raises(e.RateLimited) as info:
            await graph.send_text(PNID, TO, "ciao")
    assert info.value.retry_after == 120.0


async def test_an_expired_token_is_permanent() -> None:
    async with client_for(lambda r: httpx.Response(401, json=EXPIRED_TOKEN)) as graph:
        with pytest.raises(e.AuthError) as info:
            await graph.get_media("1")
    assert not info.value.retryable and info.value.subcode == 463


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_5xx_with_an_html_body_is_retryable(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=b"<html><body>Bad Gateway</body></html>",
                              headers={"content-type": "text/html"})
    async with client_for(handler) as graph:
        with pytest.raises(e.TemporarilyUnavailable) as info:
            await graph.send_text(PNID, TO, "ciao")
    assert info.value.retryable and info.value.raw_body == "<html><body>Bad Gateway</body></html>"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"messaging_product": "whatsapp"}', b'{"messages": []}'])
async def test_a_2xx_that_cannot_be_read_is_an_unexpected_response(body: bytes) -> None:
    async with client_for(lambda r: httpx.Response(200, content=body)) as graph:
        with pytest.raises(e.UnexpectedResponse) as info:
            await graph.send_text(PNID, TO, "ciao")
    # the message may have gone out: retrying could send it twice
    assert not info.value.retryable


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectTimeout("connect timed out"), httpx.ReadTimeout("read timed out"),
     httpx.PoolTimeout("pool"), httpx.ConnectError("connection refused"), httpx.RemoteProtocolError("eof")],
)
async def test_transport_failures_become_retryable_network_errors(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc
    async with client_for(handler) as graph:
        with pytest.raises(e.MetaNetworkError) as info:
            await graph.send_text(PNID, TO, "ciao")
    assert info.value.retryable
    assert info.value.__cause__ is exc
    assert f"/v21.0/{PNID}/messages" in str(info.value)


async def test_the_token_never_appears_in_errors_or_reprs() -> None:
    responses = iter([
        httpx.Response(400, json={"error": {"code": 190, "message": f"Malformed access token {TOKEN}",
                                            "error_data": {"details": TOKEN}, "fbtrace_id": "x"}}),
        httpx.Response(502, content=f"proxy saw Authorization: Bearer {TOKEN}".encode()),
        httpx.Response(200, content=f"garbage {TOKEN}".encode()),
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(responses)

    graph = client_for(handler)
    assert TOKEN not in repr(graph) and TOKEN not in str(graph)
    errors: list[e.MetaApiError] = []
    for _ in range(3):
        with pytest.raises(e.MetaApiError) as info:
            await graph.send_text(PNID, TO, "ciao")
        errors.append(info.value)

    def leaking(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"failed to connect with token={TOKEN}")
    async with client_for(leaking) as leaky:
        with pytest.raises(e.MetaNetworkError) as info:
            await leaky.send_text(PNID, TO, "ciao")
        errors.append(info.value)
    await graph.aclose()

    for err in errors:
        for text in (str(err), repr(err), err.raw_body or "", err.details or "", err.title or "",
                     err.reason_en, err.reason_it, str(err.args)):
            assert TOKEN not in text, (type(err).__name__, text)
