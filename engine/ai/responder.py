"""The offline responder: the default when no model is configured. It answers from the knowledge
base by quoting its best sentences, with their sources, and declines when nothing relevant enough
was found — it can never invent a price, because every word of an answer's body is the business's
own text. Its answers are in the knowledge base's language (usually Italian); only the few framing
words follow the customer's language, and the final event says so (``translated: False``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
import Stemmer

from engine.ai.knowledge.embeddings import Embedder
from engine.ai.knowledge.indexes import Passage
from engine.ai.language import italian_equivalents
from engine.ai.providers.base import TextDelta, Usage

_WORD = re.compile(r"\w\w+", re.UNICODE)
_STEMMERS = {"it": Stemmer.Stemmer("italian"), "en": Stemmer.Stemmer("english")}
_STOP = set("""il lo la i gli le un uno una di a da in con su per tra fra e o ma se che chi cosa come quando dove
quanto quanti quanta quante è sono ho hai ha avete hanno siete sei del dello della dei degli delle al allo alla ai
agli alle dal dallo dalla dai dagli dalle nel nello nella nei negli nelle sul sullo sulla sui sugli sulle mi ti ci vi
si non anche più molto posso potete può fate fa ne vostro vostra vostri vostre mio mia io voi noi lei lui qual quale
the a an of to in on at for with and or but if is are was be do does did can could would will you your we our us
i me my it its this that these those what which who when where how much many there any some have has from by about
""".split())

DECLINE = {
    "it": "Mi dispiace, non ho trovato questa informazione nei nostri contenuti. Vuoi che ti metta in contatto con un collega?",
    "en": "I'm sorry, I couldn't find that in our information. Would you like me to put you in touch with a colleague?",
}
FRAME = {"it": "", "en": "From our information (in Italian): "}


def terms(text: str) -> set[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
    return {s for stemmer in _STEMMERS.values() for s in stemmer.stemWords(words)}


_PRICE_Q = re.compile(r"\b(quanto\s+cost\w*|prezz\w*|cost[ao]n?o?|tariff\w*|gratis|gratuit\w*|how\s+much|price\w*|"
                      r"costs?|free\s+of\s+charge)\b", re.I)
_TIME_Q = re.compile(r"\b(orari\w*|a\s+che\s+ora|quando\s+apr\w*|what\s+time|hours|opening|open)\b", re.I)
_SPAN_Q = re.compile(r"\b(quanti\s+giorni|entro\s+quanto|quanto\s+tempo|per\s+quanto|how\s+(many\s+days|long))\b", re.I)
_PRICE = re.compile(r"\d\s*(€|euro)|€\s*\d", re.I)
_CLOCK = re.compile(r"\b\d{1,2}[:.]\d{2}\b")
_SPAN = re.compile(r"\b\d+\s*(giorn\w*|mes\w*|or[ae]\b|settiman\w*|ann[oi]|days?|months?|hours?|weeks?|years?)", re.I)
_KIND_WORDS = terms("quanto costa costano prezzo prezzi costo tariffa how much price cost costs orari ora "
                    "quando apre aprite what time hours opening open giorni tempo entro long days")


def kind_of(question: str) -> str | None:
    """What shape of fact the question asks for: a price, a time of day, a span, or none."""
    if _PRICE_Q.search(question):
        return "price"
    if _SPAN_Q.search(question):
        return "span"
    if _TIME_Q.search(question):
        return "time"
    return None


_SHAPE = {"price": _PRICE, "time": _CLOCK, "span": _SPAN}


@dataclass(frozen=True, slots=True)
class Selection:
    sentences: list[tuple[str, Passage]]  # (sentence, the passage it comes from), in answer order
    relevance: float                       # the best sentence's score, 0..1

    @property
    def passages(self) -> list[Passage]:
        seen: dict[int, Passage] = {}
        for _, passage in self.sentences:
            seen.setdefault(passage.chunk_id, passage)
        return list(seen.values())


@dataclass(frozen=True, slots=True)
class OfflinePolicy:
    min_relevance: float = 0.45   # below: decline (calibrated on tests/data/kb_questions.jsonl)
    min_dense: float = 0.80       # the best passage's cosine must reach this too
    max_sentences: int = 3
    keep_within: float = 0.85     # further sentences must score ≥ this share of the best
    min_price_cover: float = 0.5  # a price sentence must be about at least this share of what was asked


def _units(passage: Passage) -> list[str]:
    lines = passage.text.splitlines()
    body = lines[1:] if len(lines) > 1 else lines  # the first line is the title/section context
    return [line.strip() for line in body
            if line.strip() and not re.fullmatch(r"\|?\s*[\w ]{1,20}\s*\|\s*[\w ]{1,20}\s*\|?", line.strip())]


def select(question: str, question_vector: np.ndarray | None, passages: Sequence[Passage], embedder: Embedder | None,
           policy: OfflinePolicy = OfflinePolicy()) -> Selection:
    """The sentences that best answer ``question`` among the retrieved passages. A sentence is
    scored by the share of the question's content words it (or its section title) contains, and
    by its embedding's cosine with the question (which also works across languages)."""
    asked = terms(question) | terms(" ".join(italian_equivalents(question)))
    kind = kind_of(question)
    shape = _SHAPE.get(kind or "")
    candidates: list[tuple[str, Passage, float]] = []
    for rank, passage in enumerate(passages):
        context = terms(passage.text.splitlines()[0]) if passage.text else set()
        for unit in _units(passage):
            overlap = len(asked & (terms(unit) | context)) / len(asked) if asked else 0.0
            if shape is not None and shape.search(unit):
                overlap += 0.25
            candidates.append((unit, passage, overlap - 0.02 * rank))
    if not candidates:
        return Selection([], 0.0)
    if embedder is not None and question_vector is not None:
        # a list item ("Prezzo: 35 €") means little without its section: embed it with its title line
        vectors = embedder.passages([f"{c[1].text.splitlines()[0]}\n{_clean(c[0])}" for c in candidates])
        cosine = vectors @ question_vector
        # e5 cosines live in a narrow band (~0.7–0.9): stretch it to 0..1
        dense = np.clip((cosine - 0.75) / 0.15, 0.0, 1.0)
    else:
        dense = np.zeros(len(candidates))
    scored = sorted(((0.5 * c[2] + 0.5 * float(d), c[0], c[1]) for c, d in zip(candidates, dense)),
                    key=lambda x: -x[0])
    best = scored[0][0]
    chosen = [(text, passage) for score, text, passage in scored[:policy.max_sentences]
              if score >= policy.keep_within * best]
    # answer in document order within a passage, passages in rank order
    order = {id(p): i for i, p in enumerate(passages)}
    chosen.sort(key=lambda tp: (order.get(id(tp[1]), 0), _units(tp[1]).index(tp[0]) if tp[0] in _units(tp[1]) else 0))
    return Selection(chosen, best)


