"""Stable assignment of conversations to ConversationShard actors.

A conversation's bucket (0..1023) is a hash of its id that PostgreSQL computes too (the generated
column ``conversations.bucket``), so a shard can load exactly its conversations with one indexed
query. Shard ``i`` of ``S`` owns the buckets with ``bucket % S == i``; the bucket never changes,
so with a fixed ``S`` a conversation always lands on the same shard.
"""

from __future__ import annotations

import hashlib
import uuid

BUCKETS = 1024


def bucket_of(conversation_id: uuid.UUID | str) -> int:
    text = str(uuid.UUID(str(conversation_id)))
    return int(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:4], 16) % BUCKETS


def shard_of(conversation_id: uuid.UUID | str, shard_count: int) -> int:
    if not 1 <= shard_count <= BUCKETS:
        raise ValueError(f"shard_count must be between 1 and {BUCKETS}, got {shard_count}")
    return bucket_of(conversation_id) % shard_count


def shard_name(index: int) -> str:
    return f"conversation-shard-{index}"
