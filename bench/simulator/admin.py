"""``/_sim/…``: the Python controls over HTTP, for the simulator run as a process (``python -m bench.simulator``).

    POST /_sim/phones          {"phone_number_id", "token", "waba_id", "display_phone_number"?}
    POST /_sim/templates       {"waba_id", "name", "language"?, "status"?, "category"?, "components"?}
    POST /_sim/media           raw bytes, Content-Type = the media's mime type → {"id"}
    POST /_sim/outage          {"seconds"?, "requests"?, "mode"?, "hang_s"?}   DELETE clears it
    POST /_sim/rate_limit      {"per_second"?, "per_recipient"?, "recipient_window_s"?}
    POST /_sim/fail_recipient  {"to", "code"?, "times"?, "via"?, "details"?}   DELETE ?to= heals
    POST /_sim/latency         {"seconds", "max_seconds"?}
    POST /_sim/webhook         {"url", "app_secret", "auto_statuses"?: {states, delay_s, shuffle, duplicate, category} | false}
    POST /_sim/deliver         a webhook payload: signed and posted to the target → {"status", "error"}
    POST /_sim/reset           {"registry"?: bool}
    GET  /_sim/sent?to=        accepted sends
    GET  /_sim/attempts        every attempt, accepted or not
    GET  /_sim/stats           counts per recipient, accept rate, failures by code
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bench.simulator.server import json_response
from bench.simulator.state import recipient_key

if TYPE_CHECKING:
    from bench.simulator.simulator import Simulator


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        value = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(value, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return value


def _need(body: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in body]
    if missing:
        raise web.HTTPBadRequest(text=f"missing: {', '.join(missing)}")


def admin_routes(sim: Simulator) -> list[web.RouteDef]:
    async def phones(request: web.Request) -> web.Response:
        body = await _body(request)
        _need(body, "phone_number_id", "token", "waba_id")
        phone = sim.register_phone(
            str(body["phone_number_id"]), str(body["token"]), str(body["waba_id"]), display_phone_number=body.get("display_phone_number")
        )
        return json_response({"phone_number_id": phone.phone_number_id, "display_phone_number": phone.display_phone_number})

    async def templates(request: web.Request) -> web.Response:
        body = await _body(request)
        _need(body, "waba_id", "name")
        template = sim.add_template(
            str(body["waba_id"]),
            str(body["name"]),
            str(body.get("language", "en_US")),
            status=str(body.get("status", "APPROVED")),
            category=str(body.get("category", "UTILITY")),
            components=body.get("components"),
            template_id=body.get("id"),
        )
        return json_response(template.as_graph())

    async def media(request: web.Request) -> web.Response:
        data = await request.read()
        media_id = sim.add_media(data, request.headers.get("Content-Type", "application/octet-stream"), filename=request.query.get("filename"))
        return json_response({"id": media_id})

    async def outage(request: web.Request) -> web.Response:
        if request.method == "DELETE":
            sim.clear_outage()
        else:
            body = await _body(request)
            try:
                sim.inject_outage(
                    seconds=body.get("seconds"), requests=body.get("requests"), mode=body.get("mode", "unavailable"), hang_s=float(body.get("hang_s", 30.0))
                )
            except ValueError as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
        return json_response({"ok": True})

    async def rate_limit(request: web.Request) -> web.Response:
        body = await _body(request)
        sim.set_rate_limit(body.get("per_second"), per_recipient=body.get("per_recipient"), recipient_window_s=float(body.get("recipient_window_s", 6.0)))
        return json_response({"ok": True})

    async def fail_recipient(request: web.Request) -> web.Response:
        if request.method == "DELETE":
            sim.heal_recipient(request.query.get("to", ""))
            return json_response({"ok": True})
        body = await _body(request)
        _need(body, "to")
        try:
            sim.fail_recipient(str(body["to"]), int(body.get("code", 131047)), times=body.get("times"), via=body.get("via", "response"), details=body.get("details"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return json_response({"ok": True})

    async def latency(request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            sim.set_latency(float(body.get("seconds", 0.0)), max_seconds=body.get("max_seconds"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return json_response({"ok": True})

    async def webhook(request: web.Request) -> web.Response:
        body = await _body(request)
        _need(body, "url", "app_secret")
        sim.set_webhook(str(body["url"]), str(body["app_secret"]))
        auto = body.get("auto_statuses", False)
        if isinstance(auto, dict):
            sim.auto_statuses(True, **auto)
        else:
            sim.auto_statuses(bool(auto))
        return json_response({"ok": True})

    async def deliver(request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            delivery = await sim.emitter.post(body)
        except RuntimeError as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        return json_response({"status": delivery.status, "error": delivery.error})

    async def reset(request: web.Request) -> web.Response:
        body = await _body(request)
        sim.reset(registry=bool(body.get("registry", False)))
        return json_response({"ok": True})

    async def sent(request: web.Request) -> web.Response:
        records = sim.sends_to(request.query["to"]) if "to" in request.query else sim.sent
        return json_response({"data": [dataclasses.asdict(r) for r in records]})

    async def attempts(request: web.Request) -> web.Response:
        return json_response({"data": [dataclasses.asdict(a) for a in sim.attempts]})

    async def stats(request: web.Request) -> web.Response:
        tried = sim.attempts
        return json_response(
            {
                "accepted": len(sim.sent),
                "attempts": len(tried),
                "accept_rate_per_s": sim.accept_rate(),
                "by_recipient": dict(sim.count_by_recipient()),
                "failures_by_code": {str(k): v for k, v in Counter(a.error_code for a in tried if not a.accepted).items()},
                "attempts_by_recipient": dict(Counter(recipient_key(a.to or a.recipient or "") for a in tried
                                                      if a.to or a.recipient)),
                "webhook_deliveries": len(sim.webhook_deliveries),
            }
        )

    return [
        web.post("/_sim/phones", phones),
        web.post("/_sim/templates", templates),
        web.post("/_sim/media", media),
        web.post("/_sim/outage", outage),
        web.delete("/_sim/outage", outage),
        web.post("/_sim/rate_limit", rate_limit),
        web.post("/_sim/fail_recipient", fail_recipient),
        web.delete("/_sim/fail_recipient", fail_recipient),
        web.post("/_sim/latency", latency),
        web.post("/_sim/webhook", webhook),
        web.post("/_sim/deliver", deliver),
        web.post("/_sim/reset", reset),
        web.get("/_sim/sent", sent),
        web.get("/_sim/attempts", attempts),
        web.get("/_sim/stats", stats),
    ]