def object_terms(question: str) -> set[str]:
    """The question's content terms without the words that only say what kind of fact it wants."""
    return terms(question) - _KIND_WORDS


def unknown_terms(question: str, vocabulary: set[str]) -> set[str]:
    """Content terms of a question that the knowledge base never uses, not even in another form
    (a shared five-letter prefix counts as the same word: parcheggiare ~ parcheggio)."""
    prefixes = {t[:5] for t in vocabulary if len(t) >= 5}
    return {t for t in object_terms(question)
            if t not in vocabulary and not t.isdigit() and (len(t) < 5 or t[:5] not in prefixes)}


def _covers(sentence: str, passage: Passage, wanted: set[str]) -> float:
    have = terms(sentence) | terms(passage.text.splitlines()[0])
    return len(wanted & have) / len(wanted) if wanted else 1.0


def should_decline(question: str, selection: Selection, passages: Sequence[Passage], vocabulary: set[str],
                   language: str, policy: OfflinePolicy = OfflinePolicy()) -> str | None:
    """Why the responder must decline (None: it may answer)."""
    if not selection.sentences:
        return "nothing retrieved"
    top_dense = max((p.dense for p in passages), default=0.0)
    if top_dense < policy.min_dense:
        return f"best passage too far (cosine {top_dense:.3f})"
    if selection.relevance < policy.min_relevance:
        return f"best sentence too weak ({selection.relevance:.2f})"
    kind = kind_of(question)
    if kind is not None and not any(_SHAPE[kind].search(text) for text, _ in selection.sentences):
        return f"no {kind} in the best sentences"
    if kind == "price":
        # the sentence with the price must be about what was asked, not a neighbour's price
        wanted = object_terms(question) | terms(" ".join(italian_equivalents(question)))
        wanted -= _KIND_WORDS
        if language == "en":
            wanted = terms(" ".join(italian_equivalents(question))) - _KIND_WORDS
        best = max((_covers(t, p, wanted) for t, p in selection.sentences if _PRICE.search(t)), default=0.0)
        if best < policy.min_price_cover:
            return f"the prices found are for something else ({best:.2f} of the question's words)"
    return None


def compose(selection: Selection, language: str) -> str:
    body = "\n".join(_with_section(_clean(text), passage) for text, passage in selection.sentences)
    return f"{FRAME.get(language, '')}{body}"


def _with_section(line: str, passage: Passage) -> str:
    """A short list item or table row ("Prezzo: 35 €") says little without its section: name it
    ("Esame della vista — Prezzo: 35 €"), unless the line already does."""
    first = passage.text.splitlines()[0] if passage.text else ""
    section = first.rsplit(" — ", 1)[-1].strip() if " — " in first else ""
    if not section or len(line) > 60 or terms(section) & terms(line):
        return line
    return f"{section} — {line}"


def _clean(unit: str) -> str:
    """A list item or table row as a readable line (no Markdown pipes or bullets)."""
    unit = re.sub(r"^\s*([-*+•]|\d+[.)])\s+", "", unit)
    if unit.startswith("|"):
        unit = ": ".join(cell.strip() for cell in unit.strip("|").split("|") if cell.strip())
    return unit.replace("**", "")


async def stream_text(text: str, *, model: str = "offline") -> AsyncIterator[TextDelta | Usage]:
    """A composed answer as deltas (word by word, like a model's), then a zero-cost Usage."""
    words = re.findall(r"\S+\s*", text)
    for word in words:
        yield TextDelta(word)
    yield Usage(model=model, stop_reason="end_turn")
