"""The plumbing every API handler shares: recording, latency, injected faults, keys, SSE writing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bench.ai_simulator.state import AIState, Api, Fault, RecordedRequest, StreamRecord

ErrorBody = Callable[[int, str | None], tuple[dict[str, Any], dict[str, str]]]


class Rejected(Exception):
    """Raised by a handler to answer with an error in its API's own format."""

    def __init__(self, status: int, message: str, *, kind: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.retry_after = retry_after


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    return value[7:].strip() or None if value.lower().startswith("bearer ") else None


def check_key(state: AIState, api: Api, presented: str | None) -> None:
    with state.lock:
        expected = state.api_keys[api]
    if not presented:
        raise Rejected(401, "missing API key", kind="authentication_error")
    if expected is not None and presented != expected:
        raise Rejected(401, "invalid API key", kind="authentication_error")


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Rejected(400, "request body is not valid JSON", kind="invalid_request_error") from None
    if not isinstance(body, dict):
        raise Rejected(400, "request body must be a JSON object", kind="invalid_request_error")
    return body


def handler(state: AIState, api: Api, render_error: Callable[[Rejected], web.Response],
            inner: Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap an API handler: parse and record the request, sleep the injected latency, answer an
    injected fault, and render ``Rejected`` in the API's error format."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body: Any = await read_json(request)
        except Rejected as exc:
            body = None
            recorded = _record(state, api, request, body)
            state.answered(recorded, exc.status)
            return render_error(exc)
        recorded = _record(state, api, request, body)
        with state.lock:
            latency, generation = state.latency_s, state.generation
        if latency > 0:
            await asyncio.sleep(latency)
        transport = request.transport
        if transport is None or transport.is_closing() or state.generation != generation:
            # The client gave up while we dawdled, or a test reset the script: take no scripted reply.
            state.answered(recorded, 499)
            return web.Response(status=499)
        fault: Fault | None = state.take_fault(api)
        try:
            if fault is not None:
                raise Rejected(fault.status, fault.message or _DEFAULT_FAULT_MESSAGES.get(fault.status, "injected fault"),
                               retry_after=fault.retry_after)
            response = await inner(request, body)
        except Rejected as exc:
            state.answered(recorded, exc.status)
            return render_error(exc)
        state.answered(recorded, response.status)
        return response

    return handle


_RECORDED_HEADERS = ("anthropic-version", "content-type", "x-stainless-retry-count")


def _record(state: AIState, api: Api, request: web.Request, body: Any) -> RecordedRequest:
    headers = {name: request.headers[name] for name in _RECORDED_HEADERS if name in request.headers}
    return state.record(RecordedRequest(api, request.path, body, headers))


_DEFAULT_FAULT_MESSAGES = {
    429: "rate limit exceeded",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    529: "Overloaded",
}


class EventStream:
    """An SSE response that notices a client that went away and says so in its ``StreamRecord``."""

    def __init__(self, request: web.Request, response: web.StreamResponse, record: StreamRecord, delay_s: float) -> None:
        self.request = request
        self.response = response
        self.record = record
        self.delay_s = delay_s

    @classmethod
    async def open(cls, request: web.Request, record: StreamRecord, delay_s: float, headers: dict[str, str] | None = None) -> EventStream:
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            **(headers or {}),
        })
        await response.prepare(request)
        return cls(request, response, record, delay_s)

    def _check_open(self) -> None:
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client closed the stream")

    async def send(self, data: str, event: str | None = None) -> None:
        self._check_open()
        frame = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
        await self.response.write(frame.encode())

    async def delta_pause(self) -> None:
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        self._check_open()

    async def stall(self, seconds: float, ping: Callable[[], Awaitable[None]] | None, every_s: float = 0.25) -> None:
        """Stay open and silent but for keep-alive pings (what a busy model looks like)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(every_s, left))
            self._check_open()
            if ping is not None:
                await ping()

    async def run(self, produce: Callable[[EventStream], Awaitable[None]]) -> web.StreamResponse:
        try:
            await produce(self)
            await self.response.write_eof()
            self.record.finished = True
        except (ConnectionResetError, ConnectionError):
            self.record.closed_by_client = True
        except asyncio.CancelledError:
            self.record.closed_by_client = True
            raise
        return self.response
