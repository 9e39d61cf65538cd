"""Chunking, the embedding cache and the hybrid index, without the embedding model (vectors are
made by hand so that what the dense side should find is known)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.ai.knowledge.chunking import approximate_tokens, chunk_text, contextual_text
from engine.ai.knowledge.embeddings import CachedEmbedder, EmbeddingCache
from engine.ai.knowledge.index import Fusion, HybridIndex

pytestmark = pytest.mark.unit


def test_chunks_respect_the_budget_cut_at_sentences_and_overlap_by_one() -> None:
    sentences = [f"Frase numero {i} con qualche parola in più." for i in range(60)]
    chunks = chunk_text(" ".join(sentences), budget=60)
    assert len(chunks) > 5
    assert all(c.tokens <= 60 for c in chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for before, after in zip(chunks, chunks[1:]):
        assert after.text.splitlines()[0] in before.text  # the overlap sentence
    joined = "\n".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)  # nothing lost


def test_a_sentence_longer_than_the_budget_is_cut_at_words_and_empty_text_gives_no_chunk() -> None:
    long = " ".join(f"parola{i}" for i in range(400))
    chunks = chunk_text(long, budget=50)
    assert len(chunks) >= 8 and all(c.tokens <= 50 for c in chunks)
    assert chunk_text("   \n\n  ") == []
    with pytest.raises(ValueError):
        chunk_text("x", budget=3)


def test_contextual_text_puts_the_title_first() -> None:
    assert contextual_text("  Orari \n di apertura ", "Apriamo alle 9.") == "Orari di apertura\nApriamo alle 9."
    assert contextual_text("", "solo testo") == "solo testo"
    assert approximate_tokens("abcd" * 10) == 10


class CountingEmbedder:
    name = "test/identity"
    dim = 4

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def passages(self, texts: list[str]) -> np.ndarray:
        self.embedded += texts
        return np.array([[len(t), 1, 0, 0] for t in texts], dtype=np.float32)

    def query(self, text: str) -> np.ndarray:
        return np.array([1, 0, 0, 0], dtype=np.float32)


def test_the_cache_embeds_each_text_once_across_instances(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    first = CachedEmbedder(inner, EmbeddingCache(tmp_path / "e.sqlite"), batch=2)
    a = first.passages(["uno", "due", "tre"])
    second = CachedEmbedder(inner, EmbeddingCache(tmp_path / "e.sqlite"))
    seen = []
    b = second.passages(["tre", "quattro", "uno"], progress=lambda done, total: seen.append((done, total)))
    assert inner.embedded == ["uno", "due", "tre", "quattro"]
    assert np.array_equal(b[0], a[2]) and np.array_equal(b[2], a[0])
    assert (second.hits, second.misses) == (2, 1) and seen[-1] == (3, 3)


DOCS = [
    "Il negozio di via Roma apre alle 9 e chiude alle 19, dal lunedì al sabato.",
    "La spedizione in Italia costa 4,90 euro ed è gratuita sopra i 50 euro.",
    "Il reso è gratuito entro 30 giorni dalla consegna, con il modulo online.",
    "Accettiamo pagamenti con carta, PayPal e bonifico bancario.",
]


def test_bm25_finds_the_words_and_stems_italian() -> None:
    index = HybridIndex(DOCS, None, language="italian")
    assert index.search("quanto costano le spedizioni", k=1, alpha=0)[0].position == 1
    assert index.search("pagamento con paypal", k=1, alpha=0)[0].position == 3
    assert index.search("zzzz qqqq", k=2, alpha=0)[0].bm25 == 0.0


def test_dense_side_finds_what_bm25_cannot_and_fusion_keeps_both() -> None:
    vectors = np.eye(4, dtype=np.float32)
    index = HybridIndex(DOCS, vectors, language="italian")
    # an English question shares no word with the Italian text: only its vector points at "reso"
    english = np.array([0, 0, 1, 0], dtype=np.float32)
    assert index.search("can I return it", english, k=1, alpha=1)[0].position == 2
    assert index.search("can I return it", english, k=1, alpha=0.5)[0].position == 2
    # a lexical question whose vector points elsewhere: the weighted sum still ranks both first two
    top = [h.position for h in index.search("orari negozio via Roma", english, k=2, alpha=0.5)]
    assert set(top) == {0, 2}
    rrf = index.search("orari negozio via Roma", english, k=2, alpha=0.5, fusion=Fusion.RRF)
    assert {h.position for h in rrf} == {0, 2}


def test_an_empty_index_and_bad_arguments() -> None:
    assert HybridIndex([], None).search("qualcosa") == []
    with pytest.raises(ValueError):
        HybridIndex(DOCS, np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        HybridIndex(DOCS, None, language="klingon")


def test_a_corpus_without_any_indexable_word_still_searches_by_vector() -> None:
    """Chunks of only stopwords or single letters give BM25 nothing to index (bm25s refuses an
    empty vocabulary): the index keeps its dense side instead of failing."""
    vectors = np.eye(2, 4, dtype=np.float32)
    index = HybridIndex(["x", "il la di"], vectors, language="italian")
    hits = index.search("x", np.array([0, 1, 0, 0], dtype=np.float32), k=1)
    assert hits[0].position == 1 and hits[0].bm25 == 0.0
    assert HybridIndex(["a"], None).search("a", k=1)[0].score == 0.0
