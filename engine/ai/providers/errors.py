"""Turning a provider's failure into one readable ``ProviderError``, decided once.

``retryable`` follows the HTTP status: 408, 409, 429, 5xx and Anthropic's 529 (overloaded) may
pass if tried again or elsewhere; 400, 401, 403, 404, 413, 422 fail the same way everywhere.
Messages never carry a key: the caller's own secrets are cut out, and so is anything shaped like
one (``sk-…``, ``sk-ant-…``, ``pa-…``), because some APIs echo part of a refused key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from engine.ai.providers.base import ProviderError

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# Error types that mean "try again" whatever the status they arrive with (a mid-stream SSE error
# event comes inside a 200 response).
RETRYABLE_KINDS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error", "server_error",
                             "rate_limit_exceeded", "service_unavailable"})
_KEY_SHAPED = re.compile(r"\b(?:sk|pa|al|key)-[A-Za-z0-9_\-*]{6,}")
_MAX_DETAIL = 300


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_SHAPED.sub("***", text)


def is_retryable(status: int | None, kind: str | None = None) -> bool:
    if kind in RETRYABLE_KINDS:
        return True
    if status is None:
        return False
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``retry-after`` header given in seconds (HTTP dates are ignored)."""
    if not headers:
        return None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def status_error(provider: str, status: int | None, kind: str | None, detail: str | None, *,
                 secrets: Iterable[str | None] = (), retry_after_s: float | None = None) -> ProviderError:
    """``anthropic: HTTP 529 overloaded_error: Overloaded`` with the retry decision taken here."""
    parts = [f"HTTP {status}" if status else "stream error"]
    if kind:
        parts.append(kind)
    if detail:
        detail = " ".join(redact(detail, secrets).split())
        parts.append(detail[:_MAX_DETAIL] + ("…" if len(detail) > _MAX_DETAIL else ""))
    return ProviderError(f"{provider}: " + ": ".join(parts), provider=provider, status=status,
                         retryable=is_retryable(status, kind), retry_after_s=retry_after_s)


def transport_error(provider: str, what: str) -> ProviderError:
    """Timeouts, refused or dropped connections: always worth another try."""
    return ProviderError(f"{provider}: {what}", provider=provider, retryable=True)
