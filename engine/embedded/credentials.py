"""Passwords generated for the embedded services, kept in ``<home>/credentials.json`` (mode 0600)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import ConfigError

FILENAME = "credentials.json"


@dataclass(frozen=True, slots=True)
class Credentials:
    postgres_superuser: str
    postgres_app: str
    redis: str
    ray_token: str
    # Fernet key that encrypts channel secrets at rest when PARLO_SECRET_KEY is not set.
    secret_key: str
    # HS256 key of access tokens when PARLO_JWT_SECRET is not set.
    jwt_secret: str

    @classmethod
    def generate(cls) -> Credentials:
        from cryptography.fernet import Fernet

        return cls(*(secrets.token_urlsafe(24) for _ in range(3)), ray_token=secrets.token_hex(32),
                   secret_key=Fernet.generate_key().decode(), jwt_secret=secrets.token_urlsafe(48))


def load(home: Path) -> Credentials | None:
    path = home / FILENAME
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
        fresh = asdict(Credentials.generate())
        missing = {k: v for k, v in fresh.items() if k not in stored}
        creds = Credentials(**{**stored, **missing})
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path} is unreadable or damaged ({type(exc).__name__}); restore it or remove {home} to start over") from None
    if missing:  # written by an older version: keep every existing value, add the new ones
        _write(path, creds)
    return creds


def _write(path: Path, creds: Credentials) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(creds), fh)
    os.replace(tmp, path)


def load_or_create(home: Path) -> Credentials:
    existing = load(home)
    if existing is not None:
        return existing
    home.mkdir(parents=True, exist_ok=True)
    creds = Credentials.generate()
    _write(home / FILENAME, creds)
    return creds
