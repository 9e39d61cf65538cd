"""The API harness itself: a tenant's users log in, an inbound webhook makes a conversation."""

from __future__ import annotations

import pytest

from tests.api_harness import Gateway

pytestmark = pytest.mark.integration


async def test_a_fresh_tenant_logs_in_and_receives_a_message(gateway: Gateway) -> None:
    kit = await gateway.tenant()
    async with kit.http("agent") as http:
        me = await http.get("/api/me")
        assert me.status_code == 200 and me.json()["role"] == "agent"
    assert kit.inbound("393330000001", "Ciao!").status_code == 200
    conversation = await kit.conversation_of("393330000001")
    async with gateway.connect() as conn:
        assert await conn.fetchval("SELECT body FROM messages WHERE conversation_id = $1", conversation) == "Ciao!"
