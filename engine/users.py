"""Users of a tenant (agents, supervisors, admins) and their password hashes (argon2id)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from engine.db.queries import sql
from engine.errors import Conflict, InvalidInput

ROLES = ("owner", "admin", "supervisor", "agent")
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    display_name: str
    role: str


def hash_password(password: str) -> str:
    if len(password) < 12:
        raise InvalidInput("a password must be at least 12 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def create(conn: asyncpg.Connection, tenant_id: uuid.UUID, email: str, display_name: str,
                 password: str, role: str = "agent") -> User:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    if "@" not in email or len(email) > 254:
        raise InvalidInput(f"{email!r} is not an email address")
    row = await conn.fetchrow(sql("users", "create_user"), tenant_id, email, display_name, hash_password(password), role)
    if row is None:
        raise Conflict(f"user {email!r} already exists in this tenant")
    return User(id=row["id"], tenant_id=row["tenant_id"], email=row["email"],
                display_name=row["display_name"], role=row["role"])


async def authenticate(conn: asyncpg.Connection, tenant_id: uuid.UUID, email: str, password: str) -> User | None:
    row = await conn.fetchrow(sql("users", "get_user_by_email"), tenant_id, email)
    if row is None or not row["active"] or not verify_password(row["password_hash"], password):
        return None
    return User(id=row["id"], tenant_id=row["tenant_id"], email=row["email"],
                display_name=row["display_name"], role=row["role"])
