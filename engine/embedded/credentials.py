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

    @classmethod
    def generate(cls) -> Credentials:
        return cls(*(secrets.token_urlsafe(24) for _ in range(3)), ray_token=secrets.token_hex(32))


def load(home: Path) -> Credentials | None:
    path = home / FILENAME
    if not path.exists():
        return None
    try:
        return Credentials(**json.loads(path.read_text()))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path} is unreadable or damaged ({type(exc).__name__}); restore it or remove {home} to start over") from None


def load_or_create(home: Path) -> Credentials:
    existing = load(home)
    if existing is not None:
        return existing
    home.mkdir(parents=True, exist_ok=True)
    creds = Credentials.generate()
    path = home / FILENAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(creds), fh)
    return creds
