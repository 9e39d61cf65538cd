"""Access tokens and rotating refresh tokens against a real database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import jwt
import pytest

from engine import tenants, users
from engine.auth.tokens import ALGORITHM, TokenKeys, end_session, issue_access, rotate, start_session, verify_access
from engine.errors import Unauthenticated

pytestmark = pytest.mark.integration

KEYS = TokenKeys("k" * 48, timedelta(minutes=15), timedelta(days=30))


@pytest.fixture
async def agent(db: asyncpg.Connection) -> users.User:
    tenant = await tenants.create(db, "Acme")
    return await users.create(db, tenant.id, "anna@acme.it", "Anna", "una password lunga", role="agent")


async def test_access_tokens_verify_and_refuse_forgeries(agent: users.User) -> None:
    now = datetime.now(timezone.utc)
    token, expires = issue_access(KEYS, agent, now)
    claims = verify_access(KEYS, token, now)
    assert (claims.user_id, claims.tenant_id, claims.role) == (agent.id, agent.tenant_id, "agent")
    assert expires - now == timedelta(minutes=15)

    with pytest.raises(Unauthenticated, match="expired"):
        verify_access(KEYS, token, now + timedelta(minutes=16))
    forged = {"iss": "parlo", "typ": "access", "sub": str(agent.id), "tid": str(agent.tenant_id), "role": "owner",
              "iat": int(now.timestamp()), "exp": int((now + timedelta(hours=1)).timestamp())}
    for bad in (jwt.encode(forged, "another key" * 4, algorithm=ALGORITHM),           # wrong key
                jwt.encode(forged, None, algorithm="none"),                            # alg none
                jwt.encode({**forged, "typ": "refresh"}, KEYS.signing_key, algorithm=ALGORITHM),
                jwt.encode({k: v for k, v in forged.items() if k != "tid"}, KEYS.signing_key, algorithm=ALGORITHM),
                jwt.encode({**forged, "sub": "not-a-uuid"}, KEYS.signing_key, algorithm=ALGORITHM),
                token[:-2] + ("aa" if not token.endswith("aa") else "bb"), "", "x" * 5000, "a.b.c"):
        with pytest.raises(Unauthenticated, match="invalid"):
            verify_access(KEYS, bad, now)


async def test_refresh_rotates_and_reuse_revokes_the_family(db: asyncpg.Connection, agent: users.User) -> None:
    first = await start_session(db, KEYS, agent)
    second = await rotate(db, KEYS, first.refresh_token)
    assert second.refresh_token != first.refresh_token and verify_access(KEYS, second.access_token).user_id == agent.id
    third = await rotate(db, KEYS, second.refresh_token)

    with pytest.raises(Unauthenticated, match="already used"):
        await rotate(db, KEYS, first.refresh_token)  # a stolen, already rotated token comes back
    with pytest.raises(Unauthenticated):
        await rotate(db, KEYS, third.refresh_token)  # the legitimate latest one is dead too
    rows = await db.fetch("SELECT revoked_at, revoked_reason FROM refresh_tokens")
    assert len(rows) == 3 and all(r["revoked_reason"] == "reuse" for r in rows)
    event = await db.fetchrow("SELECT action, details FROM audit_log WHERE action LIKE 'security.%'")
    assert event["action"] == "security.refresh_token_reuse" and event["details"]["severity"] == "high"
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE token_sha256 = $1", first.refresh_token) == 0

    fresh = await start_session(db, KEYS, agent)  # logging in again starts a new family
    assert (await rotate(db, KEYS, fresh.refresh_token)).user == agent


async def test_logout_expiry_and_unknown_tokens(db: asyncpg.Connection, agent: users.User) -> None:
    session = await start_session(db, KEYS, agent)
    assert await end_session(db, session.refresh_token)
    with pytest.raises(Unauthenticated):
        await rotate(db, KEYS, session.refresh_token)
    assert not await end_session(db, "never-issued")
    for bogus in ("", "never-issued", "x" * 10_000):
        with pytest.raises(Unauthenticated, match="invalid refresh token"):
            await rotate(db, KEYS, bogus)

    old = await start_session(db, KEYS, agent, now=datetime.now(timezone.utc) - timedelta(days=31))
    with pytest.raises(Unauthenticated, match="expired"):
        await rotate(db, KEYS, old.refresh_token)

    await db.execute("UPDATE users SET active = false WHERE id = $1", agent.id)
    disabled = await start_session(db, KEYS, agent)
    with pytest.raises(Unauthenticated):
        await rotate(db, KEYS, disabled.refresh_token)
