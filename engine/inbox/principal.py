"""Who is asking: the user behind an access token, with what the permission table lets them do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from engine.auth.permissions import can, require
from engine.auth.tokens import AccessClaims
from engine.errors import Unauthenticated


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    role: str
    name: str
    team_ids: frozenset[uuid.UUID] = frozenset()

    def can(self, action: str) -> bool:
        return can(self.role, action)

    def require(self, action: str) -> None:
        require(self.role, action)

    @property
    def sees_all(self) -> bool:
        """Supervisors and above see every conversation of the tenant; agents see their teams'
        conversations and their own (see :func:`may_see`)."""
        return self.can("conversation.read_all")

    def may_see(self, team_id: uuid.UUID | None, assignee_id: uuid.UUID | None) -> bool:
        if self.sees_all:
            return True
        return assignee_id == self.user_id or (team_id is not None and team_id in self.team_ids)

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        return f"user:{self.user_id}"


async def load_principal(conn: asyncpg.Connection, claims: AccessClaims) -> Principal:
    """The principal for verified access-token claims. The role is read again from PostgreSQL so
    that a demoted or deactivated user loses access at once, not when the token expires. Must run
    inside ``tenant_transaction(conn, claims.tenant_id)``."""
    row = await conn.fetchrow(
        "SELECT u.role, u.display_name, u.active, "
        "       coalesce(array_agg(m.team_id) FILTER (WHERE m.team_id IS NOT NULL), '{}') AS team_ids "
        "FROM users u LEFT JOIN team_members m ON m.tenant_id = u.tenant_id AND m.user_id = u.id "
        "WHERE u.id = $1 AND u.tenant_id = $2 GROUP BY u.id", claims.user_id, claims.tenant_id)
    if row is None or not row["active"]:
        raise Unauthenticated("this account no longer exists or has been deactivated")
    return Principal(claims.tenant_id, claims.user_id, row["role"], row["display_name"], frozenset(row["team_ids"]))


@dataclass(slots=True)
class Changes:
    """Live events a service call produced, published to the tenant's stream after commit.

    Each event's data names its audience so the WebSocket can filter per user: ``conversation_id``
    with ``team_id`` and ``assignee_id`` (who may see that conversation), or ``user_ids`` (only
    those users), or neither (every user of the tenant)."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))
