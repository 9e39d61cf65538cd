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
devo devi deve dobbiamo dovete devono dovrei vorrei voglio vuole volete fare faccio fai facciamo fanno essere avere
venire vengo viene veniamo venite andare vado vai va dare date dire dimmi dite sapere sai sapete so serve servono
dell all dall nell sull quell quest diventa diventare succede preciso esattamente ancora già solo tutto tutti tutte ecco allora quindi però invece
""".split())

DECLINE = {
    "it": "Mi dispiace, non ho trovato questa informazione nei nostri contenuti. Vuoi che ti metta in contatto con un collega?",
    "en": "I'm sorry, I couldn't find that in our information. Would you like me to put you in touch with a colleague?",
}
FRAME = {"it": "", "en": "From our information (in Italian): "}


def terms(text: str) -> set[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
    return {s for stemmer in _STEMMERS.values() for s in stemmer.stemWords(words)}


def _concepts_by_word(question: str) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for word in _WORD.findall(question.lower()):
        if word in _STOP or word in out:
            continue
        stems = frozenset(terms(" ".join([word, *italian_equivalents(word)])))
        if stems:
            out[word] = stems
    return out


def concepts(question: str) -> list[frozenset[str]]:
    """The question's content words, each as the stems of the word and of its Italian synonyms or
    equivalents: a word is matched when any of them is ("reso" by "restituire", "address" by
    "indirizzo"), and a word with many synonyms still counts once."""
    return list(_concepts_by_word(question).values())


def _share(wanted: Sequence[frozenset[str]], have: set[str]) -> float:
    return sum(1 for c in wanted if c & have) / len(wanted) if wanted else 0.0


_PRICE_Q = re.compile(r"\b(quanto\s+cost\w*|prezz\w*|cost[ao]n?o?|tariff\w*|gratis|gratuit\w*|che\s+cifra|importo|"
                      r"how\s+much|price\w*|costs?|free\s+of\s+charge|free)\b", re.I)
_SPAN_Q = re.compile(r"\b(quanti\s+giorni|entro\s+quanto|quanto\s+tempo|per\s+quanto|how\s+(many\s+days|long))\b", re.I)
_ADDRESS_Q = re.compile(r"\b(dove\s+(si\s+trova|siete|state|è\s+il\s+negozio)|indirizzo|address|"
                        r"where\s+(are\s+you|is\s+(the|your)\s+(shop|store))|located)\b", re.I)
_CONTACT_Q = re.compile(r"\b(telefono|telefonare|chiamar\w*|cellulare|e-?mail|phone|numero\s+whatsapp|"
                        r"whatsapp\s+number|call\s+you)\b", re.I)
_TIME_Q = re.compile(r"\b(orari\w*|a\s+che\s+ora|quando\s+apr\w*|siete\s+apert\w*|siete\s+chius\w*|"
                     r"chiudete|aprite|what\s+time|hours|opening|open|closed)\b", re.I)
_PRICE = re.compile(r"\d\s*(€|euro)|€\s*\d|\bgratuit\w*|\bgratis\b", re.I)
_CLOCK = re.compile(r"\b\d{1,2}[:.]\d{2}\b|\bchius[oiae]\b", re.I)
_SPAN = re.compile(r"\b\d+\s*(giorn\w*|mes\w*|or[ae]\b|settiman\w*|ann[oi]|days?|months?|hours?|weeks?|years?)", re.I)
_ADDRESS = re.compile(r"\b(via|viale|piazza|corso|vicolo|largo|strada|street|road|avenue)\b[^\n,;]{1,40}?\d+", re.I)
_CONTACT = re.compile(r"\+?\d[\d ]{6,}\d|\b[\w.+-]+@[\w-]+\.\w+")
_KIND_WORDS = terms("quanto costa costano prezzo prezzi costo tariffa cifra importo gratis gratuito gratuita free "
                    "how much price cost costs orari ora quando apre aprite aperti aperto chiusi chiuso chiudete "
                    "what time hours opening open closed giorni tempo entro long days dove trova indirizzo "
                    "where address located telefono numero phone number")


def kind_of(question: str) -> str | None:
    """What shape of fact the question asks for: a price, a span, an address, a phone number or
    email, a time of day (or "closed"), or none."""
    for kind, pattern in (("price", _PRICE_Q), ("span", _SPAN_Q), ("address", _ADDRESS_Q),
                          ("contact", _CONTACT_Q), ("time", _TIME_Q)):
        if pattern.search(question):
            return kind
    return None


# "posso fare il reso?" asks what the customer may do: the policy says it to the customer ("avete
# 30 giorni"), while a sentence in which the business acts ("vi mandiamo", "rimborsiamo") answers
# another question
_OWN_ACTION_Q = re.compile(r"\b(posso|possiamo|devo|dobbiamo|riesco|potrei|dovrei|can\s+i|do\s+i|must\s+i|"
                           r"should\s+i|have\s+i)\b", re.I)
_BUSINESS_ACTS = re.compile(r"\b\w{3,}iamo\b", re.I)
_CUSTOMER_ACTS = re.compile(r"\b(avete|potete|dovete|può|puoi|potrai|hai)\b", re.I)


def _business_acts(sentence: str) -> bool:
    return bool(_BUSINESS_ACTS.search(sentence)) and not _CUSTOMER_ACTS.search(sentence)


_SHAPE = {"price": _PRICE, "time": _CLOCK, "span": _SPAN, "address": _ADDRESS, "contact": _CONTACT}


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
    keep_same_passage: float = 0.7  # … or this share when they come from the best sentence's passage
    keep_shaped: float = 0.7      # the best sentence holding the asked kind of fact, if none does
    min_price_cover: float = 0.5  # a price sentence must be about at least this share of what was asked
    shape_bonus: float = 0.5      # a sentence holding the kind of fact asked for (a price, an hour…)
    other_actor: float = 0.5      # … less this when the question asks what the customer may do and the
                                  # sentence says what the business does


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
    asked = concepts(question)
    kind = kind_of(question)
    shape = _SHAPE.get(kind or "")
    own_action = bool(_OWN_ACTION_Q.search(question))
    candidates: list[tuple[str, Passage, float]] = []
    for rank, passage in enumerate(passages):
        context = terms(passage.text.splitlines()[0]) if passage.text else set()
        for unit in _units(passage):
            overlap = _share(asked, terms(unit) | context)
            bonus = policy.shape_bonus if shape is not None and shape.search(unit) else 0.0
            if own_action and _business_acts(unit):
                bonus -= policy.other_actor
            candidates.append((unit, passage, overlap - 0.02 * rank, bonus))
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
    # the shape bonus orders the sentences; relevance (the decline test) is measured without it
    scored = sorted(((0.5 * (c[2] + c[3]) + 0.5 * float(d), 0.5 * c[2] + 0.5 * float(d), c[0], c[1])
                     for c, d in zip(candidates, dense)), key=lambda x: -x[0])
    best, first = scored[0][0], scored[0][3]
    # further sentences: from the best sentence's own passage (its context) when they come close,
    # from another passage only when they are nearly as good
    own = [x for x in scored if x[3] is first and x[0] >= policy.keep_same_passage * best]
    others = [x for x in scored if x[3] is not first and x[0] >= policy.keep_within * best]
    picked = (own + others)[:policy.max_sentences]
    if shape is not None and not any(shape.search(x[2]) for x in picked):
        # an answer to "how much" must hold a price: the best sentence that does, if it is close
        shaped = next((x for x in scored if shape.search(x[2])), None)
        if shaped is not None and shaped[0] >= policy.keep_shaped * best:
            picked = [shaped, *picked[:policy.max_sentences - 1]]
    chosen = [(text, passage) for _, _, text, passage in picked]
    relevance = max(plain for _, plain, _, _ in picked)
    # answer in document order within a passage, passages in rank order
    order = {id(p): i for i, p in enumerate(passages)}
    chosen.sort(key=lambda tp: (order.get(id(tp[1]), 0), _units(tp[1]).index(tp[0]) if tp[0] in _units(tp[1]) else 0))
    return Selection(chosen, relevance)


def topic_words(question: str) -> dict[str, tuple[str, ...]]:
    """The words naming what the question is about (not its kind of fact, not grammar), each
    with its Italian synonyms: the knowledge base must know one of them to answer."""
    out: dict[str, tuple[str, ...]] = {}
    for word in _WORD.findall(question.lower()):
        if word in _STOP or word.isdigit() or len(word) < 4 or terms(word) & _KIND_WORDS:
            continue
        out[word] = (word, *(w for w in italian_equivalents(word) if w != word))
    return out


_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w-]*", re.UNICODE)


def proper_names(question: str) -> list[str]:
    """The words of an English question written with a capital inside a sentence (a city, a
    brand, a service: "Milan", "Ray-Ban", "Apple Pay"), lowercased, without those the glossary
    knows (days, "WhatsApp") or that are grammar ("I")."""
    out: dict[str, None] = {}
    for match in _NAME.finditer(question.strip()):
        for word in _WORD.findall(match.group(0).lower()):
            if word not in _STOP and not italian_equivalents(word):
                out[word] = None
    return list(out)


def untranslated(words: Sequence[str], passages: Sequence[Passage], embedder: Embedder,
                 min_cosine: float = 0.88) -> list[str]:
    """The ``words`` that no word of the passages translates, by the multilingual embedder's word
    vectors: a translation scores ≥ 0.88 ("Switzerland"/"svizzera" 0.91, "Italy"/"italia" 0.93),
    a neighbour does not ("Rome"/"italia" 0.86)."""
    vocabulary = sorted({w for p in passages for w in _WORD.findall(p.text.lower()) if w not in _STOP})
    if not words or not vocabulary:
        return list(words)
    closest = (embedder.passages(vocabulary) @ np.stack([embedder.query(w) for w in words]).T).max(axis=0)
    return [w for w, c in zip(words, closest) if c < min_cosine]


def missing_topics(topics: dict[str, tuple[str, ...]], unknown: set[str]) -> list[str]:
    """The topic words none of whose forms the knowledge base uses."""
    return [word for word, forms in topics.items() if all(f in unknown for f in forms)]


def object_concepts(question: str) -> list[frozenset[str]]:
    """What the question is about: its concepts without those that only say what kind of fact
    it wants ("quanto costa", "how much")."""
    return [c for c in concepts(question) if not c & _KIND_WORDS]


def _covers(sentence: str, passage: Passage, wanted: Sequence[frozenset[str]]) -> float:
    return _share(wanted, terms(sentence) | terms(passage.text.splitlines()[0])) if wanted else 1.0


def should_decline(question: str, selection: Selection, passages: Sequence[Passage], missing: Sequence[str],
                   language: str, policy: OfflinePolicy = OfflinePolicy()) -> str | None:
    """Why the responder must decline (None: it may answer). ``missing``: the question's topic
    words the knowledge base never uses (a city, a brand, a product it does not sell)."""
    if not selection.sentences:
        return "nothing retrieved"
    if missing:
        return f"the knowledge base never mentions {', '.join(missing)}"
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
        wanted = object_concepts(question)
        if language == "en":  # only the words the glossary can put in Italian can be looked for
            wanted = [c for word, c in _concepts_by_word(question).items()
                      if not c & _KIND_WORDS and italian_equivalents(word)]
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
