from __future__ import annotations

import asyncpg
import pytest
from cryptography.fernet import Fernet

from engine import tenants
from engine.crypto import SecretBox
from engine.errors import ConfigError, Conflict, InvalidInput, NotFound
from engine.whatsapp import channels

pytestmark = pytest.mark.integration

SECRETS = {"app_secret": "app-secret-123", "verify_token": "verify-me", "access_token": "EAAG-token-xyz"}


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key().decode())


async def test_channels_store_secrets_encrypted_and_route_by_phone_number_id(db: asyncpg.Connection, box: SecretBox) -> None:
    acme = await tenants.create(db, "Acme")
    added = await channels.add(db, box, acme.id, phone_number_id="1065", waba_id="2001", display_phone="+39 02 1", **SECRETS)
    assert added.tenant_id == acme.id and added.active

    row = await db.fetchrow("SELECT * FROM channels WHERE id = $1", added.id)
    stored = b"".join(bytes(row[c]) for c in ("app_secret_encrypted", "access_token_encrypted", "verify_token_encrypted"))
    for secret in SECRETS.values():
        assert secret.encode() not in stored
        assert secret not in str(dict(row))

    routes = await channels.routes(db, box)
    assert routes["1065"].tenant_id == acme.id
    assert routes["1065"].app_secret == "app-secret-123" and routes["1065"].access_token == "EAAG-token-xyz"
    assert "app-secret-123" not in repr(routes["1065"]) and "EAAG" not in repr(routes["1065"])
    assert await channels.verify_token_matches(db, "verify-me")
    assert not await channels.verify_token_matches(db, "verify-you")

    with pytest.raises(ConfigError, match="cannot be decrypted"):
        await channels.routes(db, SecretBox(Fernet.generate_key().decode()))


async def test_duplicates_bad_ids_and_removal(db: asyncpg.Connection, box: SecretBox) -> None:
    acme = await tenants.create(db, "Acme")
    other = await tenants.create(db, "Other")
    await channels.add(db, box, acme.id, phone_number_id="1065", waba_id="2001", **SECRETS)
    with pytest.raises(Conflict):
        await channels.add(db, box, other.id, phone_number_id="1065", waba_id="2002", **SECRETS)
    for bad in ({"phone_number_id": "12a"}, {"waba_id": ""}, {"app_secret": "with space"}, {"access_token": ""},
                {"verify_token": "x" * 5000}):
        args = {"phone_number_id": "777", "waba_id": "2001", **SECRETS, **bad}
        with pytest.raises(InvalidInput):
            await channels.add(db, box, acme.id, **args)
    assert [c["phone_number_id"] for c in await channels.list_all(db)] == ["1065"]

    with pytest.raises(NotFound):
        await channels.remove(db, "1065", tenant_id=other.id)  # not theirs
    await channels.remove(db, "1065", tenant_id=acme.id)
    assert await channels.routes(db, box) == {}
    assert not await channels.verify_token_matches(db, "verify-me")
    with pytest.raises(NotFound):
        await channels.remove(db, "1065")
