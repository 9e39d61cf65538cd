"""The Graph API client for the WhatsApp Cloud API: a thin wrapper with one choke point.

Every call goes through ``GraphClient._request``, which adds the bearer token, applies the
timeouts, and turns whatever goes wrong into the tree of ``engine.whatsapp.errors``: transport
failures become ``MetaNetworkError`` (retryable), non-2xx answers are classified by
``error_from_response``. The token lives in a header only (never a URL) and is cut out of every
error text. Tests swap the wire with ``transport=httpx.MockTransport(...)``.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from engine.whatsapp.errors import (
    MediaTooLarge,
    MetaApiError,
    UnexpectedResponse,
    error_from_response,
    network_error,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
DEFAULT_MEDIA_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# Media URLs returned by GET /{media-id} live on Meta's CDN; the bearer token is sent to these
# hosts (and to base_url's) only, so a forged URL cannot walk away with it.
DEFAULT_MEDIA_HOSTS = ("fbsbx.com", "facebook.com", "fbcdn.net", "whatsapp.net")
MEDIA_KINDS = ("image", "audio", "video", "document", "sticker")
_CAPTIONED = ("image", "video", "document")
_ERROR_BODY_LIMIT = 64 * 1024

MediaKind = Literal["image", "audio", "video", "document", "sticker"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who a message goes to: a phone number, or the business-scoped user id (BSUID) of a customer
    whose number Meta withholds (they adopted a username). Meta takes ``to`` over ``recipient`` when
    a send carries both, and prefers phone numbers, so a send carries exactly one: the phone if known."""

    phone: str | None = None
    user_id: str | None = None

    def fields(self) -> dict[str, str]:
        if self.phone:
            return {"to": self.phone}
        if self.user_id:
            return {"recipient": self.user_id}
        raise ValueError("a recipient needs a phone number or a business-scoped user id")


@dataclass(frozen=True, slots=True)
class SendResult:
    wamid: str
    wa_id: str | None  # Meta's answer names the phone for a send to a phone number…
    user_id: str | None = None  # …and the BSUID for a send to a BSUID


@dataclass(frozen=True, slots=True)
class MediaInfo:
    id: str
    url: str
    mime_type: str
    sha256: str | None
    file_size: int | None


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    id: str | None
    name: str
    language: str
    status: str
    category: str | None
    components: tuple[Mapping[str, Any], ...]


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from ``Retry-After`` or Meta's usage headers, if either says so."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(float(value), 0.0) or None
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(when.timestamp() - time.time(), 0.0) or None
    # X-Business-Use-Case-Usage: {"<id>": [{"estimated_time_to_regain_access": <minutes>, …}]}
    usage = headers.get("x-business-use-case-usage")
    if usage:
        try:
            parsed_usage = json.loads(usage)
        except ValueError:
            return None
        minutes = [
            entry.get("estimated_time_to_regain_access")
            for entries in (parsed_usage.values() if isinstance(parsed_usage, dict) else ())
            if isinstance(entries, list)
            for entry in entries
            if isinstance(entry, dict)
        ]
        waits = [float(m) for m in minutes if isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0]
        if waits:
            return max(waits) * 60.0
    return None


