from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Settings, load_settings
from engine.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PARLO_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_embedded_under_dot_parlo(tmp_path: Path) -> None:
    s = load_settings()
    assert s.home == tmp_path / ".parlo"
    assert s.embedded_postgres and s.embedded_redis and s.embedded_ray
    assert s.http_port == 8000
    assert s.public_url == "http://localhost:8000/"


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PARLO_HTTP_PORT=8123\nPARLO_CONVERSATION_SHARDS=7\n")
    monkeypatch.setenv("PARLO_CONVERSATION_SHARDS", "3")  # the environment beats .env
    s = load_settings()
    assert s.http_port == 8123
    assert s.conversation_shards == 3


def test_external_services_switch_off_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLO_DATABASE_URL", "postgresql://u:pw@db.example:5432/parlo")
    monkeypatch.setenv("PARLO_REDIS_URL", "redis://:pw@cache:6379/0")
    monkeypatch.setenv("PARLO_RAY_ADDRESS", "ray-head:6379")
    s = load_settings()
    assert not (s.embedded_postgres or s.embedded_redis or s.embedded_ray)
    assert "pw" not in repr(s)  # SecretStr keeps passwords out of reprs


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("PARLO_HTTP_PORT", "eighty", "PARLO_HTTP_PORT"),
        ("PARLO_HTTP_PORT", "70000", "PARLO_HTTP_PORT"),
        ("PARLO_CONVERSATION_SHARDS", "0", "PARLO_CONVERSATION_SHARDS"),
        ("PARLO_LOG_LEVEL", "LOUD", "PARLO_LOG_LEVEL"),
        ("PARLO_DATABASE_URL", "mysql://root:hunter2@db/x", "PARLO_DATABASE_URL"),
        ("PARLO_REDIS_URL", "http://:hunter2@cache", "PARLO_REDIS_URL"),
    ],
)
def test_bad_values_are_one_readable_error(monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert named in message
    assert "\n" not in message
    assert "hunter2" not in message


def test_env_round_trip_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(http_port=9001, conversation_shards=5, database_url="postgresql://a:b@h/d")  # type: ignore[arg-type]
    for key, value in original.env().items():
        monkeypatch.setenv(key, value)
    rebuilt = load_settings()
    assert rebuilt == original


def test_token_keys_come_from_settings_or_the_embedded_credentials(tmp_path: Path) -> None:
    from engine.auth.tokens import TokenKeys
    from engine.embedded import credentials

    with pytest.raises(ConfigError, match="PARLO_JWT_SECRET"):
        TokenKeys.from_settings(load_settings(home=tmp_path / "none"))
    with pytest.raises(ConfigError, match="at least 32"):
        TokenKeys.from_settings(load_settings(jwt_secret="short"))
    assert TokenKeys.from_settings(load_settings(jwt_secret="s" * 40)).signing_key == "s" * 40
    creds = credentials.load_or_create(tmp_path / "home")
    keys = TokenKeys.from_settings(load_settings(home=tmp_path / "home"))
    assert keys.signing_key == creds.jwt_secret
    assert creds.jwt_secret not in repr(keys)
