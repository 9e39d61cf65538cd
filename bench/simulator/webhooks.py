"""Posting webhooks the way Meta does: the exact body bytes, signed with the app secret.

Meta serialises with escaped slashes (``https:\\/\\/``) and non-ASCII as ``\\uXXXX``; a receiver that
re-serialises the parsed JSON before checking ``X-Hub-Signature-256`` breaks on exactly these
bytes, so :func:`encode` reproduces them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench.simulator import payloads
from bench.simulator.state import SendRecord, SimState, WebhookDelivery

SIGNATURE_HEADER = "X-Hub-Signature-256"


def sign(body: bytes, app_secret: str) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, the value of ``X-Hub-Signature-256``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


def signed_request(payload: dict[str, Any], app_secret: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of Meta's POST, for tests that send through their own client."""
    body = encode(payload)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, app_secret),
        "User-Agent": "facebookexternalua",
    }
    return body, headers


async def post_webhook(
    url: str,
    payload: dict[str, Any],
    app_secret: str,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    body, headers = signed_request(payload, app_secret)
    if client is not None:
        return await client.post(url, content=body, headers=headers, timeout=timeout)
    async with httpx.AsyncClient() as own:
        return await own.post(url, content=body, headers=headers, timeout=timeout)


def post_webhook_sync(url: str, payload: dict[str, Any], app_secret: str, *, timeout: float = 10.0) -> httpx.Response:
    body, headers = signed_request(payload, app_secret)
    with httpx.Client() as client:
        return client.post(url, content=body, headers=headers, timeout=timeout)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    app_secret: str


@dataclass(frozen=True, slots=True)
class AutoStatuses:
    """Emit statuses for every accepted outbound send.

    ``shuffle`` posts them in random order; ``duplicate`` is the probability that each one is
    posted a second time (Meta redelivers); ``delay_s`` spaces the posts of one message.
    ``states`` may end at "delivered" (a recipient without read receipts).
    """

    states: tuple[str, ...] = ("sent", "delivered", "read")
    delay_s: float = 0.0
    shuffle: bool = False
    duplicate: float = 0.0
    category: str = "service"


def _user_id(send: SendRecord) -> str | None:
    # A send by BSUID is reported by recipient_user_id, without recipient_id. Meta adds the BSUID to
    # statuses of sends by phone as well, but the simulator knows no phone's BSUID.
    return send.recipient if send.addressed_by == "recipient" else None


class WebhookEmitter:
    """Posts webhooks from the simulator's own event loop and records each delivery."""

    def __init__(self, state: SimState, *, seed: int | None = None) -> None:
        self._state = state
        self._random = random.Random(seed)
        self.target: WebhookTarget | None = None
        self.auto: AutoStatuses | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._client = httpx.AsyncClient(timeout=10.0)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def idle(self, timeout: float) -> bool:
        """Wait until every scheduled post is done; False if some are still pending after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(list(self._tasks), timeout=remaining)
        return True

    def schedule(self, payloads_: Sequence[dict[str, Any]], *, delay_s: float = 0.0) -> None:
        if self.target is None:
            return
        task = asyncio.get_running_loop().create_task(self._post_all(self.target, list(payloads_), delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post(self, payload: dict[str, Any], target: WebhookTarget | None = None) -> WebhookDelivery:
        target = target or self.target
        if target is None:
            raise RuntimeError("no webhook target: call set_webhook(url, app_secret) first")
        assert self._client is not None
        body, headers = signed_request(payload, target.app_secret)
        try:
            response = await self._client.post(target.url, content=body, headers=headers)
            delivery = WebhookDelivery(target.url, payload, response.status_code, None, time.monotonic())
        except httpx.HTTPError as exc:
            delivery = WebhookDelivery(target.url, payload, None, f"{type(exc).__name__}: {exc}", time.monotonic())
        self._state.record_delivery(delivery)
        return delivery

    async def _post_all(self, target: WebhookTarget, items: list[dict[str, Any]], delay_s: float) -> None:
        for i, payload in enumerate(items):
            if i and delay_s:
                await asyncio.sleep(delay_s)
            await self.post(payload, target)

    # -- what the server calls after answering a send ------------------------------------------------

    def on_accepted(self, send: SendRecord, waba_id: str, display_phone_number: str) -> None:
        auto = self.auto
        if auto is None or self.target is None:
            return
        statuses = payloads.status_sequence(
            send.wamid,
            send.wa_id,
            states=auto.states,
            category=auto.category,
            biz_opaque_callback_data=send.callback_data,
            recipient_user_id=_user_id(send),
        )
        bodies = [
            payloads.status_webhook(s, waba_id=waba_id, phone_number_id=send.phone_number_id, display_phone_number=display_phone_number)
            for s in statuses
        ]
        bodies += [b for b in bodies if auto.duplicate and self._random.random() < auto.duplicate]
        if auto.shuffle:
            self._random.shuffle(bodies)
        self.schedule(bodies, delay_s=auto.delay_s)

    def on_failed_async(self, send: SendRecord, code: int, details: str | None, waba_id: str, display_phone_number: str) -> None:
        """A send Meta accepted and then reports as failed (e.g. 131047, 131026 arrive this way)."""
        item = payloads.status(send.wamid, "failed", send.wa_id, error_code=code, error_details=details,
                               biz_opaque_callback_data=send.callback_data, recipient_user_id=_user_id(send))
        self.schedule(
            [payloads.status_webhook(item, waba_id=waba_id, phone_number_id=send.phone_number_id, display_phone_number=display_phone_number)]
        )
