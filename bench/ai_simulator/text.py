"""Pure helpers shared by the three APIs: token counts, streaming chunks, deterministic vectors.

Nothing here pretends to be a tokenizer or a model. Token counts are ``ceil(chars / 4)`` per block
(additive, so a cached prefix and the rest add up to the total); chunks are words with their
trailing whitespace; vectors are a signed bag of hashed words, L2-normalised, so texts that share
words are close and every answer is the same on every run.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"\w+", re.UNICODE)
_CHUNK = re.compile(r"\s*\S+\s*|\s+", re.UNICODE)


def tokens(text: str) -> int:
    """Tokens of one block: ``ceil(len / 4)``, at least 1 for non-empty text."""
    return (len(text) + 3) // 4


def chunks(text: str) -> list[str]:
    """The text split into stream deltas (a word and the whitespace around it); joins back exactly."""
    return _CHUNK.findall(text)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _bucket(word: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


def vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text``: hashed words, signed, normalised."""
    out = [0.0] * dim
    terms = words(text) or [f"\x00{text}"]
    for word in terms:
        index, sign = _bucket(word, dim)
        out[index] += sign
    norm = math.sqrt(sum(v * v for v in out))
    if norm == 0.0:  # every word cancelled out: fall back to the text's own bucket
        index, sign = _bucket(f"\x00{text}", dim)
        out[index] = sign
        norm = 1.0
    return [v / norm for v in out]


def float32_base64(values: Sequence[float]) -> str:
    """What OpenAI and Voyage send for ``encoding_format: base64``: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def relevance(query: str, document: str) -> float:
    """A reranker's score in [0, 1]: the share of the query's distinct words found in the document."""
    asked = set(words(query))
    if not asked:
        return 0.0
    return len(asked & set(words(document))) / len(asked)


def total_tokens(texts: Iterable[str]) -> int:
    return sum(tokens(t) for t in texts)
