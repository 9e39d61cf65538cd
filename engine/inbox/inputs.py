"""Turning what a client sent into typed values, with answers a person can read.

The REST layer hands raw bytes and query strings to these helpers instead of letting the web
framework validate them, so that every refusal has the API's one error shape (``InvalidInput`` →
422, ``TooLarge`` → 413) and ids that cannot exist read as "not found".
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterable, Mapping
from datetime import datetime
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from engine.errors import InvalidInput, NotFound

MAX_JSON_BODY = 128 * 1024  # a 10,000-character note fully \u-escaped is ~60 KiB
Model = TypeVar("Model", bound=BaseModel)


class TooLarge(InvalidInput):
    """A body or an upload over its limit (HTTP 413)."""

    code = "TooLarge"


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"] if p not in ("body", "query")) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


async def read_bounded(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """A streamed request body, refused (TooLarge) as soon as it passes ``limit`` bytes: what a
    client declares is not trusted, and the rest of an oversized body is never read."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the request body is larger than {limit} bytes")
    return bytes(body)


def parse_body(model: type[Model], raw: bytes, *, max_bytes: int = MAX_JSON_BODY) -> Model:
    if len(raw) > max_bytes:
        raise TooLarge(f"the request body is larger than {max_bytes} bytes")
    if not raw.strip():
        raise InvalidInput("a JSON body is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_describe(exc)) from None


def parse_query(model: type[Model], params: Mapping[str, str]) -> Model:
    try:
        return model.model_validate({k: v for k, v in params.items() if v != ""})
    except ValidationError as exc:
        raise InvalidInput(_describe(exc)) from None


def parse_id(value: str, what: str = "record") -> uuid.UUID:
    """A UUID from a path; something that is not one names nothing, so it is not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {what} {value[:40]!r}") from None


def parse_int_id(value: str, what: str = "record") -> int:
    if not value.isdigit() or len(value) > 18:
        raise NotFound(f"no {what} {value[:40]!r}")
    return int(value)


def encode_cursor(at: datetime, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([at.isoformat(), key])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(timestamp, key) of a cursor made by :func:`encode_cursor`; anything else is refused."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, key = orjson.loads(raw)
        stamp = datetime.fromisoformat(at)
        if stamp.tzinfo is None or not isinstance(key, str):
            raise ValueError
        return stamp, key
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidInput("the cursor is not one this API gave out") from None
