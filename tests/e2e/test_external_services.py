"""With PARLO_DATABASE_URL / PARLO_REDIS_URL the same commands use real, separately started servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.db import migrations
from tests.conftest import PostgresHarness, RedisHarness
from tests.e2e.cli import clean_env, parlo

pytestmark = pytest.mark.e2e


def test_cli_against_a_separately_started_postgres(postgres: PostgresHarness, empty_database_url: str,
                                                   redis_server: RedisHarness, tmp_path: Path) -> None:
    env = clean_env(PARLO_HOME=str(tmp_path / "home"), PARLO_DATABASE_URL=empty_database_url,
                    PARLO_REDIS_URL=redis_server.url)
    assert parlo("db", "migrate", env=env).code == 0
    created = parlo("tenant", "create", "acme", env=env)
    assert created.code == 0, created.err
    listed = json.loads(parlo("tenant", "list", "--json", env=env).out)
    assert [t["slug"] for t in listed] == ["acme"]

    result = parlo("status", "--json", env=env)
    report = json.loads(result.out)
    pg = report["components"]["postgres"]
    assert pg["mode"] == "external" and pg["status"] == "ok" and pg["schema_version"] == len(migrations.discover())
    assert f":{postgres.server.port}/" in pg["url"]
    assert postgres.creds.postgres_app not in result.out and "****" in pg["url"]
    assert report["components"]["redis"]["status"] == "ok"
    assert redis_server.password not in result.out
    assert result.code == 1  # Ray and the Serve app are not running here, and status says so
    assert report["components"]["serve"]["status"] == "error"

    shown = json.loads(parlo("status", "--json", "--show-secrets", env=env).out)
    assert postgres.creds.postgres_app in shown["components"]["postgres"]["url"]
