"""The asyncpg pool, with connection errors translated into the engine's exception tree."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import orjson
import numpy as np

from engine.errors import ServiceUnavailable
from engine.secrets import mask_text


def _encode_json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # orjson: a webhook's raw JSON is encoded for every stored message and status
    await conn.set_type_codec("jsonb", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog")
    # pgvector's binary format, as numpy float32 arrays both ways (absent in maintenance databases)
    try:
        await conn.set_type_codec("vector", schema="public", encoder=_encode_vector, decoder=_decode_vector,
                                  format="binary")
    except ValueError:
        pass


def _encode_vector(value: object) -> bytes:
    array = np.asarray(value, dtype=">f4").reshape(-1)
    return len(array).to_bytes(2, "big") + b"\x00\x00" + array.tobytes()


def _decode_vector(data: bytes) -> np.ndarray:
    dim = int.from_bytes(data[:2], "big")
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


def describe_connect_error(url: str, exc: BaseException) -> str:
    reason = str(exc) or type(exc).__name__
    return f"cannot reach PostgreSQL at {mask_text(url)}: {mask_text(reason)}"


CONNECT_ERRORS = (OSError, socket.gaierror, asyncio.TimeoutError, asyncpg.PostgresError,
                  asyncpg.InterfaceError, ValueError)


async def connect(url: str, *, timeout: float = 5.0) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except CONNECT_ERRORS as exc:
        raise ServiceUnavailable(describe_connect_error(url, exc)) from None
    await _init_connection(conn)
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (a round trip per acquire): our code
    leaves no session state behind (no SET, no session advisory locks, listeners removed;
    a failed transaction is rolled back by its context manager)."""


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=timeout,
                                         init=_init_connection, command_timeout=60, reset=_keep_session)
    except CONNECT_ERRORS as exc:
        raise ServiceUnavailable(describe_connect_error(url, exc)) from None
    assert pool is not None
    return pool


def pool_stats(pool: asyncpg.Pool) -> dict[str, int]:
    size = pool.get_size()
    idle = pool.get_idle_size()
    return {"size": size, "idle": idle, "in_use": size - idle, "max": pool.get_max_size()}
