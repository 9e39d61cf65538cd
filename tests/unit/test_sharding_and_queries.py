from __future__ import annotations

import uuid
from collections import Counter

import pytest

from engine.db.queries import parse_blocks, queries
from engine.sharding import BUCKETS, bucket_of, shard_of

pytestmark = pytest.mark.unit


def test_bucket_is_stable_and_in_range() -> None:
    cid = uuid.UUID("6f1c1a52-3a3f-4f0e-9d1c-2b7e8f2a9b10")
    assert bucket_of(cid) == bucket_of(str(cid)) == bucket_of(str(cid).upper())
    assert 0 <= bucket_of(cid) < BUCKETS


def test_shards_are_balanced() -> None:
    counts = Counter(shard_of(uuid.uuid4(), 8) for _ in range(8000))
    assert set(counts) == set(range(8))
    assert min(counts.values()) > 800  # 1000 expected each


def test_shard_count_is_validated() -> None:
    with pytest.raises(ValueError):
        shard_of(uuid.uuid4(), 0)
    with pytest.raises(ValueError):
        bucket_of("not-a-uuid")


def test_named_sql_blocks() -> None:
    blocks = parse_blocks("-- name: a\nSELECT 1;\n\n-- name: b_2\nSELECT 2;\n")
    assert blocks == {"a": "SELECT 1;", "b_2": "SELECT 2;"}
    with pytest.raises(ValueError, match="twice"):
        parse_blocks("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    assert "create_tenant" in queries("tenants")
