from __future__ import annotations

import asyncio

import pytest

from engine.errors import InvalidInput
from engine.health import check_all
from engine.tenants import slugify, validate
from engine.users import hash_password, verify_password

pytestmark = pytest.mark.unit


async def test_health_reports_each_component_and_fails_on_any() -> None:
    async def ok() -> dict[str, int]:
        return {"n": 1}

    async def broken() -> None:
        raise ConnectionError("connect to postgresql://u:hunter2@h/d refused")

    async def slow() -> None:
        await asyncio.sleep(5)

    healthy, report = await check_all({"a": ok}, 1)
    assert healthy and report["components"]["a"]["status"] == "ok" and report["components"]["a"]["n"] == 1

    healthy, report = await check_all({"a": ok, "b": broken, "c": slow}, 0.05)
    assert not healthy and report["status"] == "error"
    assert report["components"]["b"]["status"] == "error"
    assert "hunter2" not in report["components"]["b"]["error"]
    assert "no answer" in report["components"]["c"]["error"]
    assert all("latency_ms" in c for c in report["components"].values())


def test_tenant_names_and_slugs() -> None:
    assert slugify("Pizzeria Da Mario!") == "pizzeria-da-mario"
    assert validate("  Acme  ", None) == ("Acme", "acme")
    for bad_name in ("", " ", "x" * 201, "evil\x00name"):
        with pytest.raises(InvalidInput):
            validate(bad_name, None)
    for bad_slug in ("-x", "UPPER", "a b", "ä", "x" * 64):
        with pytest.raises(InvalidInput):
            validate("ok", bad_slug)
    with pytest.raises(InvalidInput):
        validate("!!!", None)  # nothing left to make a slug from


def test_password_hashing() -> None:
    digest = hash_password("correct horse battery staple")
    assert digest.startswith("$argon2id$")
    assert verify_password(digest, "correct horse battery staple")
    assert not verify_password(digest, "wrong password here")
    assert not verify_password("garbage", "anything")
    with pytest.raises(InvalidInput):
        hash_password("short")
