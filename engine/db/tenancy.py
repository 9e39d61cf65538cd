"""A transaction that can see one tenant only, enforced by PostgreSQL itself.

Every query of an API request runs inside :func:`tenant_transaction`: ``SET LOCAL ROLE parlo_api``
(a role that does not own the tables, so row-level security applies to it) and the tenant in
``parlo.tenant_id``. The service layer scopes its queries by tenant too; this is the second wall,
so that a forgotten ``WHERE tenant_id = …`` leaks nothing.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

API_ROLE = "parlo_api"


@contextlib.asynccontextmanager
async def tenant_transaction(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> AsyncIterator[asyncpg.Connection]:
    if not isinstance(tenant_id, uuid.UUID):
        raise TypeError("tenant_id must be a UUID")
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {API_ROLE}")
        await conn.execute("SELECT set_config('parlo.tenant_id', $1, true)", str(tenant_id))
        yield conn
