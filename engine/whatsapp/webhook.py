"""The webhook endpoint's logic, free of any web framework: handshake, signature, parse, store.

The Gateway adapts HTTP to :class:`WebhookReceiver`; tests drive the receiver directly.
Answers follow Meta's retry contract: 200 only once the delivery is committed; 503 when
PostgreSQL cannot take it (Meta retries); 4xx for what no retry can fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from engine.crypto import SecretBox
from engine.db.group_commit import GroupCommit
from engine.db.pool import CONNECT_ERRORS
from engine.db.queries import sql
from engine.errors import ConfigError, ServiceUnavailable
from engine.whatsapp import channels
from engine.whatsapp.channels import ChannelRoute
from engine.whatsapp.ingest import IngestResult, store, store_grouped
from engine.whatsapp.parse import InvalidWebhook, parse_webhook
from engine.whatsapp.signature import matching_secret

log = logging.getLogger("parlo.whatsapp.webhook")

# While storing, only these mean "the database is not there"; any other PostgresError is logged
# with its trace, and an error of ours (a bug) is left to surface rather than hidden as a 503.
STORE_UNAVAILABLE = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                     asyncpg.CannotConnectNowError, asyncpg.exceptions.OperatorInterventionError)

# Meta's payloads nest about a dozen levels. orjson accepts up to 1024, but the jsonb encoder
# (json.dumps) and _scrub_nul recurse, and a RecursionError there would escape as a 500 that
# Meta retries forever: refuse anything deeper than this, well under Python's recursion limit.
MAX_JSON_DEPTH = 128
REJECT_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    status: int
    detail: str
    result: IngestResult | None = None


class RouteCache:
    """Active channels with decrypted secrets, refreshed every ``ttl_s`` and on a miss (at most once a second)."""

    def __init__(self, pool: Any, box: SecretBox, ttl_s: float = 10.0) -> None:
        self._pool = pool
        self._box = box
        self._ttl_s = ttl_s
        self._routes: dict[str, ChannelRoute] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self, *, refresh: bool = False, wait: bool = False) -> dict[str, ChannelRoute]:
        """The routes; ``refresh`` re-reads them unless that happened in the last second, and
        ``wait`` reloads anyway unless a load began after this call did, so a channel committed
        before the request is always seen. (Only signed deliveries for a number we do not know
        come here, so the cost of a reload each is bounded by what Meta sends.)"""
        now = time.monotonic()
        stale = now - self._loaded_at > self._ttl_s
        if refresh and wait and now - self._loaded_at <= 1.0:
            requested = now
            async with self._lock:
                if self._loaded_at < requested:
                    began = time.monotonic()  # what the load can see is as of its start
                    self._routes = await channels.routes(self._pool, self._box)
                    self._loaded_at = began
            return self._routes
        if stale or (refresh and now - self._loaded_at > 1.0):
            async with self._lock:
                if time.monotonic() - self._loaded_at > (1.0 if refresh else self._ttl_s):
                    began = time.monotonic()  # what the load can see is as of its start
                    self._routes = await channels.routes(self._pool, self._box)
                    self._loaded_at = began
        return self._routes


def _scrub_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; keep the rest of the value intact."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_scrub_nul(k): _scrub_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_nul(v) for v in value]
    return value


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class WebhookReceiver:
    def __init__(self, pool: Any, box: SecretBox, *, max_bytes: int, routes: RouteCache | None = None,
                 group_commit: bool = False) -> None:
        """``group_commit``: deliveries of one message that arrive together are committed in one
        transaction (:class:`GroupCommit`); each is still answered only once its rows are committed."""
        self.pool = pool
        self.max_bytes = max_bytes
        self.routes = routes or RouteCache(pool, box)
        self.group = GroupCommit(pool, sql("inbound", "ingest_single_message")) if group_commit else None

    async def _refuse(self, body: bytes, reason: str) -> WebhookOutcome:
        """400 for a signed delivery we cannot take; keep a trace of it (best effort)."""
        log.warning("signed webhook refused", extra={"reason": reason, "size": len(body)})
        try:
            await self.pool.execute(sql("inbound", "insert_reject"), reason[:500], hashlib.sha256(body).hexdigest(),
                                    len(body), body[:REJECT_HEAD_BYTES])
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("refused webhook not recorded", extra={"error": type(exc).__name__})
        return WebhookOutcome(400, reason)

    async def handshake(self, mode: str | None, token: str | None, challenge: str | None) -> str | None:
        """The challenge to echo if Meta's verification request names a verify token we know."""
        if mode != "subscribe" or not token or challenge is None or len(token) > 4096 or len(challenge) > 4096:
            return None
        try:
            matched = await channels.verify_token_matches(self.pool, token)
        except CONNECT_ERRORS as exc:
            raise ServiceUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from None
        return challenge if matched else None

    async def receive(self, body: bytes, signature: str | None) -> WebhookOutcome:
        if len(body) > self.max_bytes:
            return WebhookOutcome(413, f"body larger than {self.max_bytes} bytes")
        if not signature:
            return WebhookOutcome(401, "missing X-Hub-Signature-256")
        try:
            routes = await self.routes.get()
            secret = matching_secret(body, signature, {r.app_secret for r in routes.values()})
            if secret is None:
                routes = await self.routes.get(refresh=True)
                secret = matching_secret(body, signature, {r.app_secret for r in routes.values()})
        except CONNECT_ERRORS as exc:
            return WebhookOutcome(503, f"PostgreSQL is unavailable ({type(exc).__name__}); retry later")
        except ConfigError as exc:  # channel secrets that do not decrypt: an operator must act; Meta keeps retrying
            log.error("webhook refused: %s", exc)
            return WebhookOutcome(503, "channel secrets cannot be read; retry later")
        if secret is None:
            return WebhookOutcome(401, "invalid X-Hub-Signature-256")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return await self._refuse(body, "body is not valid JSON")
        # fewer brackets than the limit cannot nest deeper than it: skip the walk for ordinary bodies
        if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _too_deep(payload):
            return await self._refuse(body, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if b"\\u0000" in body:
            payload = _scrub_nul(payload)
        try:
            batch = parse_webhook(payload)
        except InvalidWebhook as exc:
            return await self._refuse(body, str(exc))
        if not batch.phone_number_ids <= routes.keys():
            # one Meta app (one secret) may serve a number added a moment ago: read the channels
            # again before treating its messages as addressed to nobody
            try:
                routes = await self.routes.get(refresh=True, wait=True)
            except CONNECT_ERRORS as exc:
                return WebhookOutcome(503, f"PostgreSQL is unavailable ({type(exc).__name__}); retry later")
        signed_routes = {pnid: r for pnid, r in routes.items() if r.app_secret == secret}
        try:
            result = None
            if self.group is not None:
                result = await store_grouped(self.group, batch, body, payload, signed_routes)
            if result is None:
                async with self.pool.acquire() as conn:
                    result = await store(conn, batch, body, payload, signed_routes)
        except asyncpg.DataError as exc:  # a retry cannot fix bad data
            log.warning("webhook rejected by the database", extra={"error": str(exc)[:200]})
            return await self._refuse(body, "payload holds values the database cannot store")
        except STORE_UNAVAILABLE as exc:
            return WebhookOutcome(503, f"PostgreSQL is unavailable ({type(exc).__name__}); retry later")
        except asyncpg.PostgresError:  # a deadlock, a serialization failure…: Meta's retry will do
            log.exception("webhook not stored")
            return WebhookOutcome(503, "the delivery could not be stored; retry later")
        if result.ignored_phone_number_ids:
            log.warning("webhook for unknown phone number ids ignored",
                        extra={"phone_number_ids": sorted(result.ignored_phone_number_ids)[:20]})
        if batch.rejected:
            log.warning("webhook items rejected", extra={"reasons": [r.reason for r in batch.rejected][:20]})
        for change_error in batch.errors[:20]:  # Meta reporting a problem with a number or the WABA itself
            log.error("Meta reported an error for a WhatsApp number",
                      extra={"phone_number_id": change_error.phone_number_id, "waba_id": change_error.waba_id,
                             "code": change_error.error.code, "title": change_error.error.title,
                             "details": change_error.error.details})
        return WebhookOutcome(200, "stored", result)
