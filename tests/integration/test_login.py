from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine import tenants, users
from engine.auth.service import LOGIN_PER_ADDRESS, LOGIN_PER_USER, login
from engine.auth.tokens import TokenKeys, verify_access
from engine.errors import Unauthenticated
from engine.ratelimit import Limit, RateLimited, RateLimiter
from tests.conftest import RedisHarness

pytestmark = pytest.mark.integration
KEYS = TokenKeys("k" * 48, timedelta(minutes=15), timedelta(days=30))


@pytest.fixture
async def limiter(redis_server: RedisHarness) -> AsyncIterator[RateLimiter]:
    client = aioredis.from_url(redis_server.url)
    await client.flushdb()
    yield RateLimiter(client)
    await client.aclose()


async def test_sliding_window_answers_retry_after(limiter: RateLimiter) -> None:
    limit = Limit("sends", 3, 10)
    for t in (100.0, 101.0, 102.0):
        await limiter.hit(limit, "agent-1", now=t)
    with pytest.raises(RateLimited) as info:
        await limiter.hit(limit, "agent-1", now=103.0)
    assert info.value.retry_after_s == pytest.approx(7.0) and info.value.retry_after_header == "7"
    await limiter.hit(limit, "agent-2", now=103.0)  # keys are independent
    await limiter.hit(limit, "agent-1", now=110.5)  # the first hit left the window


async def test_login_issues_tokens_and_is_limited(db: asyncpg.Connection, limiter: RateLimiter) -> None:
    tenant = await tenants.create(db, "Acme")
    anna = await users.create(db, tenant.id, "anna@acme.it", "Anna", "una password lunga", role="supervisor")
    pair = await login(db, KEYS, limiter, tenant_slug="acme", email="Anna@Acme.it", password="una password lunga",
                       address="10.0.0.1")
    assert verify_access(KEYS, pair.access_token).user_id == anna.id and pair.user.role == "supervisor"
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'auth.login'") == 1

    messages = set()
    for tenant_slug, email, password in (("acme", "anna@acme.it", "wrong password!"), ("nope", "anna@acme.it", "x"),
                                         ("acme", "bob@acme.it", "una password lunga"), ("acme", "anna@acme.it", ""),
                                         ("a" * 500, "anna@acme.it", "x"), ("acme", "anna@acme.it", "p" * 5000)):
        with pytest.raises(Unauthenticated) as info:
            await login(db, KEYS, limiter, tenant_slug=tenant_slug, email=email, password=password, address="10.0.0.2")
        messages.add(str(info.value))
    assert messages == {"wrong tenant, email or password"}  # nothing says which part was wrong

    for _ in range(LOGIN_PER_USER.limit - 3):  # 3 failures for acme:anna@acme.it so far
        with pytest.raises(Unauthenticated):
            await login(db, KEYS, limiter, tenant_slug="acme", email="anna@acme.it", password="wrong password!",
                        address="10.0.0.3")
    with pytest.raises(RateLimited):  # even the right password waits now
        await login(db, KEYS, limiter, tenant_slug="acme", email="anna@acme.it", password="una password lunga",
                    address="10.0.0.4")
    assert LOGIN_PER_ADDRESS.limit > LOGIN_PER_USER.limit
