"""The in-memory hybrid index of one tenant's knowledge: BM25 (bm25s, stemmed in the knowledge
base's language) beside exact cosine search over normalised vectors (numpy), fused by min-max
normalised weighted sum. Below ~100k chunks an exact scan is a few milliseconds and never misses a
neighbour, so there is no approximate index to tune.

Why both: BM25 finds exact names, codes and prices that an embedder blurs; the multilingual
embedder matches paraphrases and cross-language questions (an English question over an Italian
knowledge base) that BM25 cannot. Fusing min-max normalised scores beat reciprocal rank fusion on
the public sets (see ``bench/retrieval.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import Stemmer

logging.getLogger("bm25s").setLevel(logging.WARNING)

_STOPWORDS = {"italian": "it", "english": "en"}
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern


class Fusion(StrEnum):
    WEIGHTED = "weighted"  # min-max normalised scores, weighted sum
    RRF = "rrf"            # reciprocal rank fusion (for comparison)


@dataclass(frozen=True, slots=True)
class Hit:
    position: int  # row in the index (the caller maps it to its chunk)
    score: float
    bm25: float
    dense: float


class HybridIndex:
    def __init__(self, texts: Sequence[str], vectors: np.ndarray | None, *, language: str = "italian",
                 k1: float = 1.2, b: float = 0.75) -> None:
        if language not in _STOPWORDS:
            raise ValueError(f"language must be one of {sorted(_STOPWORDS)}")
        if vectors is not None and len(vectors) != len(texts):
            raise ValueError("one vector per text")
        import bm25s  # with scipy ~25 MiB a process: only those that build an index pay for it

        self.language = language
        self.size = len(texts)
        self._stemmer = Stemmer.Stemmer(language)
        self._stopwords = frozenset(bm25s.stopwords.STOPWORDS_ITALIAN if language == "italian"
                                    else bm25s.stopwords.STOPWORDS_EN)
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        self._lexical = False  # a corpus with no indexable word at all (only stopwords, digits…) has no BM25 side
        if texts:
            tokens = bm25s.tokenize(list(texts), stopwords=_STOPWORDS[language], stemmer=self._stemmer.stemWords,
                                    show_progress=False)
            if tokens.vocab:
                self._bm25.index(tokens, show_progress=False)
                self._lexical = True
        self._vectors = None if vectors is None else np.ascontiguousarray(vectors, dtype=np.float32)

    def query_terms(self, query: str) -> list[str]:
        """The query's terms as the index has them: bm25s's own word pattern, stopwords and
        stemmer, without its per-call tokenizer machinery (a third of a query's time)."""
        words = [w for w in _TOKEN.findall(query.lower()) if w not in self._stopwords]
        return self._stemmer.stemWords(words)

    def unknown(self, words: Sequence[str]) -> set[str]:
        """The words whose stem no indexed text contains (all of them for an index without words)."""
        if not self._lexical:
            return set(words)
        vocab = self._bm25.vocab_dict
        return {w for w, stem in zip(words, self._stemmer.stemWords([w.lower() for w in words])) if stem not in vocab}

    def bm25_scores(self, query: str) -> np.ndarray:
        if not self.size or not self._lexical:
            return np.zeros(self.size, dtype=np.float32)
        known = [t for t in self.query_terms(query) if t in self._bm25.vocab_dict]
        if not known:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float32)

    def dense_scores(self, query_vector: np.ndarray | None) -> np.ndarray:
        if self._vectors is None or query_vector is None or not self.size:
            return np.zeros(self.size, dtype=np.float32)
        return self._vectors @ np.asarray(query_vector, dtype=np.float32)

    def search(self, query: str, query_vector: np.ndarray | None = None, *, k: int = 10, alpha: float = 0.5,
               fusion: Fusion = Fusion.WEIGHTED, depth: int = 100) -> list[Hit]:
        """The ``k`` best rows. ``alpha`` weighs the dense score (0: BM25 only, 1: dense only);
        each score list is normalised over its own top ``depth`` candidates."""
        if not self.size or k <= 0:
            return []
        sparse = self.bm25_scores(query) if alpha < 1 else np.zeros(self.size, dtype=np.float32)
        dense = self.dense_scores(query_vector) if alpha > 0 else np.zeros(self.size, dtype=np.float32)
        depth = min(self.size, max(depth, k))
        top_sparse = _top(sparse, depth) if alpha < 1 else None
        top_dense = _top(dense, depth) if alpha > 0 else None
        if top_sparse is not None and top_dense is not None:
            candidates = np.union1d(top_sparse, top_dense)
        else:
            candidates = top_sparse if top_sparse is not None else top_dense  # type: ignore[assignment]
        if fusion is Fusion.RRF:
            fused = np.zeros(self.size, dtype=np.float64)
            for order, weight in ((top_sparse, 1 - alpha), (top_dense, alpha)):
                if order is not None and weight > 0:
                    fused[order] += weight / (60 + np.arange(1, len(order) + 1))
            score = fused[candidates]
        else:
            score = np.zeros(len(candidates))
            for scores, order, weight in ((sparse, top_sparse, 1 - alpha), (dense, top_dense, alpha)):
                if order is not None and weight > 0:
                    score += weight * _minmax(scores, candidates, scores[order])
        best = np.argsort(-score, kind="stable")[:k]
        return [Hit(int(candidates[i]), float(score[i]), float(sparse[candidates[i]]), float(dense[candidates[i]]))
                for i in best]


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    if n >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.argsort(-scores[part], kind="stable")]


def _minmax(scores: np.ndarray, rows: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Scores of ``rows`` scaled to 0..1 by the min and max of the top scores."""
    low, high = float(top.min()), float(top.max())
    if high - low < 1e-9:
        return np.zeros(len(rows))
    return np.clip((scores[rows] - low) / (high - low), 0.0, 1.0)
