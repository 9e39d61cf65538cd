"""``Simulator``: the WhatsApp Cloud API test double, run on its own thread and event loop.

    with Simulator() as sim:
        sim.register_phone("1061", token="T", waba_id="2001")
        client = httpx.Client(base_url=sim.graph_url)   # http://127.0.0.1:PORT/v21.0
        ...
        assert sim.count_by_recipient()["393331234567"] == 1

The server runs on a thread of its own so a test's event loop (or a blocking benchmark) can
drive it without sharing a loop; state is guarded by locks and read back as copies.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from bench.http_double import ThreadedHTTPServer
from bench.simulator.faults import Delivery, FaultPlan, OutageMode
from bench.simulator.server import GraphServer
from bench.simulator.state import Attempt, Phone, SendRecord, SimState, Template, WebhookDelivery, new_numeric_id, recipient_key
from bench.simulator.webhooks import AutoStatuses, WebhookEmitter, WebhookTarget

DEFAULT_API_VERSION = "v21.0"


class Simulator(ThreadedHTTPServer):
    thread_name = "whatsapp-sim"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_version: str = DEFAULT_API_VERSION,
        strict_templates: bool = False,
        media_url_ttl_s: float = 300.0,
        seed: int | None = None,
        admin_api: bool = True,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_version = api_version
        self.state = SimState()
        self.faults = FaultPlan(seed=seed)
        self.emitter = WebhookEmitter(self.state, seed=seed)
        self.server = GraphServer(self.state, self.faults, self.emitter, strict_templates=strict_templates, media_url_ttl_s=media_url_ttl_s)
        self._admin_api = admin_api

    # -- lifecycle --------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        extra = None
        if self._admin_api:
            from bench.simulator.admin import admin_routes

            extra = admin_routes(self)
        return self.server.build(extra)

    @property
    def base_url(self) -> str:
        """``http://host:port``: what the engine's Graph API base URL setting points to."""
        return f"http://{self.host}:{self.port}"

    @property
    def graph_url(self) -> str:
        """``base_url`` plus the API version, e.g. ``http://127.0.0.1:40123/v21.0``."""
        return f"{self.base_url}/{self.api_version}"

    # -- registry ---------------------------------------------------------------------------------

    def register_phone(self, phone_number_id: str, token: str, waba_id: str, *, display_phone_number: str | None = None) -> Phone:
        phone = Phone(phone_number_id, token, waba_id, display_phone_number or f"1555{phone_number_id[-7:]:0>7}")
        self.state.register_phone(phone)
        return phone

    def add_template(
        self,
        waba_id: str,
        name: str,
        language: str = "en_US",
        *,
        status: str = "APPROVED",
        category: str = "UTILITY",
        components: Sequence[dict[str, Any]] | None = None,
        template_id: str | None = None,
    ) -> Template:
        template = Template(
            id=template_id or new_numeric_id(),
            waba_id=waba_id,
            name=name,
            language=language,
            status=status,
            category=category,
            components=list(components) if components is not None else [{"type": "BODY", "text": f"{name} {{{{1}}}}"}],
        )
        self.state.add_template(template)
        return template

    def add_media(self, data: bytes, mime_type: str, *, filename: str | None = None, phone_number_id: str | None = None) -> str:
        """Pre-load media (e.g. what a customer sent) and return its media id."""
        return self.state.add_media(data, mime_type, phone_number_id=phone_number_id, filename=filename).id

    # -- faults -----------------------------------------------------------------------------------

    def inject_outage(
        self,
        *,
        seconds: float | None = None,
        requests: int | None = None,
        mode: OutageMode | str = OutageMode.UNAVAILABLE,
        hang_s: float = 30.0,
    ) -> None:
        """Every Graph request fails for the next ``seconds`` and/or ``requests``, then service recovers."""
        self.faults.inject_outage(seconds=seconds, requests=requests, mode=mode, hang_s=hang_s)

    def clear_outage(self) -> None:
        self.faults.clear_outage()

    def set_rate_limit(self, per_second: int | None = None, *, per_recipient: int | None = None, recipient_window_s: float = 6.0) -> None:
        """130429 past ``per_second`` accepted sends per phone number; 131056 past ``per_recipient`` per window."""
        self.faults.set_rate_limit(per_second, per_recipient=per_recipient, recipient_window_s=recipient_window_s)

    def fail_recipient(
        self,
        to: str,
        code: int = 131047,
        *,
        times: int | None = None,
        via: Delivery | str = Delivery.RESPONSE,
        details: str | None = None,
    ) -> None:
        """Sends to ``to`` (a phone number or a BSUID) fail with ``code`` (forever, or the next ``times``),
        in the response or as a failed status."""
        self.faults.fail_recipient(to, code, times=times, via=via, details=details)

    def heal_recipient(self, to: str) -> None:
        self.faults.heal_recipient(to)

    def set_latency(self, seconds: float = 0.0, *, max_seconds: float | None = None) -> None:
        self.faults.set_latency(seconds, max_seconds=max_seconds)

    # -- webhooks ---------------------------------------------------------------------------------

    def set_webhook(self, url: str, app_secret: str) -> None:
        self.emitter.target = WebhookTarget(url, app_secret)

    def auto_statuses(
        self,
        enabled: bool = True,
        *,
        states: Sequence[str] = ("sent", "delivered", "read"),
        delay_s: float = 0.0,
        shuffle: bool = False,
        duplicate: float = 0.0,
        category: str = "service",
    ) -> None:
        """Post status callbacks for every accepted send to the ``set_webhook`` target."""
        self.emitter.auto = AutoStatuses(tuple(states), delay_s, shuffle, duplicate, category) if enabled else None

    def post_webhook(self, payload: dict[str, Any], timeout: float = 15.0) -> WebhookDelivery:
        """Sign and POST ``payload`` to the webhook target from the simulator's loop (blocking)."""
        return self._call(self.emitter.post(payload), timeout=timeout)

    async def apost_webhook(self, payload: dict[str, Any]) -> WebhookDelivery:
        """``post_webhook`` for async tests whose receiver runs on the test's own loop."""
        return await self._acall(self.emitter.post(payload))

    def wait_for_webhooks(self, timeout: float = 5.0) -> bool:
        return self._call(self.emitter.idle(timeout), timeout=timeout + 5.0)

    async def await_webhooks(self, timeout: float = 5.0) -> bool:
        return await self._acall(self.emitter.idle(timeout))

    # -- records ----------------------------------------------------------------------------------

    @property
    def sent(self) -> list[SendRecord]:
        """Accepted sends, in acceptance order."""
        return self.state.sends_matching()

    @property
    def attempts(self) -> list[Attempt]:
        """Every POST to /messages except mark-as-read, accepted or not."""
        with self.state.lock:
            return list(self.state.attempts)

    @property
    def failed_attempts(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.accepted]

    @property
    def read_marks(self) -> list[tuple[str, str]]:
        with self.state.lock:
            return list(self.state.read_marks)

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        with self.state.lock:
            return list(self.state.deliveries)

    def sends_to(self, to: str) -> list[SendRecord]:
        """Accepted sends to a phone number (any formatting) or to a business-scoped user id."""
        key = recipient_key(to)
        return self.state.sends_matching(lambda s: s.recipient_key == key)

    def sends_where(self, predicate: Callable[[SendRecord], bool]) -> list[SendRecord]:
        return self.state.sends_matching(predicate)

    def count_by_recipient(self) -> Counter[str]:
        """Accepted sends per recipient: the phone's digits, or the BSUID of a send by BSUID."""
        return self.state.count_by_recipient()

    def accept_rate(self, phone_number_id: str | None = None) -> float:
        """Accepted sends per second between the first and the last accept (0.0 below two sends)."""
        times = [s.accepted_at for s in self.sent if phone_number_id is None or s.phone_number_id == phone_number_id]
        if len(times) < 2 or times[-1] == times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def reset(self, *, registry: bool = False) -> None:
        """Forget records, faults and webhook settings; with ``registry=True`` also phones, templates and media."""
        self.faults.reset()
        self.emitter.auto = None
        self.emitter.target = None
        if registry:
            self.state.clear_all()
        else:
            self.state.clear_records()

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
        """Poll ``condition`` (e.g. ``lambda: len(sim.sent) == 3``) until true or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True
