"""Encryption at rest of channel secrets (app secret, access token) with Fernet."""

from __future__ import annotations

import hashlib

from cryptography.fernet import Fernet, InvalidToken

from engine.config import Settings
from engine.embedded import credentials
from engine.errors import ConfigError


class SecretBox:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken:
            raise ConfigError("a stored channel secret cannot be decrypted with the configured PARLO_SECRET_KEY "
                              "(was the key changed?)") from None

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"


def secret_box(settings: Settings) -> SecretBox:
    if settings.secret_key is not None:
        return SecretBox(settings.secret_key.get_secret_value())
    creds = credentials.load(settings.home)
    if creds is None:
        raise ConfigError(f"no encryption key: set PARLO_SECRET_KEY or run `parlo up` to create {settings.home}")
    return SecretBox(creds.secret_key)


def fingerprint(value: str) -> str:
    """A lookup key for a secret that must be matched but never stored in clear (the verify token)."""
    return hashlib.sha256(value.encode()).hexdigest()
