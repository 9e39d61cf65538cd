"""The Graph API wire: aiohttp handlers for messages, media and templates.

Every Graph route goes through one middleware that applies latency and outages and turns a
:class:`GraphError` into Meta's error body; handlers only decide.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bench.simulator import errors
from bench.simulator.errors import GraphError
from bench.simulator.faults import Delivery, FaultPlan, OutageMode
from bench.simulator.state import Attempt, Phone, SendRecord, SimState, new_wamid, wa_id_of
from bench.simulator.validation import is_mark_as_read, validate_read, validate_send
from bench.simulator.webhooks import WebhookEmitter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VERSION = r"{version:v\d+\.\d+}"
ATTACHMENTS_PATH = "/whatsapp_business/attachments/"
MAX_UPLOAD = 110 * 1024 * 1024  # Meta's largest media (documents) is 100 MB


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        charset="UTF-8",
        headers=headers,
    )


def error_response(error: GraphError) -> web.Response:
    headers = {"x-fb-trace-id": errors.fbtrace_id(), **error.extra_headers}
    return json_response(error.body(), error.status, headers)


class GraphServer:
    def __init__(
        self,
        state: SimState,
        faults: FaultPlan,
        emitter: WebhookEmitter,
        *,
        strict_templates: bool = False,
        media_url_ttl_s: float = 300.0,
    ) -> None:
        self.state = state
        self.faults = faults
        self.emitter = emitter
        self.strict_templates = strict_templates
        self.media_url_ttl_s = media_url_ttl_s
        self._url_key = secrets.token_bytes(16)
        self._closing: asyncio.Event | None = None

    # -- app ----------------------------------------------------------------------------------------

    def build(self, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
        app = web.Application(middlewares=[self._graph_middleware], client_max_size=MAX_UPLOAD)
        app.add_routes(
            [
                web.post(f"/{VERSION}/{{phone_number_id}}/messages", self.send_message),
                web.post(f"/{VERSION}/{{phone_number_id}}/media", self.upload_media),
                web.get(f"/{VERSION}/{{waba_id}}/message_templates", self.list_templates),
                web.get(f"/{VERSION}/{{media_id}}", self.get_media),
                web.delete(f"/{VERSION}/{{media_id}}", self.delete_media),
                web.get(ATTACHMENTS_PATH, self.download_media),
            ]
        )
        if extra_routes:
            app.add_routes(extra_routes)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._closing = asyncio.Event()
        await self.emitter.open()

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._closing is not None:
            self._closing.set()  # releases hanging and slow requests at once

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.emitter.close()

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0 or self._closing is None:
            return
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            pass

    @web.middleware
    async def _graph_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        await self._pause(self.faults.latency())
        outage = self.faults.take_outage(time.monotonic())
        try:
            if outage is None:
                return await handler(request)
            if outage.mode is OutageMode.ACCEPT_THEN_HANG:
                response = await handler(request)
                await self._pause(outage.hang_s)
                return response
            error = errors.internal_error() if outage.mode is OutageMode.ERROR else errors.service_unavailable()
            await self._record_outage(request, error, outage.mode)
            if outage.mode is OutageMode.HANG:
                await self._pause(outage.hang_s)  # the client has usually given up by now
            raise error
        except GraphError as exc:
            return error_response(exc)
        except web.HTTPNotFound:
            return error_response(errors.unknown_path(request.path))
        except web.HTTPMethodNotAllowed:
            return error_response(errors.no_such_object(request.path.rsplit("/", 1)[-1], request.method))

    async def _record_outage(self, request: web.Request, error: GraphError, mode: OutageMode) -> None:
        if request.method != "POST" or not request.path.endswith("/messages"):
            return
        payload = await self._json_or_none(request)
        self._attempt(request.match_info.get("phone_number_id", ""), payload, error, f"outage:{mode.value}")

    # -- auth -------------------------------------------------------------------------------------

    @staticmethod
    def _token(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return request.query.get("access_token") or None

    def _authenticate(self, request: web.Request) -> str:
        token = self._token(request)
        if token is None or not self.state.token_known(token):
            raise errors.invalid_token()
        return token

    def _phone_for(self, request: web.Request, token: str) -> Phone:
        phone_number_id = request.match_info["phone_number_id"]
        phone = self.state.phone(phone_number_id)
        if phone is None or not secrets.compare_digest(phone.token, token):
            raise errors.no_such_object(phone_number_id, request.method)
        return phone

    # -- messages ---------------------------------------------------------------------------------

    @staticmethod
    async def _json_or_none(request: web.Request) -> dict[str, Any] | None:
        try:
            value = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError, ConnectionError):
            return None
        return value if isinstance(value, dict) else None

    def _attempt(self, phone_number_id: str, payload: dict[str, Any] | None, error: GraphError, fault: str) -> None:
        to = payload.get("to") if payload else None
        recipient = payload.get("recipient") if payload else None
        kind = payload.get("type", "text") if payload else None
        self.state.record_attempt(
            Attempt(
                phone_number_id=phone_number_id,
                to=to if isinstance(to, str) else None,
                type=kind if isinstance(kind, str) else None,
                payload=payload,
                at=time.monotonic(),
                http_status=error.status,
                error_code=error.code,
                fault=fault,
                recipient=recipient if isinstance(recipient, str) else None,
            )
        )

    async def send_message(self, request: web.Request) -> web.Response:
        phone_number_id = request.match_info["phone_number_id"]
        payload = await self._json_or_none(request)
        try:
            phone = self._phone_for(request, self._authenticate(request))
        except GraphError as exc:
            self._attempt(phone_number_id, payload, exc, "auth")
            raise
        if payload is None:
            error = errors.invalid_parameter("The request body must be a JSON object.")
            self._attempt(phone_number_id, None, error, "validation")
            raise error
        if is_mark_as_read(payload):
            self.state.record_read(phone_number_id, validate_read(payload))
            return json_response({"success": True})
        try:
            address, kind = validate_send(payload)
            if kind == "template":
                self._check_template(phone, payload["template"])
        except GraphError as exc:
            self._attempt(phone_number_id, payload, exc, "validation")
            raise
        now = time.monotonic()
        limited = self.faults.admit(phone_number_id, address.key, now)
        if limited is not None:
            self._attempt(phone_number_id, payload, limited, "rate_limit" if limited.code == 130429 else "pair_rate_limit")
            raise limited
        failure = self.faults.take_recipient_failure(address.key)
        if failure is not None and failure.via is Delivery.RESPONSE:
            error = GraphError(failure.code, details=failure.details)
            self._attempt(phone_number_id, payload, error, "recipient")
            raise error

        wamid = new_wamid(address.key)
        wa_id = wa_id_of(address.to) if address.to is not None else None
        send = SendRecord(phone_number_id, address.to, wa_id, kind, payload, wamid, now, address.recipient)
        self.state.record_send(send)
        self.state.record_attempt(Attempt(phone_number_id, address.to, kind, payload, now, 200, None, wamid, None,
                                          address.recipient))
        if failure is not None:
            self.emitter.on_failed_async(send, failure.code, failure.details, phone.waba_id, phone.display_phone_number)
        else:
            self.emitter.on_accepted(send, phone.waba_id, phone.display_phone_number)
        message: dict[str, Any] = {"id": wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        # Meta names the recipient the way it was addressed: wa_id for a phone, user_id for a BSUID.
        contact = {"input": address.to, "wa_id": wa_id} if address.to is not None else {
            "input": address.recipient, "user_id": address.recipient}
        return json_response({"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]})

    def _check_template(self, phone: Phone, template: dict[str, Any]) -> None:
        if not self.strict_templates:
            return
        name, language = template["name"], template["language"]["code"]
        for known in self.state.templates_of(phone.waba_id):
            if known.name == name and known.language == language:
                if known.status == "PAUSED":
                    raise GraphError(132015)
                if known.status == "DISABLED":
                    raise GraphError(132016)
                if known.status == "APPROVED":
                    return
        raise GraphError(132001, details=f"template name ({name}) does not exist in {language}")

    # -- media ------------------------------------------------------------------------------------

    async def upload_media(self, request: web.Request) -> web.Response:
        self._phone_for(request, self._authenticate(request))
        if not request.content_type.startswith("multipart/"):
            raise errors.missing_parameter("file")
        form = await request.post()
        if form.get("messaging_product") != "whatsapp":
            raise errors.missing_parameter("messaging_product")
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            raise errors.missing_parameter("file")
        mime = form.get("type")
        if not isinstance(mime, str) or not mime:
            raise errors.missing_parameter("type")
        data = upload.file.read()
        media = self.state.add_media(data, mime, phone_number_id=request.match_info["phone_number_id"], filename=upload.filename)
        return json_response({"id": media.id})

    def _media_or_404(self, request: web.Request) -> tuple[str, Any]:
        media_id = request.match_info["media_id"]
        media = self.state.get_media(media_id)
        if media is None:
            raise errors.no_such_object(media_id, request.method)
        wanted = request.query.get("phone_number_id")
        if wanted is not None and media.phone_number_id not in (None, wanted):
            raise errors.no_such_object(media_id, request.method)
        return media_id, media

    def _url_hash(self, media_id: str, expires: int) -> str:
        return hmac.new(self._url_key, f"{media_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    async def get_media(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        media_id, media = self._media_or_404(request)
        expires = int(time.time() + self.media_url_ttl_s)
        url = request.url.origin().with_path(ATTACHMENTS_PATH).with_query(
            {"mid": media_id, "ext": str(expires), "hash": self._url_hash(media_id, expires)}
        )
        return json_response(
            {
                "messaging_product": "whatsapp",
                "url": str(url),
                "mime_type": media.mime_type,
                "sha256": media.sha256,
                "file_size": len(media.data),
                "id": media_id,
            }
        )

    async def delete_media(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        media_id, _ = self._media_or_404(request)
        self.state.delete_media(media_id)
        return json_response({"success": True})

    async def download_media(self, request: web.Request) -> web.Response:
        token = self._token(request) if "Authorization" in request.headers else None
        if token is None or not self.state.token_known(token):
            return web.Response(status=401, text="Unauthorized")
        media_id, expires, digest = (request.query.get(k, "") for k in ("mid", "ext", "hash"))
        valid = expires.isdigit() and hmac.compare_digest(digest, self._url_hash(media_id, int(expires)))
        media = self.state.get_media(media_id)
        if not valid or media is None or int(expires) < time.time():
            return web.Response(status=404, text="URL signature expired" if valid else "Not Found")
        return web.Response(body=media.data, content_type=media.mime_type.split(";")[0])

    # -- templates --------------------------------------------------------------------------------

    async def list_templates(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        waba_id = request.match_info["waba_id"]
        if not self.state.waba_known(waba_id):
            raise errors.no_such_object(waba_id, request.method)
        query = request.query
        items = [t.as_graph() for t in self.state.templates_of(waba_id)]
        if "name" in query:
            items = [t for t in items if query["name"].lower() in t["name"].lower()]
        for key in ("status", "category", "language"):
            if key in query:
                items = [t for t in items if t[key] == query[key]]
        try:
            limit = int(query.get("limit", "25"))
        except ValueError:
            raise errors.invalid_parameter("Param limit must be an integer.") from None
        if limit <= 0:
            raise errors.invalid_parameter("Param limit must be a positive integer.")
        start, end = 0, len(items)
        if "after" in query:
            start = _decode_cursor(query["after"]) + 1
        elif "before" in query:
            end = _decode_cursor(query["before"])
            start = max(0, end - limit)
        page = items[start : min(end, start + limit)]
        if "fields" in query:
            fields = {f.strip() for f in query["fields"].split(",")} | {"id"}
            page = [{k: v for k, v in t.items() if k in fields} for t in page]
        body: dict[str, Any] = {"data": page}
        if page:
            stop = start + len(page)
            paging: dict[str, Any] = {"cursors": {"before": _encode_cursor(start), "after": _encode_cursor(stop - 1)}}
            base = request.url.with_query({k: v for k, v in query.items() if k not in ("after", "before")})
            if stop < len(items):
                paging["next"] = str(base.update_query({"limit": str(limit), "after": _encode_cursor(stop - 1)}))
            if start > 0:
                paging["previous"] = str(base.update_query({"limit": str(limit), "before": _encode_cursor(start)}))
            body["paging"] = paging
        return json_response(body)


def _encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"idx:{index}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw.startswith("idx:"):
            return int(raw[4:])
    except (ValueError, UnicodeDecodeError):
        pass
    raise errors.invalid_parameter(f"Invalid cursor: {cursor}")