class GraphClient:
    def __init__(
        self,
        access_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = DEFAULT_API_VERSION,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        media_timeout: httpx.Timeout | float = DEFAULT_MEDIA_TIMEOUT,
        media_hosts: Sequence[str] = DEFAULT_MEDIA_HOSTS,
    ) -> None:
        if not access_token:
            raise ValueError("an access token is required")
        if client is not None and transport is not None:
            raise ValueError("pass either client or transport, not both")
        self._token = access_token
        self._base_url = base_url.rstrip("/")
        self._api_version = api_version.strip("/")
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._media_timeout = media_timeout if isinstance(media_timeout, httpx.Timeout) else httpx.Timeout(media_timeout)
        base_host = urlsplit(self._base_url).hostname or ""
        self._media_hosts = tuple(h.lower() for h in (*media_hosts, base_host) if h)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(transport=transport)

    def __repr__(self) -> str:
        return f"GraphClient(base_url={self._base_url!r}, api_version={self._api_version!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the choke point -------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self._base_url}/{self._api_version}/{path.lstrip('/')}"

    @contextlib.contextmanager
    def _transport_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            error = network_error(f"{what} timed out ({type(exc).__name__})", secrets=(self._token,))
            # past the connect phase the request may have reached Meta and been acted on
            error.ambiguous = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            raise error from exc
        except httpx.TransportError as exc:
            error = network_error(f"{what} failed: {type(exc).__name__}: {exc}", secrets=(self._token,))
            error.ambiguous = not isinstance(exc, httpx.ConnectError)
            raise error from exc

    async def _request(
        self,
        method: str,
        url: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        timeout: httpx.Timeout | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send one request; a 2xx response or a classified ``MetaApiError``.

        With ``stream=True`` the body is left unread and the caller must ``aclose()`` the response.
        """
        request = self._client.build_request(
            method, url, json=json_body, params=params, data=data, files=files,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=timeout or self._timeout,
        )
        what = f"{method} {request.url.copy_with(query=None)}"
        with self._transport_errors(what):
            # never follow redirects, even on an injected client: they would carry the token elsewhere
            response = await self._client.send(request, stream=stream, follow_redirects=False)
        if response.is_success:
            return response
        try:
            body = await self._read_capped(response, _ERROR_BODY_LIMIT) if stream else response.content
        except MetaApiError:
            body = b""
        finally:
            await response.aclose()
        error = error_from_response(response.status_code, body, retry_after=_retry_after(response.headers),
                                    secrets=(self._token,))
        log.warning("graph api error", extra={"http_status": response.status_code, "code": error.code,
                                              "retryable": error.retryable, "fbtrace_id": error.fbtrace_id})
        raise error

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, self._url(path), **kwargs)
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise UnexpectedResponse(
                f"Meta answered HTTP {response.status_code} to {method} with a body that is not a JSON object",
                http_status=response.status_code,
                raw_body=response.text.replace(self._token, "[redacted]")[:4000],
                reason_en="WhatsApp gave an answer Parlo could not read; the message may or may not have been sent.",
                reason_it="WhatsApp ha dato una risposta illeggibile; il messaggio potrebbe essere stato inviato "
                          "oppure no.",
            )
        return parsed

    async def _read_capped(self, response: httpx.Response, max_bytes: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        with self._transport_errors(f"reading {response.request.url.copy_with(query=None)}"):
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes, response.status_code)
                chunks.append(chunk)
        return b"".join(chunks)

    # --- messages ---------------------------------------------------------------------------

    async def _send(self, phone_number_id: str, to: str | Recipient, type_: str, content: Mapping[str, Any],
                    reply_to: str | None = None, callback_data: str | None = None) -> SendResult:
        """``to`` is a phone number, or a :class:`Recipient` (which may be a BSUID)."""
        address = Recipient(phone=to) if isinstance(to, str) else to
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            **address.fields(),
            "type": type_,
            type_: content,
        }
        if reply_to:
            payload["context"] = {"message_id": reply_to}
        if callback_data:
            # echoed by Meta in this message's status webhooks: how a send whose answer we never
            # saw is recognised later (engine/whatsapp/dispatcher.py)
            payload["biz_opaque_callback_data"] = callback_data[:512]
        answer = await self._json("POST", f"{phone_number_id}/messages", json_body=payload)
        messages = answer.get("messages")
        wamid = messages[0].get("id") if isinstance(messages, list) and messages and isinstance(messages[0], dict) else None
        if not isinstance(wamid, str) or not wamid:
            raise UnexpectedResponse(
                "Meta accepted the send but returned no message id",
                http_status=200,
                raw_body=json.dumps(answer)[:4000],
                reason_en="WhatsApp accepted the message without returning its id; it may have been sent.",
                reason_it="WhatsApp ha accettato il messaggio senza restituirne l'id; potrebbe essere stato inviato.",
            )
        contacts = answer.get("contacts")
        contact = contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else {}
        wa_id, user_id = contact.get("wa_id"), contact.get("user_id")
        return SendResult(wamid=wamid, wa_id=wa_id if isinstance(wa_id, str) else None,
                          user_id=user_id if isinstance(user_id, str) else None)

    async def send_text(self, phone_number_id: str, to: str | Recipient, body: str, *, preview_url: bool = False,
                        reply_to: str | None = None, callback_data: str | None = None) -> SendResult:
        return await self._send(phone_number_id, to, "text", {"preview_url": preview_url, "body": body}, reply_to,
                                callback_data)

    async def send_media(self, phone_number_id: str, to: str | Recipient, kind: MediaKind | str, *, media_id: str | None = None,
                         link: str | None = None, caption: str | None = None, filename: str | None = None,
                         reply_to: str | None = None, callback_data: str | None = None) -> SendResult:
        if kind not in MEDIA_KINDS:
            raise ValueError(f"media kind must be one of {MEDIA_KINDS}, not {kind!r}")
        if (media_id is None) == (link is None):
            raise ValueError("give exactly one of media_id and link")
        if caption is not None and kind not in _CAPTIONED:
            raise ValueError(f"a {kind} cannot have a caption")
        if filename is not None and kind != "document":
            raise ValueError("only a document has a filename")
        content: dict[str, Any] = {"id": media_id} if media_id is not None else {"link": link}
        if caption is not None:
            content["caption"] = caption
        if filename is not None:
            content["filename"] = filename
        return await self._send(phone_number_id, to, kind, content, reply_to, callback_data)

    async def send_template(self, phone_number_id: str, to: str | Recipient, name: str, language: str, *,
                            components: Sequence[Mapping[str, Any]] | None = None,
                            callback_data: str | None = None) -> SendResult:
        content: dict[str, Any] = {"name": name, "language": {"code": language}}
        if components:
            content["components"] = list(components)
        return await self._send(phone_number_id, to, "template", content, callback_data=callback_data)

    async def send_reaction(self, phone_number_id: str, to: str | Recipient, target_wamid: str, emoji: str, *,
                            callback_data: str | None = None) -> SendResult:
        """React to a message; an empty ``emoji`` removes the reaction."""
        return await self._send(phone_number_id, to, "reaction", {"message_id": target_wamid, "emoji": emoji},
                                callback_data=callback_data)

    async def mark_read(self, phone_number_id: str, wamid: str) -> None:
        await self._json("POST", f"{phone_number_id}/messages",
                         json_body={"messaging_product": "whatsapp", "status": "read", "message_id": wamid})

    # --- media -----------------------------------------------------------------------------

    async def upload_media(self, phone_number_id: str, data: bytes, mime_type: str, filename: str) -> str:
        answer = await self._json(
            "POST", f"{phone_number_id}/media",
            data={"messaging_product": "whatsapp", "type": mime_type},
            files={"file": (filename, data, mime_type)},
            timeout=self._media_timeout,
        )
        media_id = answer.get("id")
        if not isinstance(media_id, str) or not media_id:
            raise UnexpectedResponse("Meta accepted the upload but returned no media id", http_status=200,
                                     raw_body=json.dumps(answer)[:4000])
        return media_id

    async def get_media(self, media_id: str) -> MediaInfo:
        answer = await self._json("GET", media_id)
        url, mime_type = answer.get("url"), answer.get("mime_type")
        if not isinstance(url, str) or not isinstance(mime_type, str):
            raise UnexpectedResponse("Meta's media info has no url or mime_type", http_status=200,
                                     raw_body=json.dumps(answer)[:4000])
        size = answer.get("file_size")
        sha256 = answer.get("sha256")
        return MediaInfo(
            id=str(answer.get("id") or media_id),
            url=url,
            mime_type=mime_type,
            sha256=sha256 if isinstance(sha256, str) else None,
            file_size=int(size) if isinstance(size, int) or (isinstance(size, str) and size.isdigit()) else None,
        )

    def _trusted_media_url(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        scheme_ok = parts.scheme == "https" or (parts.scheme == "http" and self._base_url.startswith("http://"))
        return scheme_ok and any(host == h or host.endswith("." + h) for h in self._media_hosts)

    async def download_media(self, url: str, max_bytes: int) -> bytes:
        """The bytes at a media URL from ``get_media``, streamed and refused past ``max_bytes``."""
        if not self._trusted_media_url(url):
            raise ValueError(f"refusing to send the access token to {urlsplit(url).hostname!r}: not a Meta media host")
        response = await self._request("GET", url, timeout=self._media_timeout, stream=True)
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(max_bytes, response.status_code)  # refused before reading a byte
            return await self._read_capped(response, max_bytes)
        finally:
            await response.aclose()

    # --- templates -------------------------------------------------------------------------

    async def list_templates(self, waba_id: str, limit: int = 100) -> AsyncIterator[MessageTemplate]:
        """Every message template of a WhatsApp Business Account, page after page."""
        params: dict[str, str | int] = {"limit": limit}
        seen_cursors: set[str] = set()
        while True:
            page = await self._json("GET", f"{waba_id}/message_templates", params=params)
            data = page.get("data")
            for item in data if isinstance(data, list) else ():
                if isinstance(item, dict):
                    yield _template(item)
            paging = page.get("paging")
            paging = paging if isinstance(paging, dict) else {}
            cursors = paging.get("cursors")
            after = cursors.get("after") if isinstance(cursors, dict) else None
            # Meta sets "next" only when there is another page; the cursor lets us rebuild the URL
            # ourselves rather than follow a link that might point anywhere
            if not paging.get("next") or not isinstance(after, str) or not after or after in seen_cursors:
                return
            seen_cursors.add(after)
            params = {"limit": limit, "after": after}


def _too_large(max_bytes: int, http_status: int) -> MediaTooLarge:
    limit = f"{max_bytes / 1_000_000:g} MB" if max_bytes >= 1_000_000 else f"{max_bytes} bytes"
    return MediaTooLarge(
        f"the download is larger than the {max_bytes}-byte limit",
        http_status=http_status,
        reason_en=f"The file is larger than the {limit} Parlo accepts.",
        reason_it=f"Il file supera il limite di {limit.replace('bytes', 'byte')} accettato da Parlo.",
    )


def _template(item: Mapping[str, Any]) -> MessageTemplate:
    components = item.get("components")
    return MessageTemplate(
        id=str(item["id"]) if item.get("id") is not None else None,
        name=str(item.get("name", "")),
        language=str(item.get("language", "")),
        status=str(item.get("status", "")),
        category=str(item["category"]) if item.get("category") is not None else None,
        components=tuple(c for c in components if isinstance(c, Mapping)) if isinstance(components, list) else (),
    )
