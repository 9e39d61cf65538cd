"""Access tokens (HS256 JWT, minutes) and refresh tokens (opaque, days, rotated on every use).

A refresh token is stored only as its SHA-256 and belongs to a family that starts at login.
Each refresh marks the presented token used and issues the next one of the family. Presenting
a token that was already used (or revoked) means it was copied: the whole family is revoked and
the event is written to the audit log as a security event, so both the thief and the user must
log in again.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import asyncpg
import jwt

from engine.config import Settings
from engine.db.queries import sql
from engine.embedded import credentials
from engine.errors import ConfigError, Unauthenticated
from engine.users import User

log = logging.getLogger("parlo.auth")
ALGORITHM = "HS256"
ISSUER = "parlo"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    role: str
    expires_at: datetime
    token_id: str


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime
    user: User


@dataclass(frozen=True, slots=True)
class TokenKeys:
    signing_key: str = field(repr=False)
    access_ttl: timedelta
    refresh_ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenKeys:
        if settings.jwt_secret is not None:
            key = settings.jwt_secret.get_secret_value()
        else:
            creds = credentials.load(settings.home)
            if creds is None:
                raise ConfigError(f"no token signing key: set PARLO_JWT_SECRET or run `parlo up` to create {settings.home}")
            key = creds.jwt_secret
        if len(key) < 32:
            raise ConfigError("PARLO_JWT_SECRET must be at least 32 characters")
        return cls(key, timedelta(seconds=settings.access_token_ttl_s), timedelta(seconds=settings.refresh_token_ttl_s))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_access(keys: TokenKeys, user: User, now: datetime | None = None) -> tuple[str, datetime]:
    now = now or _now()
    expires = now + keys.access_ttl
    claims = {"iss": ISSUER, "typ": "access", "sub": str(user.id), "tid": str(user.tenant_id), "role": user.role,
              "iat": int(now.timestamp()), "exp": int(expires.timestamp()), "jti": secrets.token_hex(8)}
    return jwt.encode(claims, keys.signing_key, algorithm=ALGORITHM), expires


def verify_access(keys: TokenKeys, token: str, now: datetime | None = None) -> AccessClaims:
    """The claims of a valid access token; Unauthenticated for anything else (never says which check failed)."""
    if not token or len(token) > 4096:
        raise Unauthenticated("invalid access token")
    try:
        # expiry is checked below against the injected clock, everything else by PyJWT
        claims = jwt.decode(token, keys.signing_key, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "tid", "role", "typ"], "verify_exp": False})
        if claims["typ"] != "access":
            raise jwt.InvalidTokenError("not an access token")
        expires = datetime.fromtimestamp(int(claims["exp"]), timezone.utc)
        parsed = AccessClaims(uuid.UUID(claims["sub"]), uuid.UUID(claims["tid"]), str(claims["role"]), expires,
                              str(claims.get("jti", "")))
    except (jwt.InvalidTokenError, ValueError, KeyError, TypeError, OverflowError):
        raise Unauthenticated("invalid access token") from None
    if expires <= (now or _now()):
        raise Unauthenticated("access token expired")
    return parsed


async def _new_refresh(conn: asyncpg.Connection, keys: TokenKeys, user: User, family_id: uuid.UUID,
                       now: datetime) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    expires = now + keys.refresh_ttl
    await conn.execute(sql("auth", "insert_refresh"), user.tenant_id, user.id, family_id, _digest(token), expires)
    return token, expires


async def start_session(conn: asyncpg.Connection, keys: TokenKeys, user: User, now: datetime | None = None) -> TokenPair:
    """Tokens for a user who just proved who they are (a new refresh family)."""
    now = now or _now()
    access, access_exp = issue_access(keys, user, now)
    refresh, refresh_exp = await _new_refresh(conn, keys, user, uuid.uuid4(), now)
    return TokenPair(access, refresh, access_exp, refresh_exp, user)


async def rotate(conn: asyncpg.Connection, keys: TokenKeys, refresh_token: str, now: datetime | None = None) -> TokenPair:
    """Exchange a refresh token for a new pair; a reused token revokes its whole family."""
    now = now or _now()
    async with conn.transaction():
        row = await conn.fetchrow(sql("auth", "refresh_for_update"), _digest(refresh_token or ""))
        if row is None:
            raise Unauthenticated("invalid refresh token")
        if row["used_at"] is not None or row["revoked_at"] is not None:
            await conn.execute(sql("auth", "revoke_family"), row["family_id"], now, "reuse")
            await conn.execute(sql("tenants", "audit"), row["tenant_id"], f"user:{row['user_id']}",
                               "security.refresh_token_reuse", str(row["family_id"]),
                               {"token_id": str(row["id"]), "severity": "high"})
            log.warning("refresh token reused: family revoked",
                        extra={"tenant": str(row["tenant_id"]), "family": str(row["family_id"])})
            reused = True
        else:
            reused = False
            if row["expires_at"] <= now or not row["active"]:
                raise Unauthenticated("refresh token expired")
            await conn.execute(sql("auth", "mark_refresh_used"), row["id"], now)
            user = User(row["user_id"], row["tenant_id"], row["email"], row["display_name"], row["role"])
            access, access_exp = issue_access(keys, user, now)
            refresh, refresh_exp = await _new_refresh(conn, keys, user, row["family_id"], now)
    if reused:  # outside the transaction, so that the revocation and the audit entry are committed
        raise Unauthenticated("refresh token already used; every session of this login was ended")
    return TokenPair(access, refresh, access_exp, refresh_exp, user)


async def end_session(conn: asyncpg.Connection, refresh_token: str, now: datetime | None = None) -> bool:
    """Logout: revoke the family of this refresh token. Returns False if the token is unknown."""
    now = now or _now()
    async with conn.transaction():
        row = await conn.fetchrow(sql("auth", "refresh_for_update"), _digest(refresh_token or ""))
        if row is None:
            return False
        await conn.execute(sql("auth", "revoke_family"), row["family_id"], now, "logout")
        await conn.execute(sql("tenants", "audit"), row["tenant_id"], f"user:{row['user_id']}", "auth.logout",
                           str(row["family_id"]), {})
    return True
