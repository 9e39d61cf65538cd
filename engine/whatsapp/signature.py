"""``X-Hub-Signature-256``: HMAC-SHA256 of the raw request body with the Meta app secret.

Checked over the exact bytes received, before any JSON parsing, with a constant-time compare.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

PREFIX = "sha256="


def sign(body: bytes, app_secret: str) -> str:
    return PREFIX + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def matching_secret(body: bytes, header: str | None, app_secrets: Iterable[str]) -> str | None:
    """The app secret whose signature matches the header, or None (missing, malformed or wrong)."""
    if not header or not header.startswith(PREFIX) or len(header) != len(PREFIX) + 64:
        return None
    claimed = header[len(PREFIX):].lower().encode()
    found = None
    for secret in app_secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        # compare against every secret (no early exit) so timing says nothing about which matched
        if hmac.compare_digest(expected, claimed):
            found = secret
    return found
