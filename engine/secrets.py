"""Keeping secrets out of what people and logs see."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "****"

_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authorization|credential)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``postgresql://parlo:s3cret@h/db`` → ``postgresql://parlo:****@h/db``; URLs without a password are unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def mask_text(text: str) -> str:
    """Mask passwords embedded in any URLs found inside free text (error messages, log lines)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEYS.search(key))


def redact(value: object, key: str = "") -> object:
    """Recursively mask values whose key names a secret, and passwords inside URLs."""
    if key and is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
