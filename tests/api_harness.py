"""The real Serve app (Gateway, shards, dispatcher) on a free port, with the Cloud API simulator as
Meta, for tests of the REST API, the WebSocket and the web inbox.

One app per test module (``gateway`` fixture in conftest.py); tests isolate by tenant: each calls
:meth:`Gateway.tenant` for a fresh tenant with one WhatsApp number and a user of every role.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from bench.simulator import Simulator, payloads
from bench.simulator.webhooks import encode, sign
from engine import tenants, users
from engine.auth.tokens import TokenKeys, start_session
from engine.config import Settings
from engine.crypto import secret_box
from engine.whatsapp import channels

PASSWORD = "una password lunga e sicura"
ROLES = ("owner", "admin", "supervisor", "agent")
_numbers = itertools.count(1)


@dataclass
class Member:
    id: uuid.UUID
    email: str
    name: str
    role: str
    token: str
    refresh_token: str


@dataclass
class TenantKit:
    """A tenant with one WhatsApp number (registered in the simulator too) and one user per role
    (``members["agent"]`` …). ``http(role)`` is a client authenticated as that user."""

    gateway: Gateway
    id: uuid.UUID
    slug: str
    phone_number_id: str
    waba_id: str
    display_phone: str
    app_secret: str
    access_token: str
    members: dict[str, Member] = field(default_factory=dict)

    def http(self, role: str = "agent") -> httpx.AsyncClient:
        return self.gateway.client(self.members[role].token)

    async def add_member(self, role: str, name: str | None = None) -> Member:
        n = next(_numbers)
        email = f"{role}{n}@{self.slug}.test"
        name = name or f"{role.title()} {n}"
        # tokens are minted by the engine's own session code rather than by POST /api/auth/login, so
        # that suites making many users stay under the per-address login limit (login itself is
        # tested in test_login.py and through the Gateway in test_ray_runtime.py)
        async with self.gateway.connect() as conn:
            user = await users.create(conn, self.id, email, name, PASSWORD, role=role)
            pair = await start_session(conn, TokenKeys.from_settings(self.gateway.settings), user)
        member = Member(user.id, email, name, role, pair.access_token, pair.refresh_token)
        self.members.setdefault(role, member)
        return member

    def inbound(self, wa_id: str, text: str, *, name: str = "Cliente", wamid: str | None = None,
                timestamp: float | None = None) -> httpx.Response:
        """A signed inbound text message posted to the Gateway's webhook, as Meta would."""
        payload = payloads.inbound(payloads.text_message(wa_id, text, wamid=wamid, timestamp=timestamp),
                                   waba_id=self.waba_id, phone_number_id=self.phone_number_id,
                                   display_phone_number=self.display_phone, profile_name=name)
        return self.post_webhook(payload)

    def post_webhook(self, payload: dict[str, Any]) -> httpx.Response:
        body = encode(payload)
        return httpx.post(f"{self.gateway.base_url}/webhooks/whatsapp", content=body, timeout=15,
                          headers={"content-type": "application/json", "x-hub-signature-256": sign(body, self.app_secret)})

    async def conversation_of(self, wa_id: str, timeout_s: float = 10) -> uuid.UUID:
        """The id of the open conversation with ``wa_id`` (waits for the webhook's commit)."""
        deadline = time.monotonic() + timeout_s
        while True:
            async with self.gateway.connect() as conn:
                found = await conn.fetchval(
                    "SELECT c.id FROM conversations c JOIN contacts k ON k.id = c.contact_id "
                    "WHERE c.tenant_id = $1 AND k.wa_id = $2 AND c.status <> 'resolved'", self.id, wa_id)
            if found is not None:
                return found
            assert time.monotonic() < deadline, f"no conversation with {wa_id}"
            await asyncio.sleep(0.05)


@dataclass
class Gateway:
    base_url: str
    settings: Settings
    simulator: Simulator
    app_secret: str

    @property
    def database_url(self) -> str:
        assert self.settings.database_url is not None
        return self.settings.database_url.get_secret_value()

    def connect(self) -> Any:
        """A direct connection as the owning role (setup and assertions, not the code under test)."""
        return _Connection(self.database_url)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=15)

    async def tenant(self, name: str | None = None, *, roles: tuple[str, ...] = ROLES) -> TenantKit:
        n = next(_numbers)
        name = name or f"Azienda {uuid.uuid4().hex[:8]}"
        phone_number_id = f"1065{secrets.randbelow(10**11):011d}"
        waba_id = f"1022{secrets.randbelow(10**11):011d}"
        display = f"3902{n:07d}"
        # one Meta app (one app secret) serves every tenant's number, as in production
        app_secret, access_token = self.app_secret, f"EAAG-{secrets.token_hex(8)}"
        async with self.connect() as conn:
            tenant = await tenants.create(conn, name)
            await channels.add(conn, secret_box(self.settings), tenant.id, phone_number_id=phone_number_id,
                               waba_id=waba_id, app_secret=app_secret, verify_token=secrets.token_hex(8),
                               access_token=access_token, display_phone=display)
        self.simulator.register_phone(phone_number_id, access_token, waba_id, display_phone_number=display)
        kit = TenantKit(self, tenant.id, tenant.slug, phone_number_id, waba_id, display, app_secret, access_token)
        for role in roles:
            await kit.add_member(role)
        return kit


class _Connection:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        from engine.db.pool import connect

        self.conn = await connect(self.url)
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        assert self.conn is not None
        await self.conn.close()
