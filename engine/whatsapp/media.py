"""Inbound media, fetched in the background into a storage backend.

Graph ``GET /{media-id}`` gives a short-lived URL; the bytes are downloaded with the channel's
token, checked (size cap, allowed MIME types, the SHA-256 Meta announced) and stored under a
key derived from the tenant and the media id. Failures are retried with backoff; what can never
succeed (too large, a type we refuse, a media id Meta no longer knows) ends ``failed`` with its
reason, visible on the message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from engine.db.queries import sql
from engine.retry import RetryStrategy
from engine.whatsapp.channels import ChannelRoute
from engine.whatsapp.errors import MetaApiError, MediaError
from engine.whatsapp.graph import GraphClient
from engine.whatsapp.webhook import RouteCache

log = logging.getLogger("parlo.whatsapp.media")

# What WhatsApp itself accepts (audio, documents, images, stickers, video); anything else is refused.
ALLOWED_MIME = re.compile(
    r"^(image/(jpeg|png|webp)|audio/(aac|amr|mpeg|mp4|ogg)|video/(mp4|3gpp)|text/plain|application/(pdf|msword|"
    r"vnd\.ms-excel|vnd\.ms-powerpoint|vnd\.openxmlformats-officedocument\.[a-z.]+))(;.*)?$")


class Storage(Protocol):
    async def put(self, key: str, data: bytes, mime_type: str) -> None: ...
    async def get(self, key: str) -> bytes: ...


class LocalStorage:
    """Files under a directory; the key is a relative path of safe characters."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", key) or ".." in key or key.startswith("/"):
            raise ValueError(f"unsafe storage key {key!r}")
        return self.root / key

    async def put(self, key: str, data: bytes, mime_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()


class S3Storage:
    """Objects in an S3-compatible bucket (boto3; its blocking calls run in a worker thread)."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self._client = client
        self.bucket = bucket
        self.prefix = prefix

    async def put(self, key: str, data: bytes, mime_type: str) -> None:
        await asyncio.to_thread(self._client.put_object, Bucket=self.bucket, Key=self.prefix + key, Body=data,
                                ContentType=mime_type)

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            return bytes(self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read())

        return await asyncio.to_thread(read)


def storage_for(settings: Any) -> Storage:
    """The media storage the settings name: an S3-compatible bucket, else a local directory."""
    if settings.media_s3_bucket:
        return S3Storage(settings.media_s3_bucket, prefix=settings.media_s3_prefix,
                         endpoint_url=settings.media_s3_endpoint_url, region=settings.media_s3_region)
    return LocalStorage(settings.media_root)


def _sha256_matches(data: bytes, announced: str | None) -> bool:
    if not announced:
        return True
    digest = hashlib.sha256(data).digest()
    if re.fullmatch(r"[0-9a-fA-F]{64}", announced):
        return digest.hex() == announced.lower()
    try:
        return base64.b64decode(announced, validate=True) == digest
    except (binascii.Error, ValueError):
        return True  # a format we do not know is not evidence of corruption


def storage_key(tenant_id: uuid.UUID, media_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", media_id)[:128]
    return f"{tenant_id}/{safe[:2]}/{safe}"


class MediaFetcher:
    def __init__(self, pool: Any, routes: RouteCache, graph_for: Callable[[ChannelRoute], GraphClient],
                 storage: Storage, *, max_bytes: int = 100 * 1024 * 1024, retry: RetryStrategy | None = None,
                 batch_size: int = 8) -> None:
        self.pool = pool
        self.routes = routes
        self.graph_for = graph_for
        self.storage = storage
        self.max_bytes = max_bytes
        self.retry = retry or RetryStrategy(max_attempts=6, base_delay_s=2.0, max_delay_s=600.0)
        self.batch_size = batch_size
        self.fetched = 0
        self.failed = 0

    async def run_once(self) -> int:
        # claiming pushes run_after ahead, so a fetcher that dies mid-download is retried later
        rows = await self.pool.fetch(sql("inbound", "claim_media"), self.batch_size, 300.0)
        for row in rows:
            await self._fetch(row)
        return len(rows)

    async def _fetch(self, row: asyncpg.Record) -> None:
        routes = await self.routes.get()
        route = next((r for r in routes.values() if r.channel_id == row["channel_id"]), None)
        try:
            if route is None:
                raise MediaError("the channel of this message is no longer active",
                                 reason_en="the WhatsApp number was removed", reason_it="il numero WhatsApp è stato rimosso")
            graph = self.graph_for(route)
            info = await graph.get_media(row["media_id"])
            mime = info.mime_type
            if not ALLOWED_MIME.match(mime):
                raise MediaError(f"media type {mime!r} is not accepted", reason_en=f"media type {mime} not accepted",
                                 reason_it=f"tipo di file {mime} non accettato")
            if info.file_size is not None and info.file_size > self.max_bytes:
                raise MediaError(f"media of {info.file_size} bytes is over the {self.max_bytes}-byte limit",
                                 reason_en="file too large", reason_it="file troppo grande")
            data = await graph.download_media(info.url, self.max_bytes)
            if not _sha256_matches(data, row["sha256"] or info.sha256):
                raise MediaError("downloaded media does not match the SHA-256 Meta announced", retryable=True,
                                 reason_en="corrupted download", reason_it="download corrotto")
            key = storage_key(row["tenant_id"], row["media_id"])
            await self.storage.put(key, data, mime)
        except MetaApiError as exc:
            decision = self.retry.decide(row["attempts"], exc)
            if decision.retry:
                await self.pool.execute(sql("inbound", "media_retry"), row["id"], decision.delay_s, exc.reason_en[:500])
            else:
                self.failed += 1
                await self.pool.execute(sql("inbound", "media_failed"), row["id"], exc.reason_en[:500])
            return
        except ValueError as exc:  # an untrusted media URL, an unsafe key: never retried
            self.failed += 1
            await self.pool.execute(sql("inbound", "media_failed"), row["id"], str(exc)[:500])
            return
        await self.pool.execute(sql("inbound", "media_fetched"), row["id"], key, len(data), mime)
        self.fetched += 1
