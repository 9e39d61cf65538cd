"""Logging in: a password checked once per attempt, attempts limited per user and per address."""

from __future__ import annotations

import asyncpg

from engine import tenants, users
from engine.auth.tokens import TokenKeys, TokenPair, start_session
from engine.errors import Unauthenticated
from engine.ratelimit import Limit, RateLimiter

LOGIN_PER_USER = Limit("login_attempts_per_user", 10, 15 * 60)
LOGIN_PER_ADDRESS = Limit("login_attempts_per_address", 50, 15 * 60)


async def login(conn: asyncpg.Connection, keys: TokenKeys, limiter: RateLimiter, *, tenant_slug: str, email: str,
                password: str, address: str) -> TokenPair:
    """Tokens for valid credentials. Every failure reads the same ("wrong tenant, email or
    password") so that the answer does not tell which part was wrong."""
    user_key = f"{tenant_slug.lower()}:{email.lower()}"[:300]
    await limiter.hit(LOGIN_PER_ADDRESS, address)
    await limiter.hit(LOGIN_PER_USER, user_key)
    failure = Unauthenticated("wrong tenant, email or password")
    if not password or len(password) > 1024 or len(email) > 254:
        raise failure
    tenant = await tenants.get_by_slug(conn, tenant_slug) if len(tenant_slug) <= 63 else None
    user = await users.authenticate(conn, tenant.id, email, password) if tenant else None
    if user is None:
        raise failure
    await limiter.reset(LOGIN_PER_USER, user_key)  # a success clears the user's failures, not the address's
    async with conn.transaction():
        pair = await start_session(conn, keys, user)
        await conn.execute("INSERT INTO audit_log (tenant_id, actor, action, subject, details) "
                           "VALUES ($1, $2, 'auth.login', $3, $4)", user.tenant_id, f"user:{user.id}", user.email,
                           {"address": address})
    return pair
